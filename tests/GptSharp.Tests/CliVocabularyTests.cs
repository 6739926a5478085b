using System.Reflection;
using GptSharp.Cli;
using Spectre.Console.Cli;

namespace GptSharp.Tests;

/// <summary>The command line speaks one vocabulary: one spelling per concept across every command, and one meaning
/// (one value type) per spelling.</summary>
public class CliVocabularyTests
{
    static IEnumerable<(Type Settings, string Name, Type Type)> Options() =>
        from settings in typeof(CommandTree).Assembly.GetTypes()
        where typeof(CommandSettings).IsAssignableFrom(settings) && !settings.IsAbstract
        from property in settings.GetProperties(BindingFlags.Public | BindingFlags.Instance)
        let attribute = property.GetCustomAttribute<CommandOptionAttribute>()
        where attribute is not null && !attribute.IsHidden
        from name in attribute.LongNames
        select (settings, "--" + name, Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType);

    /// <summary>Each concept's one spelling, and the spellings it must not have anywhere.</summary>
    static readonly (string Concept, string Allowed, string[] Forbidden)[] Vocabulary =
    [
        ("the run a command starts from", "--from", ["--sft", "--base", "--init", "--start", "--policy"]),
        ("a reward model run", "--reward-model", ["--reward", "--rm", "--reward-run"]),
        ("held-out data: a file / a share", "--val / --val-fraction", ["--held-out", "--validation", "--val-file", "--eval-data", "--holdout"]),
        ("the run folder a command writes or reads", "--run-dir", ["--run", "--dir", "--output-dir", "--model-dir"]),
        ("the speedrun stage to rerun from", "--from-stage", ["--stage", "--restart-from"]),
    ];

    [Fact]
    public void NoConceptHasTwoSpellings()
    {
        var options = Options().ToList();
        Assert.True(options.Count > 200, $"only {options.Count} options found");
        var wrong = from o in options
                    from v in Vocabulary
                    where v.Forbidden.Contains(o.Name)
                    select $"{o.Settings.Name} {o.Name}: {v.Concept} is spelled {v.Allowed}";
        Assert.Empty(wrong);
    }

    [Fact]
    public void EverySpellingMeansOneKindOfValue()
    {
        // A count is never a file: a name bound to a number in one command is a number in every command.
        static string Kind(Type t) => t == typeof(int) || t == typeof(long) ? "whole number" : t == typeof(double) || t == typeof(float) ? "number"
            : t == typeof(bool) ? "flag" : t.IsEnum ? "choice" : "text";
        var mixed = Options().GroupBy(o => o.Name)
            .Where(g => g.Select(o => Kind(o.Type)).Distinct().Count() > 1)
            .Select(g => $"{g.Key}: {string.Join(", ", g.Select(o => $"{o.Settings.Name} {Kind(o.Type)}").Distinct())}")
            .ToList();
        Assert.True(mixed.Count == 0, "Options whose value means different things in different commands:\n" + string.Join("\n", mixed));
    }

    [Fact]
    public void AnOldSpellingStillWorksWithANotice()
    {
        var (code, output) = CliProcess.Cli("ppo", "--sft", "runs/does-not-exist", "--reward", "runs/nor-this", "--run-dir", "runs/x", "--steps", "1");
        Assert.NotEqual(0, code);
        Assert.Contains("note: --sft is now --from", output);
        Assert.Contains("note: --reward is now --reward-model", output);
        Assert.DoesNotContain("Unknown option", output);
        foreach (var ((settings, old), now) in CommandLineCheck.Renamed)
            Assert.Contains(Options(), o => o.Settings == settings && o.Name == now);
    }
}
