using GptSharp.Training;
using GptSharp.Runtime;
using System.ComponentModel;
using GptSharp.Alignment;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class RewardSettings : FineTuneSettings
{
    [CommandOption("--from")] [Description("The run (usually SFT) whose weights start the reward model's backbone.")]
    public string From { get; init; } = "runs/sft";
    [CommandOption("-r|--run-dir")] [Description("Folder for the reward model's run.")]
    public string RunDir { get; init; } = "runs/reward";
    protected override TrainingConfig StageDefaults => RewardRun.Defaults;
}

/// <summary><c>gptsharp reward</c>: train a reward model on preference pairs and report held-out pairwise accuracy.</summary>
sealed class RewardCommand : Command<RewardSettings>
{
    public override int Execute(CommandContext context, RewardSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var (train, heldOut) = FineTuneData.Preferences(s.Data, s.Val, s.RunSeed, "reward");
        var training = s.Training();
        RewardReport report = null!;
        ProgressDisplay.Run("reward", training.Steps, "steps", s.Quiet, (Action<double, string?> progress) =>
        {
            report = RewardRun.Execute(s.From, train, heldOut, training, s.Run(s.RunDir, runtime.Device, s.StepReporter(progress), cancellation),
                onStart: start => progress(start, null));
            return report;
        });
        AnsiConsole.MarkupLine($"Reward model on {report.TrainPairs:N0} pairs: held-out pairwise accuracy [bold]{100 * report.HeldOutAccuracy:F1}%[/] " +
                               $"over {report.HeldOutPairs:N0} pairs (loss {report.HeldOutLoss:F3}), {report.Training.Seconds:F0} s.");
        return 0;
    }
}
