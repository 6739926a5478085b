using GptSharp.Alignment;
using GptSharp.Evaluation;
using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Tokenization;
using GptSharp.Training;

namespace GptSharp.Speedrun;

/// <summary>What the reward stage measured: held-out accuracy on comparisons from the same labeler, and agreement with
/// the labeler (the graded verse check) on fresh answers of the SFT model (what RL will feel).</summary>
public sealed record RewardStageReport(RewardReport Training, int GoldPairs, double GoldAgreement);

/// <summary>
/// The speedrun's alignment stages after SFT, as the plan lays them out: on-policy feedback → reward model → PPO;
/// GRPO against the graded verse check; DPO on the same comparisons; tool use (SFT on arithmetic with the calculator,
/// then GRPO on it); the verse score (every rule, strict, the form share) and arithmetic accuracy of every model. The <c>speedrun</c>
/// command and the RL seeds bench run these same functions.
/// </summary>
public static class AlignmentStages
{
    /// <summary>The task the main job's RL is judged on: regulated verse (see <see cref="Verse"/>).</summary>
    public static RlTask Task() => RlTasks.Verse();

    /// <summary>InstructGPT's loop: the SFT model answers training prompts K times; the graded verse check ranks them.</summary>
    public static FeedbackReport Feedback(SpeedrunPlan plan, Action<int>? onPrompts = null)
    {
        var form = Task();
        var (policy, state) = Checkpoint.LoadModel(plan.Sft);
        using var _ = policy;
        var options = plan.FeedbackSettings;
        var prompts = Alignment.Feedback.ChoosePrompts(form.Prompts, plan.Options.FeedbackPrompts, options.Seed);
        return Alignment.Feedback.Collect(policy, GptTokenizer.Load(state.Tokenizer), prompts, form.Labeler, options, plan.FeedbackPairs,
            Path.GetFullPath(plan.Sft), onPrompts);
    }

    /// <summary>A reward model on the feedback comparisons (5% of titles held out), then its agreement with the program.</summary>
    public static RewardStageReport Reward(SpeedrunPlan plan, string device, Action<int>? onStart = null, Action<StepMetrics>? onStep = null)
    {
        var training = plan.RewardTraining;
        var (train, heldOut) = ChatData.SplitByGroup(ChatData.ReadPreferences(plan.FeedbackPairs).ToList(), training.Seed, "reward");
        var report = RewardRun.Execute(plan.Sft, train, heldOut, training, Run(plan.Reward, device, onStep), onStart);
        var (policy, state) = Checkpoint.LoadModel(plan.Sft);
        using var _ = policy;
        using var rewardModel = RewardModel.Load(plan.Reward);
        rewardModel.eval();
        var tokenizer = GptTokenizer.Load(state.Tokenizer);
        var (pairs, agreement) = Alignment.Feedback.Agreement(policy, tokenizer, FormScore.SelectionPrompts(RlTasks.SelectionPrompts),
            Rewards.FromModel(rewardModel, tokenizer), Task().Labeler);
        return new RewardStageReport(report, pairs, agreement);
    }

    /// <summary>RLHF against the learned reward model; the strict verse check is logged beside it as the gold, and its
    /// held-out share picks the policy kept.</summary>
    public static PpoReport Ppo(SpeedrunPlan plan, string device, Action<StepMetrics>? onStep = null)
    {
        var task = Task();
        var tokenizer = GptTokenizer.Load(Checkpoint.ReadState(plan.Sft).Tokenizer);
        return PpoRun.Execute(plan.Sft, plan.Reward, task.Prompts, plan.PpoSettings, plan.PpoTraining, Run(plan.Ppo, device, onStep),
            gold: task.Gold, selection: new PolicySelection(p => task.HeldOutGold!(p, tokenizer)));
    }

    /// <summary>RL with a verifiable reward: the graded verse check itself, G answers per prompt, no critic, no reward model.</summary>
    public static GrpoReport Grpo(SpeedrunPlan plan, string device, Action<StepMetrics>? onStep = null) =>
        GrpoOnTask(Task(), plan.Sft, plan.GrpoSettings, plan.GrpoTraining, plan.Grpo, device, onStep, plan.GrpoSelectEvery);

    /// <summary>The SFT model taught to call the calculator: arithmetic conversations only, with and without the tool.</summary>
    public static SftReport ToolSft(SpeedrunPlan plan, string device, Action<StepMetrics>? onStep = null)
    {
        var (train, heldOut) = BuiltInDatasets.ArithmeticChats();
        return SftRun.Execute(plan.Sft, train, heldOut, plan.ToolSftTraining, Run(plan.ToolSft, device, onStep));
    }

