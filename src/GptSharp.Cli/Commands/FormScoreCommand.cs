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
    [CommandOption("--best-of")] [Description("Also score best-of-N: N poems per title, the --reward model keeps one (1: off).")]
    public int BestOf { get; init; } = 1;
    [CommandOption("--reward")] [Description("Reward-model run that chooses among --best-of poems (default: none; needed with --best-of).")]
    public string? Reward { get; init; }
    [CommandOption("--task")] [Description("`form` (the share of regular poems) or `verse` (every rule of regulated verse and strict, over the same answers; see gptsharp verse check).")]
    public string Task { get; init; } = "form";

    public override Spectre.Console.ValidationResult Validate()
    {
        if (BestOf < 1) return Spectre.Console.ValidationResult.Error($"--best-of {BestOf}: N must be >= 1.");
        if (BestOf > 1 && Reward is null) return Spectre.Console.ValidationResult.Error("--best-of needs --reward RUN: the reward model that chooses.");
        if (Task is not ("form" or "verse")) return Spectre.Console.ValidationResult.Error($"--task {Task}: expected form or verse.");
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
        if (s.Task == "verse") return Verse(s, prompts);
        var table = new Table().AddColumns("run", "regular poems", "share", "distinct poems", "example");
        foreach (string run in s.RunDir.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var (model, state) = Checkpoint.LoadModel(run);
            using (model)
            {
                var tokenizer = GptTokenizer.Load(state.Tokenizer);
                void Row(string name, FormScoreReport report)
                {
                    var example = report.Examples.FirstOrDefault();
                    table.AddRow(Markup.Escape(name), $"{report.Regular}/{report.Prompts}", $"{100 * report.Share:F1}%", $"{report.Distinct}/{report.Prompts}",
                        Markup.Escape($"{example.Prompt} → {example.Poem.Replace('\n', ' ')}"));
                }
                Row(run, FormScore.Measure(model, tokenizer, prompts, s.Temperature, s.Seed));
                if (s.BestOf > 1)
                {
                    using var reward = RewardModel.Load(s.Reward!);
                    reward.eval();
                    Row($"{run} best-of-{s.BestOf}", FormScore.Measure(model, tokenizer, prompts, s.Temperature, s.Seed, s.BestOf, Rewards.FromModel(reward, tokenizer)));
                }
            }
        }
        AnsiConsole.Write(table);
        return 0;
    }

    /// <summary>The verse task: per rule the share of answers that keep it, and strict, for each run (and best-of-N).</summary>
    static int Verse(FormScoreSettings s, IReadOnlyList<string> prompts)
    {
        var verse = GptSharp.Alignment.Verse.Embedded();
        var rules = Enum.GetValues<VerseRule>();
        var table = new Table().AddColumn("run");
        foreach (var rule in rules) table.AddColumn(rule.ToString());
        table.AddColumn("strict");
        foreach (string run in s.RunDir.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var (model, state) = Checkpoint.LoadModel(run);
            using (model)
            {
                var tokenizer = GptTokenizer.Load(state.Tokenizer);
                void Row(string name, VerseScoreReport report) =>
                    table.AddRow([Markup.Escape(name), .. rules.Select(r => $"{report.RuleRates[r]:P1}"), $"{report.Strict:P1}"]);
                Row(run, VerseScore.Measure(model, tokenizer, prompts, verse, s.Temperature, s.Seed));
                if (s.BestOf > 1)
                {
                    using var reward = RewardModel.Load(s.Reward!);
                    reward.eval();
                    Row($"{run} best-of-{s.BestOf}", VerseScore.Measure(model, tokenizer, prompts, verse, s.Temperature, s.Seed, s.BestOf, Rewards.FromModel(reward, tokenizer)));
                }
            }
        }
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine("Instruction rules (AskedLength, Acrostic, AskedRhyme) are shares of the prompts that asked them; the others of all prompts.");
        return 0;
    }
}
