using System.ComponentModel;
using GptSharp.Alignment;
using GptSharp.Evaluation;
using GptSharp.Runtime;
using GptSharp.Tokenization;
using GptSharp.Training;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class GrpoSettings : AdaptableSettings
{
    [CommandOption("--from")] [Description("The SFT run the policy starts from (and the reference when --beta > 0).")]
    public string From { get; init; } = "runs/sft";
    [CommandOption("--task")] [Description("`form` (built-in: write a poem for a title; 1 for a regular form), `verse` (a poem for a title and its instruction, scored by the graded verse check; see gptsharp verse check), `builtin` (every built-in task with its check), `verse-rhyme` (the verse task with a rhyme dictionary to look characters up in, over several turns), `arithmetic` (multi-digit + − × with the calculator; 1 for the exact result), `calculator-steps` ((a × b) ± c with a calculator of one operation a call, over several turns), or a JSONL file of {\"prompt\", \"answer\"} lines: 1 when the answer gives the expected one.")]
    public string Task { get; init; } = "form";
    [CommandOption("--reward-model")] [Description("Train against this reward-model run instead of the task's program (the program is still logged as the gold score; default: the program).")]
    public string? RewardModel { get; init; }
    [CommandOption("-r|--run-dir")] [Description("Folder for the GRPO run; the policy goes to its policy/ folder.")]
    public string RunDir { get; init; } = "runs/grpo";
    [CommandOption("--select-every")] [Description("Measure the held-out gold score every this many rollouts and keep the best policy (0: keep the last; built-in tasks only).")]
    public int SelectEvery { get; init; } = 5;

    // GRPO's own settings, named as GrpoConfig's properties.
    [CommandOption("--group")] [Description("Answers per prompt (G).")]
    public int? GroupSize { get; init; }
    [CommandOption("--rollout")] [Description("Prompts per rollout.")]
    public int? PromptsPerRollout { get; init; }
    [CommandOption("--minibatch")] [Description("Answers per optimisation minibatch.")]
    public int? MiniBatch { get; init; }
    [CommandOption("--epochs")] [Description("Passes over each rollout's answers.")]
    public int? Epochs { get; init; }
    [CommandOption("--max-tokens")] [Description("Longest answer, in tokens.")]
    public int? MaxNewTokens { get; init; }
    [CommandOption("--temperature")] [Description("Sampling temperature (log-probabilities are taken at it too).")]
    public double? Temperature { get; init; }
    [CommandOption("--rollout-engine")] [Description("What samples the rollouts: auto (the CPU engine on a CPU), torch, cpu, cpu-f16, cpu-bf16, cpu-q8_0 or cpu-q4_0 (see generate --engine).")]
    public string? Engine { get; init; }
    [CommandOption("--loss")] [Description("grpo, dr_grpo (no std or length normalisation), dapo (token-level mean, clip-higher), gspo (one clipped ratio per answer) or cispo (every token's gradient kept, weighted by its clipped, detached ratio).")]
    public string Loss { get; init; } = "grpo";
    [CommandOption("--advantage")] [Description("How rewards become advantages: grpo (minus the group's mean), rloo (minus the mean of the other answers) or reinforce++ (minus the group's mean, over the batch's std).")]
    public string Advantage { get; init; } = "grpo";
    [CommandOption("--scale-rewards")] [Description("What advantages are divided by: group (its group's std), batch (the batch's std) or none. Default: group for --advantage grpo (none with --loss dr_grpo), none for rloo, batch for reinforce++.")]
    public string? ScaleRewards { get; init; }
    [CommandOption("--clip")] [Description("Ratio clip ε.")]
    public double? Clip { get; init; }
    [CommandOption("--clip-high")] [Description("The upper clip ε_high of DAPO's ratio and CISPO's weight.")]
    public double? ClipHigh { get; init; }
    [CommandOption("--sequence-clip")] [Description("GSPO's clip of the sequence ratio below 1.")]
    public double? SequenceClip { get; init; }
    [CommandOption("--sequence-clip-high")] [Description("GSPO's clip of the sequence ratio above 1.")]
    public double? SequenceClipHigh { get; init; }
    [CommandOption("--dynamic-sampling")] [Description("DAPO's dynamic sampling: groups whose answers all score the same are replaced by new prompts' groups (up to --sampling-rounds rounds a rollout). Default: off.")]
    public bool DynamicSampling { get; init; }
    [CommandOption("--sampling-rounds")] [Description("Most sampling rounds a rollout takes under --dynamic-sampling.")]
    public int? SamplingRounds { get; init; }
    [CommandOption("--overlong-buffer")] [Description("DAPO's soft overlong punishment: the last this many tokens before --max-tokens cost up to --overlong-penalty of reward, linearly (0: off).")]
    public int? OverlongBuffer { get; init; }
    [CommandOption("--is-correction")] [Description("Correct for the rollout engine's log-probabilities differing from the trainer's: none, tis (each token's loss times the ratio, truncated at --is-cap) or mis (tokens whose ratio is outside [[1/cap, cap]] left out). The gap is logged every rollout either way. Default: none.")]
    public string IsCorrection { get; init; } = "none";
    [CommandOption("--is-level")] [Description("The ratio per token, or per answer (sequence: the product over its tokens). Default: token.")]
    public string IsLevel { get; init; } = "token";
    [CommandOption("--is-cap")] [Description("TIS's truncation of the ratio, and MIS's bounds [[1/cap, cap]].")]
    public double? IsCap { get; init; }
    [CommandOption("--overlong-penalty")] [Description("The reward an answer at the length limit loses under --overlong-buffer.")]
    public double? OverlongPenalty { get; init; }
    [CommandOption("--beta")] [Description("KL penalty to the starting model (0: none, no reference kept).")]
    public double? Beta { get; init; }
    [CommandOption("--tools")] [Description("Built-in tools offered with every prompt and run while sampling (calculator); default: the task's (arithmetic: calculator).")]
    public string? Tools { get; init; }
    [CommandOption("--max-turns")] [Description("Model turns an episode may take in the task's environment (verse-rhyme, calculator-steps); the answer ends at the limit.")]
    public int? MaxTurns { get; init; }
    [CommandOption("--keep-truncated")] [Description("Learn from answers cut by the length limit too (default: masked out).")]
    public bool KeepTruncated { get; init; }

    protected override TrainingConfig StageDefaults => GrpoRun.Defaults;
    public override ValidationResult Validate() =>
        BatchSize is not null ? ValidationResult.Error("--batch-size: GRPO's optimisation batch is --minibatch.")
        : Engine is not null && GptSharp.Inference.Cpu.DecodeEngine.Problem(Engine, "--rollout-engine") is { } problem ? ValidationResult.Error(problem)
        : NameProblem() is { } names ? ValidationResult.Error(names)
        : base.Validate();

    /// <summary>An unknown loss, estimator or scaling, named with the choices, before anything loads.</summary>
    string? NameProblem()
    {
        try { Grpo(); }
        catch (ArgumentException e) { return e.Message; }
        return null;
    }
    public override IEnumerable<object> Defaults => [.. base.Defaults, new GrpoConfig()];

    public GrpoConfig Grpo() => OptionDefaults.Apply(this, new GrpoConfig()) with
    {
        Loss = Loss switch
        {
            "grpo" => GrpoLoss.Grpo, "dr_grpo" => GrpoLoss.DrGrpo, "dapo" => GrpoLoss.Dapo, "gspo" => GrpoLoss.Gspo, "cispo" => GrpoLoss.Cispo,
            _ => throw new ArgumentException($"--loss {Loss}: expected grpo, dr_grpo, dapo, gspo or cispo."),
        },
        Advantage = Advantage switch
        {
            "grpo" => AdvantageEstimator.Grpo, "rloo" => AdvantageEstimator.Rloo, "reinforce++" => AdvantageEstimator.ReinforcePlusPlus,
            _ => throw new ArgumentException($"--advantage {Advantage}: expected grpo, rloo or reinforce++."),
        },
        ScaleRewards = ScaleRewards switch
        {
            null => null, "group" => RewardScaling.Group, "batch" => RewardScaling.Batch, "none" => RewardScaling.None,
            _ => throw new ArgumentException($"--scale-rewards {ScaleRewards}: expected group, batch or none."),
        },
        IsCorrection = IsCorrection switch
        {
            "none" => ImportanceCorrection.None, "tis" => ImportanceCorrection.Tis, "mis" => ImportanceCorrection.Mis,
            _ => throw new ArgumentException($"--is-correction {IsCorrection}: expected none, tis or mis."),
        },
        IsSequenceLevel = IsLevel switch
        {
            "token" => false, "sequence" => true,
            _ => throw new ArgumentException($"--is-level {IsLevel}: expected token or sequence."),
        },
        DynamicSampling = DynamicSampling,
        MaskTruncated = !KeepTruncated,
    };
}

