using GptSharp.Interop;

namespace GptSharp.Cli;

/// <summary>
/// What <c>--tokenizer</c> names on every command: a GptSharp tokenizer folder, <c>gpt2</c> or <c>cl100k_base</c>, or a
/// folder holding a Hugging Face <c>tokenizer.json</c> (a published model's), converted as <c>import hf</c> converts it.
/// </summary>
static class TokenizerReference
{
    /// <summary>The folder or name to load. A Hugging Face folder is converted first, into <paramref name="keepIn"/>
    /// when what the command writes refers to the tokenizer later (token shards), else into a temporary folder.</summary>
    public static string Resolve(string reference, string? keepIn = null)
    {
        if (!HuggingFaceTokenizer.IsHuggingFaceTokenizer(reference)) return reference;
        string folder = Directory.Exists(reference) ? reference : Path.GetDirectoryName(Path.GetFullPath(reference))!;
        string target = keepIn ?? Path.Combine(Path.GetTempPath(), "gptsharp-tokenizer-" + Guid.NewGuid().ToString("N")[..8]);
        HuggingFaceTokenizer.Import(folder, target);
        Console.Error.WriteLine($"note: {reference} holds a Hugging Face tokenizer.json; converted into {target}.");
        return target;
    }
}
