using GptSharp.Training;
using GptSharp.Runtime;
using System.ComponentModel;
using GptSharp.Alignment;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class DpoSettings : FineTuneSettings
{
    [CommandOption("--from")] [Description("The SFT run: the policy starts from it and it is the frozen reference.")]
    public string From { get; init; } = "runs/sft";
    [CommandOption("-r|--run-dir")] [Description("Folder for the DPO run.")]
    public string RunDir { get; init; } = "runs/dpo";
    [CommandOption("--beta")] [Description("Strength of the pull toward the reference (DPO's β).")]
    public double Beta { get; init; } = DpoRun.DefaultBeta;
    protected override TrainingConfig StageDefaults => DpoRun.Defaults;
}

/// <summary><c>gptsharp dpo</c>: Direct Preference Optimization of an SFT run on preference pairs.</summary>
sealed class DpoCommand : Command<DpoSettings>
{
    public override int Execute(CommandContext context, DpoSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var (train, heldOut) = FineTuneData.Preferences(s.Data, s.Val, s.RunSeed, "dpo");
        var training = s.Training();
        DpoReport report = null!;
        ProgressDisplay.Run("dpo", training.Steps, "steps", s.Quiet, (Action<double, string?> progress) =>
        {
            report = DpoRun.Execute(s.From, train, heldOut, training, s.Run(s.RunDir, runtime.Device, s.StepReporter(progress), cancellation), s.Beta,
                onStart: start => progress(start, null));
            return report;
        });
        AnsiConsole.MarkupLine($"DPO on {report.TrainPairs:N0} pairs: held-out loss {report.HeldOutLoss:F3} (log 2 = 0.693 at the start), " +
                               $"chosen preferred by the implicit reward on {100 * report.HeldOutPreferenceAccuracy:F1}% of {report.HeldOutPairs:N0} held-out pairs, {report.Training.Seconds:F0} s.");
        return 0;
    }
}