/// <summary><c>gptsharp grpo</c>: RL with verifiable rewards by group-relative policy optimisation.</summary>
sealed class GrpoCommand : Command<GrpoSettings>
{
    public override int Execute(CommandContext context, GrpoSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var task = RlTasks.Named(s.Task); // the built-in split is fixed: the form score's held-out titles never reach training, whatever --seed
        if (task.Environment is { } environment && s.Tools is not null)
            throw new ArgumentException($"--tools {s.Tools}: the task '{task.Name}' acts in the environment '{environment.Name}', which offers its own tools.");
        var grpo = (s.Grpo() with { Tools = s.Tools ?? task.Tools }).Validate();
        if (grpo.Tools is { } tools) GptSharp.Inference.ToolBox.Named(tools); // an unknown name fails here, before any loading
        var training = s.Training() with { BatchSize = grpo.MiniBatch };
        GptSharp.Alignment.RewardModel? rewardModel = s.RewardModel is null ? null : GptSharp.Alignment.RewardModel.Load(s.RewardModel);
        using var _ = rewardModel;
        var tokenizer = GptTokenizer.Load(GptSharp.Runs.Checkpoint.ReadState(s.From).Tokenizer);
        RewardFunction reward = rewardModel is null ? task.Program : Rewards.FromModel(rewardModel, tokenizer);
        var selection = task.HeldOutGold is { } heldOut && s.SelectEvery > 0 ? new PolicySelection(p => heldOut(p, tokenizer), s.SelectEvery) : null;
        GrpoReport report = null!;
        ProgressDisplay.Run("grpo", training.Steps, "steps", s.Quiet, (Action<double, string?> progress) =>
        {
            GrpoRolloutStats? last = null;
            report = GrpoRun.Execute(s.From, task.Prompts, reward, grpo, training,
                s.Run(s.RunDir, runtime.Device, m => progress(m.Step, last is null ? null : $"reward {last.MeanReward:F3}"), cancellation),
                gold: rewardModel is null ? null : task.Program, selection: selection,
                onRollout: r =>
                {
                    last = r;
                    if (s.Quiet) Console.WriteLine($"rollout {r.Iteration}: reward {r.MeanReward:F3}{(r.MeanGold is double g ? $", gold {g:F3}" : "")}, length {r.MeanResponseLength:F1}, groups that teach {r.SolvedGroups:P0}");
                },
                rewardDescription: s.RewardModel is null ? task.Name : new { task = task.Name, rewardModel = GptSharp.Runs.RunFolder.Reference(s.RunDir, s.RewardModel) },
                environment: task.Environment);
            return report;
        });
        double first = report.Rollouts.Take(3).Average(r => r.MeanReward), final = report.Rollouts.TakeLast(3).Average(r => r.MeanReward);
        AnsiConsole.MarkupLine($"GRPO: {report.Rollouts.Count} rollouts, mean reward {first:F3} → {final:F3} (first/last 3)." +
            (report.Kept is { } kept ? $" Kept the policy of step {kept.Step} (held-out gold {kept.Score:F3})." : "") +
            $" Policy in {Markup.Escape(Path.Combine(s.RunDir, RlRun.PolicyFolder))}.");
        return 0;
    }
}
