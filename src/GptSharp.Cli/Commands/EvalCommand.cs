using GptSharp.Runtime;
using System.ComponentModel;
using GptSharp.Evaluation;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class EvalSettings : CommonSettings
{
    [CommandOption("-r|--run-dir")] [Description("Runs to evaluate (base, SFT, PPO policy, ...), comma-separated.")]
    public string RunDir { get; init; } = "runs/pretrain";
    [CommandOption("--tasks")] [Description("Built-in tasks (next-line, author, form, sotu-completion, spam) or .jsonl task files, comma-separated.")]
    public string Tasks { get; init; } = string.Join(",", BuiltInTasks.Names);
    [CommandOption("--shots")] [Description("Numbers of in-context examples, comma-separated.")]
    public string Shots { get; init; } = "0,1,2,4,8";
    [CommandOption("--items")] [Description("Held-out items per built-in task.")]
    public int Items { get; init; } = 200;
    [CommandOption("--corpora")] [Description("Embedded corpora to score in bits per byte on their held-out documents; empty for none.")]
    public string Corpora { get; init; } = string.Join(",", GptSharp.Data.Corpus.EmbeddedNames);
    [CommandOption("--seed")] [Description("Chooses the few-shot examples of each item.")] public long Seed { get; init; }
}

/// <summary><c>gptsharp eval</c>: zero- and few-shot accuracy per task per k, and bits per byte per corpus.</summary>
sealed class EvalCommand : Command<EvalSettings>
{
    public override int Execute(CommandContext context, EvalSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        static string[] List(string csv) => csv.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        int[] shots = [.. List(s.Shots).Select(k => int.TryParse(k, out int v) && v >= 0 ? v : throw new ArgumentException($"--shots: '{k}' is not a number of examples."))];
        foreach (string run in List(s.RunDir))
        {
            var report = ProgressDisplay.Run($"eval {run}", double.NaN, "scores", s.Quiet, (Action<double, string?> progress) =>
            {
                int done = 0;
                return EvalRun.Execute(run, List(s.Tasks), shots, List(s.Corpora), s.Items, s.Seed,
                    onScore: score => progress(++done, $"{score.Task} k={score.Shots}: {score.Accuracy:P1}"));
            });
            var table = new Table().Title(Markup.Escape(run)).AddColumn("task").AddColumn("chance");
            foreach (int k in shots) table.AddColumn($"{k}-shot");
            foreach (var group in report.Tasks.GroupBy(t => t.Task))
                table.AddRow([group.Key, $"{group.First().Chance:P0}", .. group.Select(t => $"{t.Accuracy:P1} ({t.NormalizedAccuracy:P1})")]);
            AnsiConsole.Write(table);
            AnsiConsole.MarkupLine("[grey]accuracy by summed log-likelihood (by log-likelihood per token); generative tasks: exact match[/]");
            foreach (var corpus in report.Corpora)
                AnsiConsole.MarkupLine($"{corpus.Corpus}: {corpus.BitsPerByte:F3} bits/byte, perplexity {corpus.Perplexity:F1} over {corpus.Tokens:N0} held-out tokens");
        }
        return 0;
    }
}
