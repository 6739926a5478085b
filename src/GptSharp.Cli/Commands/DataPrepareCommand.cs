using System.ComponentModel;
using GptSharp.Data;
using GptSharp.Tokenization;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class DataPrepareSettings : CommonSettings
{
    [CommandOption("--corpus")]
    [Description("Comma-separated embedded corpus names or files (default: tang).")]
    public string Corpus { get; init; } = "tang";

    [CommandOption("-t|--tokenizer")]
    [Description("Tokenizer folder, or gpt2 / cl100k_base.")]
    public string Tokenizer { get; init; } = "runs/tokenizer";

    [CommandOption("--val-fraction")]
    [Description("Share of documents held out for validation.")]
    public double ValFraction { get; init; } = 0.02;

    [CommandOption("--seed")] [Description("Chooses which documents are held out.")]
    public long Seed { get; init; } = 1337;

    [CommandOption("--max-documents")]
    [Description("Use at most this many documents per corpus (0: all).")]
    public int MaxDocuments { get; init; }

    [CommandOption("-o|--out")]
    [Description("Output folder for train.bin, val.bin and meta.json.")]
    public string Out { get; init; } = "runs/data";
}

/// <summary><c>gptsharp data prepare</c>.</summary>
sealed class DataPrepareCommand : Command<DataPrepareSettings>
{
    public override int Execute(CommandContext context, DataPrepareSettings settings, CancellationToken cancellation)
    {
        // A Hugging Face tokenizer is converted beside the shards: meta.json names it, and pretraining copies it.
        string reference = TokenizerReference.Resolve(settings.Tokenizer, keepIn: Path.Combine(settings.Out, "tokenizer"));
        var tokenizer = GptTokenizer.Load(reference);
        var corpora = settings.Corpus.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var options = new ShardOptions(corpora, settings.ValFraction, settings.Seed, settings.MaxDocuments);
        var summary = ProgressDisplay.Run("Tokenizing", double.NaN, "docs", settings.Quiet,
            report => ShardBuilder.Build(tokenizer, Path.GetFullPath(reference) is var p && Directory.Exists(p) ? p : reference, options, settings.Out, n => report(n)));
        AnsiConsole.MarkupLine($"train: {summary.TrainDocuments:N0} documents, {summary.TrainTokens:N0} tokens; val: {summary.ValDocuments:N0} documents, {summary.ValTokens:N0} tokens; " +
                               $"{summary.BytesPerToken:F2} bytes/token; {summary.Seconds:F1} s.");
        AnsiConsole.MarkupLine($"Wrote {Markup.Escape(settings.Out)}/{{train.bin, val.bin, meta.json}}.");
        return 0;
    }
}
