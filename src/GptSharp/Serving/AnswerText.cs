using GptSharp.Inference;
using GptSharp.Tokenization;

namespace GptSharp.Serving;

/// <summary>
/// Turns generated tokens, one at a time, into the answer's text: special tokens are skipped, text up to a stop
/// sequence is kept (the stop and what follows are not), and while streaming, text that may still turn out to be the
/// start of a stop, or half a UTF-8 character, is held back until the next token decides. A streamed answer and a
/// whole one are the same text because both are made here.
/// </summary>
public sealed class AnswerText(GptTokenizer tokenizer, IReadOnlyList<string>? stops, Action<string>? onPiece = null)
{
    readonly List<int> _tokens = [];
    readonly System.Text.StringBuilder _sent = new();
    bool _stopped;

    /// <summary>Whether a stop sequence ended the answer (later tokens add nothing).</summary>
    public bool Stopped => _stopped;

    /// <summary>The stop sequence that ended the answer, or null.</summary>
    public string? StoppedBy { get; private set; }

    /// <summary>The text handed out so far (all of it after <see cref="Finish"/>).</summary>
    public string Text => _sent.ToString();

    public void Add(int token)
    {
        if (_stopped || tokenizer.IsSpecial(token)) return;
        _tokens.Add(token);
        Emit(final: false);
    }

    /// <summary>Generation ended: hands out what was held back (unless it is cut by a stop) and returns the whole text.</summary>
    public string Finish()
    {
        Emit(final: true);
        return Text;
    }

    void Emit(bool final)
    {
        if (_stopped) return;
        string text = tokenizer.Decode(_tokens);
        int end = text.Length, stop = StopText.Find(text, stops);
        if (stop >= 0)
        {
            (end, _stopped) = (stop, true);
            StoppedBy = stops!.First(s => text.AsSpan(stop).StartsWith(s, StringComparison.Ordinal));
        }
        else if (!final)
        {
            end -= StopText.PartialMatch(text, stops);
            while (end > _sent.Length && text[end - 1] == '\uFFFD') end--; // the rest of a character may follow
        }
        if (end <= _sent.Length) return;
        string piece = text[_sent.Length..end];
        _sent.Append(piece);
        onPiece?.Invoke(piece);
    }
}
