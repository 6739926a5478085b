using GptSharp.Runtime;
using System.ComponentModel;
using GptSharp.Alignment;
using GptSharp.Training;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class PpoSettings : CommonSettings
{
    [CommandOption("--sft")] [Description("The SFT run: the actor starts from it and it is the frozen reference.")]
    public string Sft { get; init; } = "runs/sft";
    [CommandOption("--reward")] [Description("The reward-model run: frozen scorer, and the critic's starting point.")]
    public string Reward { get; init; } = "runs/reward";
    [CommandOption("-r|--run-dir")] public string RunDir { get; init; } = "runs/ppo";
    [CommandOption("--device")] public string Device { get; init; } = "cpu";
    [CommandOption("--steps")] [Description("Optimiser steps (each rollout gives epochs × prompts / minibatch of them).")]
    public int Steps { get; init; } = 200;
    [CommandOption("--lr")] public double LearningRate { get; init; } = 2e-5;
    [CommandOption("--kl")] [Description("KL penalty coefficient against the reference.")]
    public double Kl { get; init; } = 0.05;
    [CommandOption("--kl-estimator")] [Description("K1 or K3.")]
    public KlEstimator KlEstimator { get; init; } = KlEstimator.K1;
    [CommandOption("--rollout")] public int RolloutPrompts { get; init; } = 16;
    [CommandOption("--epochs")] public int Epochs { get; init; } = 2;
    [CommandOption("--minibatch")] public int MiniBatch { get; init; } = 8;
    [CommandOption("--max-tokens")] public int MaxTokens { get; init; } = 64;
    [CommandOption("--temperature")] [Description("Rollout sampling temperature (log-probabilities are taken at it too).")]
    public double Temperature { get; init; } = 0.7;
    [CommandOption("--resume")] [Description("Continue the run folder's checkpoint (from the rollout after the one it saved).")]
    public bool Resume { get; init; }
    [CommandOption("--ptx")] [Description("Pretraining-mix (PPO-ptx) loss weight; needs --ptx-data.")]
    public double Ptx { get; init; }
    [CommandOption("--ptx-data")] [Description("Token shards (from `data prepare`) for the ptx loss.")]
    public string? PtxData { get; init; }
    [CommandOption("--lora-rank")] [Description("Train LoRA adapters of this rank on the actor and the critic's backbone (0: full).")]
    public int LoraRank { get; init; }
    [CommandOption("--lora-alpha")] public double LoraAlpha { get; init; } = 16;
    [CommandOption("--entropy")] public double Entropy { get; init; }
    [CommandOption("--seed")] public long Seed { get; init; } = 1337;
    [CommandOption("--scorer")] [Description("`reward-model` (default) or `form`: 1 for a regular poem, else 0 (a program, not a learned reward).")]
    public string Scorer { get; init; } = "reward-model";
}

/// <summary><c>gptsharp ppo</c>: RLHF of an SFT run against a reward model, on the built-in poem prompts.</summary>
sealed class PpoCommand : Command<PpoSettings>
{
    public override int Execute(CommandContext context, PpoSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var prompts = BuiltInDatasets.Build(s.Seed).TrainChats.Select(c => c[0].Content).Where(q => q.StartsWith("寫一首詩", StringComparison.Ordinal)).ToList();
        var ppo = new PpoConfig
        {
            RolloutPrompts = s.RolloutPrompts, Epochs = s.Epochs, MiniBatch = s.MiniBatch, MaxNewTokens = s.MaxTokens,
            KlCoefficient = s.Kl, Temperature = s.Temperature, RewardKl = s.KlEstimator, EntropyCoefficient = s.Entropy, PtxCoefficient = s.Ptx,
        };
        var training = new TrainingConfig
        {
            Steps = s.Steps, BatchSize = s.MiniBatch, LearningRate = s.LearningRate, WarmupSteps = 0, MinLrRatio = 1.0, WeightDecay = 0,
            EvalEvery = s.Steps, CheckpointEvery = Math.Max(50, s.Steps / 4), Seed = s.Seed,
        };
        PpoReport report = null!;
        ProgressDisplay.Run("ppo", training.Steps, "steps", s.Quiet, (Action<double, string?> progress) =>
        {
            RolloutStats? last = null;
            report = PpoRun.Execute(s.Sft, s.Reward, prompts, ppo, training, s.RunDir, runtime.Device,
                onRollout: r =>
                {
                    last = r;
                    if (s.Quiet) Console.WriteLine($"rollout {r.Iteration}: reward {r.MeanScore:F3}, KL {r.MeanKl:F3}, length {r.MeanResponseLength:F1}");
                },
                onStep: m => progress(m.Step, last is null ? null : $"reward {last.MeanScore:F3} KL {last.MeanKl:F3}"),
                programReward: s.Scorer switch
                {
                    "reward-model" => null,
                    "form" => FormScore.Reward,
                    _ => throw new ArgumentException($"--scorer {s.Scorer}: expected reward-model or form."),
                },
                cancellation: cancellation, resume: s.Resume, ptxData: s.PtxData,
                lora: s.LoraRank > 0 ? new GptSharp.Models.LoraConfig(s.LoraRank, s.LoraAlpha).Validate() : null);
            return report;
        });
        var first = report.Rollouts.Take(3).Average(r => r.MeanScore);
        var final = report.Rollouts.TakeLast(3).Average(r => r.MeanScore);
        AnsiConsole.MarkupLine($"PPO: {report.Rollouts.Count} rollouts, mean reward {first:F3} → {final:F3} (first/last 3), final KL {report.Rollouts[^1].MeanKl:F3}. " +
                               $"Policy in {Markup.Escape(Path.Combine(s.RunDir, PpoRun.PolicyFolder))}.");
        return 0;
    }
}
