using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Tokenization;
using GptSharp.Training;
using TorchSharp;

namespace GptSharp.Alignment;

/// <summary>What a GRPO run did, rollout by rollout, and which policy it kept.</summary>
public sealed record GrpoReport(TrainingResult Training, IReadOnlyList<GrpoRolloutStats> Rollouts, IReadOnlyList<GoldCheck> GoldChecks, GoldCheck? Kept);

/// <summary>How RL keeps its policy: measure a held-out gold score every <paramref name="EveryRollouts"/> rollouts
/// and keep the latest within <paramref name="Tolerance"/> of the best (see <see cref="BestPolicy"/>).</summary>
public sealed record PolicySelection(Func<Gpt, double> HeldOutGold, int EveryRollouts = 5, double Tolerance = 0.04);

/// <summary>
/// RL with verifiable rewards by GRPO: the policy starts from an SFT run, answers each prompt G times, and learns from
/// how each answer scored against its group; no critic, and no reference unless β &gt; 0. Writes per-rollout statistics
/// to <c>grpo.jsonl</c> and the policy to <c>RUN/policy</c> (the best by held-out gold when a selection is given, else the last).
/// </summary>
public static class GrpoRun
{
    /// <summary>The optimiser settings <c>grpo</c> uses unless told otherwise: constant rate, no decay, checkpoints on rollout boundaries.</summary>
    public static TrainingConfig Defaults { get; } = new()
        { Steps = 100, BatchSize = new GrpoConfig().MiniBatch, LearningRate = 1e-4, WarmupSteps = 0, MinLrRatio = 1, WeightDecay = 0, EvalEvery = 100, CheckpointEvery = 20 };

    public const string RolloutFile = "grpo.jsonl";

    /// <param name="gold">A program logged beside the reward in every rollout (e.g. the form check when the reward is learned).</param>
    /// <param name="environment">An environment every answer acts in over several turns (see <see cref="IEnvironment"/>).</param>
    /// <param name="options">The run folder, resume, device, LoRA; <see cref="RunOptions.UntilStep"/> stops there (with a checkpoint) on the full run's schedule.</param>
    public static GrpoReport Execute(string fromRun, IReadOnlyList<string> prompts, RewardFunction reward, GrpoConfig grpo, TrainingConfig training,
        RunOptions options, RewardFunction? gold = null, PolicySelection? selection = null,
        Action<GrpoRolloutStats>? onRollout = null, object? rewardDescription = null, EnvironmentFactory? environment = null)
    {
        var (runDirectory, resume, device, _, _) = options;
        var lora = options.Lora;
        grpo.Validate();
        int perRollout = grpo.StepsPerRollout;
        training = RlRun.OnRolloutBoundaries(training, perRollout);
        var (policy, start) = Checkpoint.LoadModel(fromRun);
        using var _p = policy;
        Gpt? reference = grpo.Beta > 0 ? Checkpoint.LoadModel(fromRun).Model : null;
        using var _r = reference;
        if (lora is not null) Lora.Attach(policy, lora);
        var tokenizer = GptTokenizer.Load(start.Tokenizer);
        var torchDevice = torch.device(device);
        policy.to(torchDevice);
        if (reference is not null)
        {
            reference.to(torchDevice);
            reference.eval();
            foreach (var p in reference.parameters()) p.requires_grad = false;
        }

        var log = new RlRunLog<GrpoRolloutStats>(runDirectory, RolloutFile, Path.Combine(runDirectory, RlRun.PolicyFolder), resume, start.Tokenizer, selection, perRollout,
            (m, r) => new
            {
                step = m.Step, iteration = r.Iteration, meanReward = r.MeanReward, meanGold = r.MeanGold, meanResponseLength = r.MeanResponseLength,
                solvedGroups = r.SolvedGroups, truncated = r.Truncated, sampledGroups = r.SampledGroups, teachingShare = r.TeachingShare,
                mismatchKl = r.MismatchKl, mismatchMaxRatio = r.MismatchMaxRatio,
            }, onRollout);
        var setup = new RunSetup(runDirectory, training, resume, start.Tokenizer, "GRPO", device, DataParallel: false, Command: "grpo");
        var (outcome, experience) = RlRun.Train(setup, options, log, policy, run =>
        {
            var experience = new GrpoExperience(policy, reference, reward, tokenizer, prompts, grpo, training.Seed, RlRun.NextRollout(run.DataPosition, "GRPO"), gold, environment);
            return (experience, new RunObjective<GrpoBatch>(policy, policy.Config, GrpoExperience.Objective(policy, grpo), experience, null, new
            {
                objective = "grpo", from = RunFolder.Reference(runDirectory, fromRun), reward = rewardDescription ?? "program", environment = environment?.Name, grpo, training, lora,
                tokenizer = run.Tokenizer, prompts = prompts.Count,
            }));
        }, e => e.Rollouts);
        return new GrpoReport(outcome.Training, experience.Rollouts, log.Keeper?.History ?? [], log.Keeper?.Kept);
    }
}
