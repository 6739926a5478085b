using GptSharp.Alignment;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Tokenization;
using GptSharp.Training;

namespace GptSharp.Serving;

/// <summary>A run's model loaded for serving under a name: weights (safetensors), tokenizer and chat template.</summary>
public sealed class ServedModel : IDisposable
{
    ServedModel(string name, string runDirectory, Gpt model, GptTokenizer tokenizer)
    {
        (Name, RunDirectory, Model, Tokenizer) = (name, runDirectory, model, tokenizer);
        Template = new ChatTemplate(tokenizer);
        Created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        model.eval();
    }

    public string Name { get; }
    public string RunDirectory { get; }
    public Gpt Model { get; }
    public GptTokenizer Tokenizer { get; }
    public ChatTemplate Template { get; }
    public long Created { get; }
    public int ContextLength => Model.Config.ContextLength;

    /// <summary>Loads <c>name=folder</c>, or a folder named by its last path component (a PPO run's <c>policy</c> folder by its run's).</summary>
    public static ServedModel Load(string spec)
    {
        int equals = spec.IndexOf('=');
        string path = equals > 0 ? spec[(equals + 1)..] : spec;
        string full = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
        string name = equals > 0 ? spec[..equals]
            : Path.GetFileName(full) == PpoRun.PolicyFolder ? Path.GetFileName(Path.GetDirectoryName(full)!) : Path.GetFileName(full);
        var (model, state) = Checkpoint.LoadModel(path);
        return new ServedModel(name, path, model, GptTokenizer.Load(state.Tokenizer));
    }

    /// <summary>
    /// Generates on a worker thread and hands out text as it grows: <paramref name="onText"/> gets each new piece
    /// (never half a UTF-8 character). Cancelling (e.g. the client went away) stops generation at the next token.
    /// </summary>
    public Generation Generate(int[] prompt, SamplingOptions options, Action<string>? onText, CancellationToken cancellation)
    {
        var text = onText is null ? null : TextStream(onText);
        return new TokenGenerator(Model).Generate([prompt], options, (_, token) => text?.Invoke(token), Decode, cancellation)[0];
    }

    /// <summary>Decodes generated text without special tokens (for stop sequences).</summary>
    public string Decode(IEnumerable<int> ids) => Tokenizer.Decode(ids.Where(t => !Tokenizer.IsSpecial(t)));

    /// <summary>
    /// Turns tokens, one at a time, into pieces of text for <paramref name="onText"/>: special tokens are skipped and a
    /// piece is held back while it ends in half a UTF-8 character.
    /// </summary>
    public Action<int> TextStream(Action<string> onText)
    {
        var produced = new List<int>();
        string sent = "";
        return token =>
        {
            if (Tokenizer.IsSpecial(token)) return;
            produced.Add(token);
            string text = Tokenizer.Decode(produced);
            if (text.EndsWith('\uFFFD') || text.Length <= sent.Length) return; // wait for the rest of a character
            onText(text[sent.Length..]);
            sent = text;
        };
    }

    /// <summary>The text of generated tokens without special tokens, with any stop sequence cut off.</summary>
    public string Text(Generation generation, IReadOnlyList<string>? stops)
    {
        string text = Tokenizer.Decode(generation.Tokens.Where(t => !Tokenizer.IsSpecial(t)));
        foreach (string stop in stops ?? [])
            if (text.EndsWith(stop, StringComparison.Ordinal)) return text[..^stop.Length];
        return text;
    }

    public void Dispose() => Model.Dispose();
}
