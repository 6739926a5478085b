using System.ComponentModel;
using System.Text.Json;
using GptSharp.Data;
using GptSharp.Interop;
using GptSharp.Tokenization;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class SpeedrunSettings : CommonSettings
{
    [CommandOption("-r|--run-dir")]
    [Description("Folder for every stage's output.")]
    public string RunDir { get; init; } = "runs/speedrun";

    [CommandOption("--vocab-size")]
    public int VocabSize { get; init; } = 8192;

    [CommandOption("--from")]
    [Description("Rerun from this stage on (tokenizer, data), discarding its done-marker and those after it.")]
    public string? From { get; init; }
}

/// <summary>
/// <c>gptsharp speedrun</c>: the main job, stage by stage on the embedded data. Each stage writes <c>done.json</c> into
/// its folder when it finishes; a rerun skips finished stages.
/// </summary>
sealed class SpeedrunCommand : Command<SpeedrunSettings>
{
    static readonly string[] Stages = ["tokenizer", "data"];

    public override int Execute(CommandContext context, SpeedrunSettings settings, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(settings.Threads);
        if (settings.From is not null)
        {
            int from = Array.IndexOf(Stages, settings.From);
            if (from < 0) throw new ArgumentException($"--from {settings.From}: unknown stage; stages are {string.Join(", ", Stages)}.");
            foreach (string stage in Stages[from..]) File.Delete(DoneMarker(settings, stage));
        }

        string tokenizerDir = Path.Combine(settings.RunDir, "tokenizer");
        RunStage(settings, "tokenizer", () =>
        {
            // Chinese poetry and English prose, so one vocabulary serves every later stage.
            var texts = new[] { "tang", "songci", "sotu", "brown", "moby-dick" }.SelectMany(Corpus.Read).Select(d => d.Text).ToList();
            var options = new BpeTrainingOptions(settings.VocabSize);
            var result = ProgressDisplay.Run("tokenizer", options.VocabSize - 256 - SpecialTokens.All.Count, "merges", settings.Quiet,
                report => BpeTrainer.Train(texts, options, (done, _) => { if (done % 64 == 0) report(done); }));
            var spec = GptTokenizer.Save(result, "speedrun", tokenizerDir);
            return new { spec.VocabSize, result.MergeCount, inputMegabytes = result.InputBytes / 1e6, seconds = result.Elapsed.TotalSeconds };
        });

        RunStage(settings, "data", () =>
        {
            var tokenizer = GptTokenizer.Load(tokenizerDir);
            var summary = ProgressDisplay.Run("data", double.NaN, "docs", settings.Quiet,
                report => ShardBuilder.Build(tokenizer, Path.GetFullPath(tokenizerDir), new ShardOptions(["tang"]), Path.Combine(settings.RunDir, "data"), n => report(n)));
            return summary;
        });

        AnsiConsole.MarkupLine($"[green]speedrun finished[/]: {Markup.Escape(Path.GetFullPath(settings.RunDir))}");
        return 0;
    }

    static string DoneMarker(SpeedrunSettings settings, string stage) => Path.Combine(settings.RunDir, stage, "done.json");

    static void RunStage<T>(SpeedrunSettings settings, string stage, Func<T> run)
    {
        string marker = DoneMarker(settings, stage);
        if (File.Exists(marker))
        {
            AnsiConsole.MarkupLine($"[grey]{stage}: done earlier ({Markup.Escape(marker)}), skipped[/]");
            return;
        }
        var watch = System.Diagnostics.Stopwatch.StartNew();
        T outputs = run();
        var record = new { stage, finishedUtc = DateTime.UtcNow, seconds = Math.Round(watch.Elapsed.TotalSeconds, 2), outputs };
        AtomicFile.WriteAllText(marker, JsonSerializer.Serialize(record, new JsonSerializerOptions { WriteIndented = true }));
        AnsiConsole.MarkupLine($"{stage}: done in {watch.Elapsed.TotalSeconds:F1} s");
    }
}
