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
}

/// <summary><c>gptsharp form-score</c>: the share of sampled poems with a regular form, over fixed prompts and seeds.</summary>
sealed class FormScoreCommand : Command<FormScoreSettings>
{
    public override int Execute(CommandContext context, FormScoreSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        var prompts = FormScore.Prompts(s.Prompts);
        var table = new Table().AddColumns("run", "regular poems", "share", "example");
        foreach (string run in s.RunDir.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var (model, state) = Checkpoint.LoadModel(run);
            using (model)
            {
                var report = FormScore.Measure(model, GptTokenizer.Load(state.Tokenizer), prompts, s.Temperature, s.Seed);
                var example = report.Examples.FirstOrDefault();
                table.AddRow(Markup.Escape(run), $"{report.Regular}/{report.Prompts}", $"{100 * report.Share:F1}%",
                    Markup.Escape($"{example.Prompt} → {example.Poem.Replace('\n', ' ')}"));
            }
        }
        AnsiConsole.Write(table);
        return 0;
    }
}
