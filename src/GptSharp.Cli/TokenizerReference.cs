using GptSharp.Tokenization;
using GptSharp.Interop;

namespace GptSharp.Cli;

/// <summary>
/// What <c>--tokenizer</c> names on every command: a GptSharp tokenizer folder, <c>gpt2</c> or <c>cl100k_base</c>, or a
/// folder holding a Hugging Face <c>tokenizer.json</c> (a published model's), converted as <c>import hf</c> converts it.
/// </summary>
static class TokenizerReference
{
    /// <summary>The folder or name to load; a Hugging Face folder is converted into <paramref name="keepIn"/> first, for
    /// commands whose output refers to the tokenizer later (token shards, a BERT run).</summary>
    public static string Resolve(string reference, string keepIn)
    {
        if (!GptTokenizer.IsHuggingFaceFormat(reference)) return reference;
        Convert(reference, keepIn, kept: true);
        return keepIn;
    }

    /// <summary>Runs <paramref name="use"/> on the folder or name to load; a Hugging Face folder is converted into a
    /// temporary folder that is removed once <paramref name="use"/> returns (it loads or copies what it needs).</summary>
    public static T Use<T>(string reference, Func<string, T> use)
    {
        if (!GptTokenizer.IsHuggingFaceFormat(reference)) return use(reference);
        string temporary = Path.Combine(Path.GetTempPath(), "gptsharp-tokenizer-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            Convert(reference, temporary, kept: false);
            return use(temporary);
        }
        finally
        {
            if (Directory.Exists(temporary)) Directory.Delete(temporary, recursive: true);
        }
    }

    /// <summary>Converts the Hugging Face tokenizer into <paramref name="target"/>, saying so (and where, when the folder is kept).</summary>
    static void Convert(string reference, string target, bool kept)
    {
        string folder = Directory.Exists(reference) ? reference : Path.GetDirectoryName(Path.GetFullPath(reference))!;
        HuggingFaceTokenizer.Import(folder, target);
        Console.Error.WriteLine($"note: {reference} holds a Hugging Face tokenizer.json; converted{(kept ? $" into {target}" : "")}.");
    }
}