    /// <summary>RL with tools: multi-digit arithmetic from the tool-SFT model, the calculator run inside every rollout,
    /// 1 for the exact result.</summary>
    public static GrpoReport ToolGrpo(SpeedrunPlan plan, string device, Action<StepMetrics>? onStep = null) =>
        GrpoOnTask(RlTasks.Arithmetic(), plan.ToolSft, plan.ToolGrpoSettings, plan.ToolGrpoTraining, plan.ToolGrpo, device, onStep);

    /// <summary>GRPO from <paramref name="from"/> against a built-in task's program, keeping the best policy by its held-out gold.</summary>
    static GrpoReport GrpoOnTask(RlTask task, string from, GrpoConfig settings, TrainingConfig training, string folder, string device, Action<StepMetrics>? onStep,
        int? selectEvery = null)
    {
        var tokenizer = GptTokenizer.Load(Checkpoint.ReadState(from).Tokenizer);
        return GrpoRun.Execute(from, task.Prompts, task.Program, settings, training, Run(folder, device, onStep),
            selection: Selection(task, tokenizer, selectEvery), rewardDescription: task.Name, environment: task.Environment);
    }

    static PolicySelection Selection(RlTask task, GptTokenizer tokenizer, int? everyRollouts)
    {
        var selection = new PolicySelection(p => task.HeldOutGold!(p, tokenizer));
        return everyRollouts is int every ? selection with { EveryRollouts = every } : selection;
    }

    /// <summary>DPO on the reward model's comparisons (the same split): no reward model, no sampling while training.</summary>
    public static DpoReport Dpo(SpeedrunPlan plan, string device, Action<int>? onStart = null, Action<StepMetrics>? onStep = null)
    {
        var training = plan.DpoTraining;
        var (train, heldOut) = ChatData.SplitByGroup(ChatData.ReadPreferences(plan.FeedbackPairs).ToList(), training.Seed, "dpo");
        return DpoRun.Execute(plan.Sft, train, heldOut, training, Run(plan.Dpo, device, onStep), plan.DpoBeta, onStart);
    }

    /// <summary>A stage's run in <paramref name="folder"/>: a checkpoint left there by a killed stage is continued.</summary>
    public static RunOptions Run(string folder, string device, Action<StepMetrics>? onStep = null) =>
        new(folder) { Resume = Checkpoint.Find(folder) is not null, Device = device, OnStep = onStep };

    /// <summary>The models the score stage compares, with the best-of-N baseline (N from the plan) after SFT.</summary>
    public static IReadOnlyList<(string Name, string Folder, int BestOf)> ScoredModels(SpeedrunPlan plan) =>
    [
        ("base", plan.Pretrain, 1), ("sft", plan.Sft, 1), ($"sft best-of-{plan.Options.BestOf}", plan.Sft, plan.Options.BestOf),
        ("ppo", plan.Policy, 1), ("grpo", plan.GrpoPolicy, 1), ("dpo", plan.Dpo, 1),
    ];

    /// <summary>The chat models whose arithmetic the score stage measures: every one above, and the two taught the calculator.</summary>
    public static IReadOnlyList<(string Name, string Folder)> ArithmeticModels(SpeedrunPlan plan) =>
    [
        ("sft", plan.Sft), ("ppo", plan.Policy), ("grpo", plan.GrpoPolicy), ("dpo", plan.Dpo), ("sft-tools", plan.ToolSft), ("grpo-tools", plan.ToolGrpoPolicy),
    ];

    /// <summary>Exact answers of one model on the held-out arithmetic problems, without the calculator and with it.</summary>
    public static (ArithmeticReport Without, ArithmeticReport With) MeasureArithmetic(string folder)
    {
        var (model, state) = Checkpoint.LoadModel(folder);
        using var _ = model;
        var tokenizer = GptTokenizer.Load(state.Tokenizer);
        var problems = Arithmetic.Problems(heldOut: true, RlTasks.ScoreProblems);
        return (ArithmeticScore.Measure(model, tokenizer, problems, withTool: false), ArithmeticScore.Measure(model, tokenizer, problems, withTool: true));
    }

    /// <summary>The verse score of one model on the plan's held-out prompts — every rule, strict, and the form share
    /// among them (best-of-N chooses with the plan's reward model).</summary>
    public static VerseScoreReport Score(SpeedrunPlan plan, Verse verse, string folder, int bestOf = 1)
    {
        var (policy, state) = Checkpoint.LoadModel(folder);
        using var _ = policy;
        var tokenizer = GptTokenizer.Load(state.Tokenizer);
        using var rewardModel = bestOf > 1 ? RewardModel.Load(plan.Reward) : null;
        rewardModel?.eval();
        return VerseScore.Measure(policy, tokenizer, FormScore.Prompts(plan.Options.ScorePrompts), verse, 0.7, 1, bestOf,
            rewardModel is null ? null : Rewards.FromModel(rewardModel, tokenizer));
    }
}
