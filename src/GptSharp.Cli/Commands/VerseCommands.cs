using System.ComponentModel;
using GptSharp.Alignment;
using GptSharp.Data;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class VerseCheckSettings : CommonSettings
{
    [CommandArgument(0, "<POEM>")] [Description("The poem: two clauses a line, 「…，…。」, lines separated by newlines (or by / in the shell).")]
    public string Poem { get; init; } = "";
    [CommandOption("--prompt")] [Description("The prompt it answers, whose instructions (五言/七言, 藏頭「…」, 用「X」韻) are checked too (default: none).")]
    public string? Prompt { get; init; }
}

/// <summary><c>gptsharp verse check</c>: each rule's verdict for one poem, for people.</summary>
sealed class VerseCheckCommand : Command<VerseCheckSettings>
{
    public override int Execute(CommandContext context, VerseCheckSettings s, CancellationToken cancellation)
    {
        var instruction = s.Prompt is null ? VerseInstruction.None : VerseInstruction.FromPrompt(s.Prompt);
        var verse = Verse.Embedded();
        string poem = s.Poem.Replace('/', '\n').Replace("\\n", "\n");
        if (Verse.Clauses(poem).Count == 0) throw new ArgumentException("The poem holds no CJK text: give it as 「…，…。」 lines.");
        var verdict = verse.Check(poem, instruction);
        var table = new Table().AddColumns("rule", "verdict", "why");
        foreach (var rule in verdict.Rules)
            table.AddRow(rule.Rule.ToString(), rule.Passed switch { true => "[green]pass[/]", false => "[red]fail[/]", _ => "—" }, Markup.Escape(rule.Detail));
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"strict: {(verdict.Strict ? "[green]pass[/]" : "[red]fail[/]")}; graded: {verdict.Graded:F2}" +
                               (verdict.Unknown.Count == 0 ? "" : $"; not in the phonology table (constrain nothing): {Markup.Escape(string.Concat(verdict.Unknown))}"));
        return 0;
    }
}

/// <summary><c>gptsharp verse rates</c>: how the embedded Tang poems fare under each rule, per shape.</summary>
sealed class VerseRatesCommand : Command<CommonSettings>
{
    public override int Execute(CommandContext context, CommonSettings s, CancellationToken cancellation)
    {
        var phonology = Phonology.Embedded();
        var poems = Corpus.Read("tang").Select(d => d.Text).ToList();
        var calibration = Verse.Calibrate(phonology, poems);
        var table = new Table().AddColumn("clauses × characters").AddColumn("poems");
        var rules = new[] { VerseRule.Rhyme, VerseRule.LevelRhyme, VerseRule.Alternation, VerseRule.Opposition, VerseRule.Adhesion, VerseRule.NoRepeat };
        foreach (var rule in rules) table.AddColumn(rule.ToString());
        table.AddColumn("strict");
        foreach (var (shape, count) in calibration.Counts.OrderBy(c => c.Key))
        {
            var rates = calibration.Rates[shape];
            table.AddRow([$"{shape.Clauses} × {shape.Length}", count.ToString("N0"),
                .. rules.Select(r => $"{rates[r]:P1}{(calibration.Required[shape].Contains(r) ? " *" : "")}"), $"{calibration.StrictRates[shape]:P1}"]);
        }
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine("* required by strict for that shape (at least half of the poets' poems keep it); form, rhyme and a level-tone rhyme always are.");
        return 0;
    }
}
