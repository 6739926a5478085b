using System.ComponentModel;
using GptSharp.Alignment;
using GptSharp.Interop;
using GptSharp.Training;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class RewardSettings : CommonSettings
{
    [CommandOption("--from")] [Description("The run (usually SFT) whose weights start the reward model's backbone.")]
    public string From { get; init; } = "runs/sft";
    [CommandOption("--data")] [Description("`builtin` (pairs from the embedded corpora) or a preference-pairs .jsonl file.")]
    public string Data { get; init; } = "builtin";
    [CommandOption("--val")] [Description("Held-out pairs .jsonl (default with a file: 5% of it, chosen by seed).")]
    public string? Val { get; init; }
    [CommandOption("-r|--run-dir")] public string RunDir { get; init; } = "runs/reward";
    [CommandOption("--resume")] public bool Resume { get; init; }
    [CommandOption("--device")] public string Device { get; init; } = "cpu";
    [CommandOption("--steps")] public int Steps { get; init; } = 300;
    [CommandOption("--batch-size")] public int BatchSize { get; init; } = 16;
    [CommandOption("--lr")] public double LearningRate { get; init; } = 5e-4;
    [CommandOption("--warmup")] public int WarmupSteps { get; init; } = 20;
    [CommandOption("--eval-every")] public int EvalEvery { get; init; } = 100;
    [CommandOption("--seed")] public long Seed { get; init; } = 1337;
    [CommandOption("--time-limit")] public double TimeLimit { get; init; }
}

/// <summary><c>gptsharp reward</c>: train a reward model on preference pairs and report held-out pairwise accuracy.</summary>
sealed class RewardCommand : Command<RewardSettings>
{
    public override int Execute(CommandContext context, RewardSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var (train, heldOut) = PreferenceData.Load(s.Data, s.Val, s.Seed, "reward");
        var training = new TrainingConfig
        {
            Steps = s.Steps, BatchSize = s.BatchSize, LearningRate = s.LearningRate, WarmupSteps = s.WarmupSteps, EvalEvery = s.EvalEvery,
            CheckpointEvery = Math.Max(s.EvalEvery, 100), Seed = s.Seed, TimeLimitSeconds = s.TimeLimit, WeightDecay = 0.0,
        };
        RewardReport report = null!;
        ProgressDisplay.Run("reward", training.Steps, "steps", s.Quiet, (Action<double, string?> progress) =>
        {
            report = RewardRun.Execute(s.From, train, heldOut, training, s.RunDir, s.Resume, runtime.Device,
                onStart: start => progress(start, null),
                onStep: m =>
                {
                    progress(m.Step, $"loss {m.Loss:F3}" + (m.ValLoss is double v ? $" val {v:F3}" : ""));
                    if (s.Quiet && m.ValLoss is double val) Console.WriteLine($"step {m.Step}: loss {m.Loss:F4}, held-out loss {val:F4}");
                },
                cancellation: cancellation);
            return report;
        });
        AnsiConsole.MarkupLine($"Reward model on {report.TrainPairs:N0} pairs: held-out pairwise accuracy [bold]{100 * report.HeldOutAccuracy:F1}%[/] " +
                               $"over {report.HeldOutPairs:N0} pairs (loss {report.HeldOutLoss:F3}), {report.Training.Seconds:F0} s.");
        return 0;
    }
}
