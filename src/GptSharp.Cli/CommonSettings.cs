using System.ComponentModel;
using Spectre.Console.Cli;

namespace GptSharp.Cli;

/// <summary>Options every command takes.</summary>
public class CommonSettings : CommandSettings
{
    [CommandOption("-q|--quiet")]
    [Description("Plain log lines instead of progress bars.")]
    public bool Quiet { get; init; }

    [CommandOption("--threads")]
    [Description("Torch threads (default: one per core).")]
    public int Threads { get; init; }
}
