using System.ComponentModel;
using GptSharp.Alignment;
using GptSharp.Interop;
using GptSharp.Training;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class DpoSettings : CommonSettings
{
    [CommandOption("--from")] [Description("The SFT run: the policy starts from it and it is the frozen reference.")]
    public string From { get; init; } = "runs/sft";
    [CommandOption("--data")] [Description("`builtin` or a preference-pairs .jsonl file.")]
    public string Data { get; init; } = "builtin";
    [CommandOption("--val")] [Description("Held-out pairs .jsonl (default with a file: 5% of it, chosen by seed).")]
    public string? Val { get; init; }
    [CommandOption("-r|--run-dir")] public string RunDir { get; init; } = "runs/dpo";
    [CommandOption("--resume")] public bool Resume { get; init; }
    [CommandOption("--device")] public string Device { get; init; } = "cpu";
    [CommandOption("--beta")] [Description("Strength of the pull toward the reference (DPO's β).")]
    public double Beta { get; init; } = 0.5;
    [CommandOption("--steps")] public int Steps { get; init; } = 200;
    [CommandOption("--batch-size")] public int BatchSize { get; init; } = 8;
    [CommandOption("--lr")] public double LearningRate { get; init; } = 5e-5;
    [CommandOption("--warmup")] public int WarmupSteps { get; init; } = 10;
    [CommandOption("--eval-every")] public int EvalEvery { get; init; } = 100;
    [CommandOption("--seed")] public long Seed { get; init; } = 1337;
    [CommandOption("--time-limit")] public double TimeLimit { get; init; }
}

/// <summary><c>gptsharp dpo</c>: Direct Preference Optimization of an SFT run on preference pairs.</summary>
sealed class DpoCommand : Command<DpoSettings>
{
    public override int Execute(CommandContext context, DpoSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var (train, heldOut) = PreferenceData.Load(s.Data, s.Val, s.Seed, "dpo");
        var training = new TrainingConfig
        {
            Steps = s.Steps, BatchSize = s.BatchSize, LearningRate = s.LearningRate, WarmupSteps = s.WarmupSteps, EvalEvery = s.EvalEvery,
            CheckpointEvery = Math.Max(s.EvalEvery, 100), Seed = s.Seed, TimeLimitSeconds = s.TimeLimit, WeightDecay = 0.0,
        };
        DpoReport report = null!;
        ProgressDisplay.Run("dpo", training.Steps, "steps", s.Quiet, (Action<double, string?> progress) =>
        {
            report = DpoRun.Execute(s.From, train, heldOut, training, s.RunDir, s.Resume, s.Beta, runtime.Device,
                onStart: start => progress(start, null),
                onStep: m =>
                {
                    progress(m.Step, $"loss {m.Loss:F3}" + (m.ValLoss is double v ? $" val {v:F3}" : ""));
                    if (s.Quiet && m.ValLoss is double val) Console.WriteLine($"step {m.Step}: loss {m.Loss:F4}, held-out loss {val:F4}");
                },
                cancellation: cancellation);
            return report;
        });
        AnsiConsole.MarkupLine($"DPO on {report.TrainPairs:N0} pairs: held-out loss {report.HeldOutLoss:F3} (log 2 = 0.693 at the start), " +
                               $"chosen preferred by the implicit reward on {100 * report.HeldOutPreferenceAccuracy:F1}% of {report.HeldOutPairs:N0} held-out pairs, {report.Training.Seconds:F0} s.");
        return 0;
    }
}
