using GptSharp.Runtime;
using System.ComponentModel;
using GptSharp.Alignment;
using GptSharp.Training;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class SftSettings : FineTuneSettings
{
    [CommandOption("--from")] [Description("The pretrained run folder whose checkpoint starts the model.")]
    public string From { get; init; } = "runs/pretrain";
    [CommandOption("-r|--run-dir")] [Description("Folder for the fine-tuned run.")]
    public string RunDir { get; init; } = "runs/sft";
    protected override TrainingConfig StageDefaults => SftRun.Defaults;
}

/// <summary><c>gptsharp sft</c>: supervised fine-tuning of a pretrained run on conversations.</summary>
sealed class SftCommand : Command<SftSettings>
{
    public override int Execute(CommandContext context, SftSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var (train, heldOut) = FineTuneData.Conversations(s.Data, s.Val, s.RunSeed);
        var training = s.Training();
        SftReport report = null!;
        ProgressDisplay.Run("sft", training.Steps, "steps", s.Quiet, (Action<double, string?> progress) =>
        {
            report = SftRun.Execute(s.From, train, heldOut, training, s.Run(s.RunDir, runtime.Device, s.StepReporter(progress), cancellation),
                onStart: (_, start) => progress(start, null));
            return report;
        });
        AnsiConsole.MarkupLine($"SFT on {report.TrainConversations:N0} conversations ({report.HeldOutConversations:N0} held out, {report.Truncated:N0} cut to the context, {report.Dropped:N0} dropped with no assistant token within it): " +
                               $"train loss {report.Training.FinalLoss:F3}, held-out loss {report.Training.FinalValLoss:F3} on assistant tokens, {report.Training.Seconds:F0} s; {report.TrainableParameters:N0} trainable parameters.");
        return 0;
    }
}
