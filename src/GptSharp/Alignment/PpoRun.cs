using GptSharp.Runs;
using GptSharp.Models;
using GptSharp.Tokenization;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Alignment;

/// <summary>What a PPO run did, rollout by rollout, and which policy it kept.</summary>
public sealed record PpoReport(TrainingResult Training, IReadOnlyList<RolloutStats> Rollouts, IReadOnlyList<GoldCheck> GoldChecks, GoldCheck? Kept);

/// <summary>
/// RLHF with PPO: the actor starts from the SFT run, the critic from the reward model, the reference (SFT) and the
/// reward model stay frozen. Trains through the shared trainer; writes per-rollout statistics to <c>ppo.jsonl</c> and
/// the tuned policy alone to <c>RUN/policy</c> (a plain GPT run folder for generate, chat and form-score).
/// </summary>
public static class PpoRun
{
    /// <summary>
    /// The optimiser settings <c>ppo</c> uses unless told otherwise: a constant rate, no weight decay, checkpoints on
    /// rollout boundaries. With a reward model trained on the SFT model's own answers, lr 5e-5 with normalised rewards
    /// took the speedrun's form score from 58% to 86–93% (lr 1e-5: 66%); with the off-policy reward model of earlier
    /// versions, looser settings let the policy exploit it (form score 73% → 28%).
    /// </summary>
    public static TrainingConfig Defaults { get; } = new()
        { Steps = 200, BatchSize = new PpoConfig().MiniBatch, LearningRate = 5e-5, WarmupSteps = 0, MinLrRatio = 1, WeightDecay = 0, EvalEvery = 200, CheckpointEvery = 48 };


    /// <summary>The built-in prompts PPO trains on: the poem requests of the built-in SFT data.</summary>
    public static List<string> PoemPrompts(long seed = 1337) =>
        [.. BuiltInDatasets.Build(seed).TrainChats.Select(c => c[0].Content).Where(q => q.StartsWith("寫一首詩", StringComparison.Ordinal))];
    public const string RolloutFile = "ppo.jsonl";

    /// <param name="program">When given, scores rollouts instead of the reward model (which still starts the critic).</param>
    /// <param name="gold">A program logged beside the score in every rollout: how the proxy reward compares with the truth.</param>
    /// <param name="selection">Measure a held-out gold score every few rollouts and keep the best policy in <c>RUN/policy</c>.</param>
    /// <param name="ptxData">Token shards (from <c>data prepare</c>) for the pretraining-mix loss, needed when <see cref="PpoConfig.PtxCoefficient"/> &gt; 0.</param>
    /// <param name="options">The run folder; <see cref="RunOptions.Resume"/> continues its checkpoint at the rollout after the one it saved, <see cref="RunOptions.UntilStep"/> stops there (with a checkpoint) on the full run's schedule.</param>
    public static PpoReport Execute(string sftRun, string rewardRun, IReadOnlyList<string> prompts, PpoConfig ppo, TrainingConfig training,
        RunOptions options, Action<RolloutStats>? onRollout = null, RewardFunction? program = null, string? ptxData = null,
        RewardFunction? gold = null, PolicySelection? selection = null)
    {
        var (runDirectory, resume, device, _, _) = options;
        var lora = options.Lora;
        int perRollout = ppo.StepsPerRollout;
        training = RlRun.OnRolloutBoundaries(training, perRollout);
        ppo.Rollout.Validate();
        if (ppo.PtxCoefficient > 0 && ptxData is null) throw new ArgumentException("--ptx needs --ptx-data: token shards from `data prepare`.", nameof(ptxData));
        var torchDevice = torch.device(device);
        var (actor, sft) = Checkpoint.LoadModel(sftRun);
        var (reference, _) = Checkpoint.LoadModel(sftRun);
        using var reward = RewardModel.Load(rewardRun);
        using var critic = RewardModel.Load(rewardRun); // the critic starts as a copy of the reward model
        if (program is not null) critic.ZeroHead(); // its backbone still helps; its scale is not the program's
        if (lora is not null)
        {
            // Adapters on the actor and on the critic's backbone (the value head trains whole), as ColossalChat does.
            Lora.Attach(actor, lora);
            Lora.Attach(critic.Backbone, lora);
        }
        using var model = new ActorCritic(actor, critic);
        using var _r = reference;
        model.to(torchDevice);
        reference.to(torchDevice);
        reward.to(torchDevice);
        reference.eval();
        reward.eval();
        foreach (var p in reference.parameters().Concat(reward.parameters())) p.requires_grad = false;

        var tokenizer = GptTokenizer.Load(sft.Tokenizer);
        var log = new RlRunLog<RolloutStats>(runDirectory, RolloutFile, Path.Combine(runDirectory, RlRun.PolicyFolder), resume, sft.Tokenizer, selection, perRollout,
            (m, r) => new
            {
                step = m.Step, iteration = r.Iteration, meanScore = r.MeanScore, meanGold = r.MeanGold, meanKl = r.MeanKl, klCoefficient = r.KlCoefficient,
                meanResponseLength = r.MeanResponseLength,
            }, onRollout);
        Data.MappedTokenShard? ptxShard = null;
        try
        {
            // Rollouts differ per process and the experience is not sharded: PPO trains in one process.
            var setup = new RunSetup(runDirectory, training, resume, sft.Tokenizer, "PPO", device, DataParallel: false, Command: "ppo");
            var (outcome, experience) = RlRun.Train(setup, options, log, actor, run =>
            {
                var position = PpoExperience.ParsePosition(run.DataPosition ?? "0");
                ptxShard = ptxData is null ? null : new Data.MappedTokenShard(Path.Combine(ptxData, Data.ShardSummary.TrainFile));
                var ptxLoader = ptxShard is null ? null : new Data.TokenBatchLoader(ptxShard, ppo.MiniBatch, actor.Config.ContextLength, training.Seed, position.Ptx);
                var experience = new PpoExperience(model, reference, program ?? Rewards.FromModel(reward, tokenizer), tokenizer, prompts, ppo, run.Device, training.Seed,
                    run.DataPosition, ptxLoader, gold);
                return (experience, new RunObjective<PpoBatch>(model, actor.Config, PpoExperience.Objective(model, ppo), experience, null, new
                {
                    objective = "ppo", scorer = program is null ? "reward model" : "program", sft = RunFolder.Reference(runDirectory, sftRun),
                    reward = RunFolder.Reference(runDirectory, rewardRun), ppo, training, lora, tokenizer = run.Tokenizer, prompts = prompts.Count,
                    ptxData = ptxData is null ? null : RunFolder.Reference(runDirectory, ptxData),
                }));
            }, e => e.Rollouts);
            return new PpoReport(outcome.Training, experience.Rollouts, log.Keeper?.History ?? [], log.Keeper?.Kept);
        }
        finally
        {
            ptxShard?.Dispose();
        }
    }
}
