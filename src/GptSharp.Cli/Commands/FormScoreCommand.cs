using GptSharp.Evaluation;
using GptSharp.Runs;
using GptSharp.Runtime;
using System.ComponentModel;
using GptSharp.Alignment;
using GptSharp.Tokenization;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class FormScoreSettings : CommonSettings
{
    [CommandOption("-r|--run-dir")] [Description("Run folders to compare, comma-separated (e.g. runs/sft,runs/dpo).")]
    public string RunDir { get; init; } = "runs/sft";
    [CommandOption("--prompts")] [Description("How many fixed held-out titles to ask for.")]
    public int Prompts { get; init; } = 200;
    [CommandOption("--temperature")] [Description("Sampling temperature of the poems.")] public double Temperature { get; init; } = 0.7;
    [CommandOption("--seed")] [Description("Prompt i samples with seed + i, the same for every run compared.")] public long Seed { get; init; } = 1;
    [CommandOption("--best-of")] [Description("Also score best-of-N: N poems per title, the --reward-model keeps one (1: off).")]
    public int BestOf { get; init; } = 1;
    [CommandOption("--reward-model")] [Description("Reward-model run that chooses among --best-of poems (default: none; needed with --best-of).")]
    public string? Reward { get; init; }
    [CommandOption("--task")] [Description("`form` (the share of regular poems), `verse` (every rule of regulated verse and strict, over the same answers; see gptsharp verse check) or `verse-rhyme` (the same with the rhyme dictionary at hand: the poem is the answer's last turn).")]
    public string Task { get; init; } = "form";

    public override Spectre.Console.ValidationResult Validate()
    {
        if (BestOf < 1) return Spectre.Console.ValidationResult.Error($"--best-of {BestOf}: N must be >= 1.");
        if (BestOf > 1 && Reward is null) return Spectre.Console.ValidationResult.Error("--best-of needs --reward-model RUN: the reward model that chooses.");
        if (Task is not ("form" or "verse" or "verse-rhyme")) return Spectre.Console.ValidationResult.Error($"--task {Task}: expected form, verse or verse-rhyme.");
        return base.Validate();
    }
}

/// <summary><c>gptsharp form-score</c>: the share of sampled poems with a regular form, over fixed prompts and seeds.</summary>
sealed class FormScoreCommand : Command<FormScoreSettings>
{
    public override int Execute(CommandContext context, FormScoreSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        var prompts = FormScore.Prompts(s.Prompts);
        if (s.Task is "verse" or "verse-rhyme")
        {
            var verse = GptSharp.Alignment.Verse.Embedded();
            var environment = s.Task == "verse-rhyme" ? VerseEnvironment.Factory(verse) : null;
            var rules = Enum.GetValues<VerseRule>();
            var verseTable = new Table().AddColumn("run");
            foreach (var rule in rules) verseTable.AddColumn(rule.ToString());
            verseTable.AddColumn("strict");
            if (environment is not null) verseTable.AddColumn("looked up");
            EachRun(s, (name, model, tokenizer, bestOf, chooser) =>
            {
                var report = VerseScore.Measure(model, tokenizer, prompts, verse, s.Temperature, s.Seed, bestOf, chooser, environment);
                verseTable.AddRow([Markup.Escape(name), .. rules.Select(r => $"{report.RuleRates[r]:P1}"), $"{report.Strict:P1}",
                    .. environment is null ? Array.Empty<string>() : [$"{report.ToolUse:P1}"]]);
            });
            AnsiConsole.Write(verseTable);
            AnsiConsole.MarkupLine("Instruction rules (AskedLength, Acrostic, AskedRhyme) are shares of the prompts that asked them; the others of all prompts.");
            return 0;
        }
        var table = new Table().AddColumns("run", "regular poems", "share", "distinct poems", "example");
        EachRun(s, (name, model, tokenizer, bestOf, chooser) =>
        {
            var report = FormScore.Measure(model, tokenizer, prompts, s.Temperature, s.Seed, bestOf, chooser);
            var example = report.Examples.FirstOrDefault();
            table.AddRow(Markup.Escape(name), $"{report.Regular}/{report.Prompts}", $"{100 * report.Share:F1}%", $"{report.Distinct}/{report.Prompts}",
                Markup.Escape($"{example.Prompt} → {example.Poem.Replace('\n', ' ')}"));
        });
        AnsiConsole.Write(table);
        return 0;
    }

    /// <summary>Each run once as it samples, and with --best-of N once more choosing with the --reward-model: name, model,
    /// tokenizer, N and the chooser (null for N = 1).</summary>
    static void EachRun(FormScoreSettings s, Action<string, GptSharp.Models.Gpt, GptTokenizer, int, RewardFunction?> score)
    {
        foreach (string run in s.RunDir.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var (model, state) = Checkpoint.LoadModel(run);
            using (model)
            {
                var tokenizer = GptTokenizer.Load(state.Tokenizer);
                score(run, model, tokenizer, 1, null);
                if (s.BestOf <= 1) continue;
                using var reward = RewardModel.Load(s.Reward!);
                reward.eval();
                score($"{run} best-of-{s.BestOf}", model, tokenizer, s.BestOf, Rewards.FromModel(reward, tokenizer));
            }
        }
    }
}
