using GptSharp.Speedrun;
using System.ComponentModel;
using GptSharp.Evaluation;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class ReportSettings : CommonSettings
{
    [CommandOption("-r|--run-dir")] [Description("A speedrun folder.")]
    public string RunDir { get; init; } = "runs/speedrun";
}

/// <summary><c>gptsharp report</c>: (re)writes a speedrun's report card, report.md with its plots.</summary>
sealed class ReportCommand : Command<ReportSettings>
{
    public override int Execute(CommandContext context, ReportSettings s, CancellationToken cancellation)
    {
        AnsiConsole.MarkupLine($"Report card: {Markup.Escape(ReportCard.Write(s.RunDir))}");
        return 0;
    }
}
