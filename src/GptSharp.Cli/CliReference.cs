using System.Text;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli;

/// <summary>
/// <c>docs/cli.md</c>: every command's own <c>--help</c>, without colour at a fixed width, in the order <c>gptsharp --help</c>
/// lists them, so each option and its default is written in one place (the command's settings) and read everywhere.
/// </summary>
public static class CliReference
{
    public const string DocsPath = "docs/cli.md";
    const int Width = 120;

    public static string Markdown()
    {
        var page = new StringBuilder();
        page.Append("# Command-line reference\n\n");
        page.Append("Generated from each command's `--help` by `gptsharp cli-reference --out docs/cli.md` (a test fails when it is stale).\n");
        page.Append("What the commands are for, command by command: [commands.md](commands.md).\n");
        Walk([], page);
        return page.ToString();
    }

    static void Walk(string[] path, StringBuilder page)
    {
        string help = Help([.. path, "--help"]);
        page.Append($"\n## gptsharp{(path.Length > 0 ? " " + string.Join(' ', path) : "")}\n\n```\n{help}\n```\n");
        foreach (string command in Commands(help)) Walk([.. path, command], page);
    }

    /// <summary>What <c>gptsharp ARGS</c> prints, rendered as plain text <see cref="Width"/> columns wide, lines trimmed.</summary>
    public static string Help(string[] args)
    {
        var writer = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Interactive = InteractionSupport.No, Out = new AnsiConsoleOutput(writer),
        });
        console.Profile.Width = Width;
        var app = new CommandApp();
        app.Configure(config =>
        {
            CommandTree.Configure(config);
            config.Settings.Console = console;
        });
        app.Run(args);
        return string.Join('\n', writer.ToString().Split('\n').Select(line => line.TrimEnd())).Trim('\n');
    }

    /// <summary>The commands a help text lists under COMMANDS: (each line begins with the command's name).</summary>
    static IEnumerable<string> Commands(string help)
    {
        bool inside = false;
        foreach (string line in help.Split('\n'))
        {
            if (line.StartsWith("COMMANDS:", StringComparison.Ordinal)) { inside = true; continue; }
            if (!inside) continue;
            if (line.Length == 0 || !char.IsWhiteSpace(line[0])) yield break;
            string trimmed = line.TrimStart();
            // A continued description is indented further than the names; a name is a lower-case word.
            if (line.Length - trimmed.Length <= 4 && trimmed.Length > 0 && char.IsLower(trimmed[0]))
                yield return trimmed.Split(' ', 2)[0];
        }
    }
}
