using GptSharp.Runs;
using System.ComponentModel;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class PlotSettings : CommonSettings
{
    [CommandOption("-r|--run-dir")] [Description("A run folder with metrics.jsonl.")]
    public string RunDir { get; init; } = "runs/pretrain";
}

/// <summary><c>gptsharp plot</c>: redraw a run's loss curve (also while it trains).</summary>
sealed class PlotCommand : Command<PlotSettings>
{
    public override int Execute(CommandContext context, PlotSettings settings, CancellationToken cancellation)
    {
        AnsiConsole.MarkupLine($"Wrote {Markup.Escape(LossPlot.Write(settings.RunDir))}.");
        return 0;
    }
}
