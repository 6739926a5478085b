using System.ComponentModel;
using GptSharp.Data;
using GptSharp.Tokenization;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class TokenizerTrainSettings : CommonSettings
{
    [CommandOption("--corpus")]
    [Description("Comma-separated embedded corpus names or files (default: tang,sotu,brown).")]
    public string Corpus { get; init; } = "tang,sotu,brown";

    [CommandOption("--vocab-size")]
    [Description("Total ids including 256 bytes and the special tokens.")]
    public int VocabSize { get; init; } = 8192;

    [CommandOption("--pattern")]
    [Description("Pre-tokenizer: gpt4-cjk (default; one piece per CJK character), gpt4, gpt2, or a regex.")]
    public string Pattern { get; init; } = "gpt4-cjk";

    [CommandOption("--max-documents")]
    [Description("Use at most this many documents per corpus (0: all).")]
    public int MaxDocuments { get; init; }

    [CommandOption("-o|--out")]
    [Description("Output folder for tokenizer.tiktoken and tokenizer.json.")]
    public string Out { get; init; } = "runs/tokenizer";
}

/// <summary><c>gptsharp tokenizer train</c>.</summary>
sealed class TokenizerTrainCommand : Command<TokenizerTrainSettings>
{
    public override int Execute(CommandContext context, TokenizerTrainSettings settings, CancellationToken cancellation)
    {
        var options = new BpeTrainingOptions(settings.VocabSize, settings.Pattern);
        options.Validate();
        var corpora = settings.Corpus.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var texts = corpora.SelectMany(c => settings.MaxDocuments > 0 ? Corpus.Read(c).Take(settings.MaxDocuments) : Corpus.Read(c)).Select(d => d.Text).ToList();
        var result = ProgressDisplay.Run("BPE merges", options.VocabSize - 256 - SpecialTokens.All.Count, "merges", settings.Quiet,
            report => BpeTrainer.Train(texts, options, (done, _) => { if (done % 64 == 0) report(done); }));
        var spec = GptTokenizer.Save(result, string.Join("+", corpora), settings.Out);
        AnsiConsole.MarkupLine($"Trained {result.MergeCount} merges on {result.InputBytes / 1e6:F1} MB ({result.UniquePieces:N0} unique pieces) in {result.Elapsed.TotalSeconds:F1} s " +
                               $"({result.InputBytes / 1e6 / result.Elapsed.TotalSeconds:F2} MB/s); vocab size {spec.VocabSize}.");
        if (spec.VocabSize < settings.VocabSize)
            AnsiConsole.MarkupLine($"[yellow]note:[/] the corpus ran out of pairs seen twice; vocab is {spec.VocabSize}, not {settings.VocabSize}.");
        AnsiConsole.MarkupLine($"Wrote {Markup.Escape(Path.Combine(settings.Out, GptTokenizer.RankFileName))} and {Markup.Escape(GptTokenizer.SpecFileName)}.");
        return 0;
    }
}

class TokenizerSettings : CommonSettings
{
    [CommandOption("-t|--tokenizer")]
    [Description("Tokenizer folder, or gpt2 / cl100k_base.")]
    public string Tokenizer { get; init; } = "runs/tokenizer";
}

sealed class TokenizerEncodeSettings : TokenizerSettings
{
    [CommandOption("--text")]
    [Description("Text to encode (default: read standard input).")]
    public string? Text { get; init; }

    [CommandOption("--allow-special")]
    [Description("Turn special-token strings such as <|bos|> into their ids.")]
    public bool AllowSpecial { get; init; }
}

/// <summary><c>gptsharp tokenizer encode</c>.</summary>
sealed class TokenizerEncodeCommand : Command<TokenizerEncodeSettings>
{
    public override int Execute(CommandContext context, TokenizerEncodeSettings settings, CancellationToken cancellation)
    {
        var tokenizer = TokenizerReference.Use(settings.Tokenizer, GptTokenizer.Load);
        string text = settings.Text ?? Console.In.ReadToEnd();
        int[] ids = settings.AllowSpecial ? tokenizer.EncodeWithSpecialTokens(text) : tokenizer.Encode(text);
        Console.WriteLine(string.Join(' ', ids));
        if (!settings.Quiet)
        {
            var pieces = ids.Select(id => tokenizer.IsSpecial(id) ? tokenizer.Decode([id]) : System.Text.Encoding.UTF8.GetString(tokenizer.TokenBytes(id)));
            Console.Error.WriteLine($"{ids.Length} tokens, {System.Text.Encoding.UTF8.GetByteCount(text)} bytes: {string.Join(" | ", pieces)}");
        }
        return 0;
    }
}

sealed class TokenizerDecodeSettings : TokenizerSettings
{
    [CommandOption("--ids")]
    [Description("Token ids separated by spaces or commas (default: read standard input).")]
    public string? Ids { get; init; }
}

/// <summary><c>gptsharp tokenizer decode</c>.</summary>
sealed class TokenizerDecodeCommand : Command<TokenizerDecodeSettings>
{
    public override int Execute(CommandContext context, TokenizerDecodeSettings settings, CancellationToken cancellation)
    {
        var tokenizer = TokenizerReference.Use(settings.Tokenizer, GptTokenizer.Load);
        string raw = settings.Ids ?? Console.In.ReadToEnd();
        var ids = raw.Split([' ', ',', '\n', '\t', '\r'], StringSplitOptions.RemoveEmptyEntries)
            .Select((s, i) => int.TryParse(s, out int id) ? id : throw new FormatException($"--ids: item {i + 1} ('{s}') is not an integer token id."))
            .ToArray();
        Console.WriteLine(tokenizer.Decode(ids));
        return 0;
    }
}
