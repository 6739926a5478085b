using System.ComponentModel;
using GptSharp.Runtime;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class CliReferenceSettings : CommonSettings
{
    [CommandOption("--out")] [Description("Write the reference here (default: print it).")]
    public string? Out { get; init; }
}

/// <summary>Writes the command-line reference (docs/cli.md) from every command's own --help.</summary>
sealed class CliReferenceCommand : Command<CliReferenceSettings>
{
    public override int Execute(CommandContext context, CliReferenceSettings settings, CancellationToken cancellation)
    {
        string markdown = CliReference.Markdown();
        if (settings.Out is null) Console.Write(markdown);
        else AtomicFile.WriteAllText(settings.Out, markdown);
        return 0;
    }
}
