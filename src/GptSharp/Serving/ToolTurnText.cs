using GptSharp.Tokenization;

namespace GptSharp.Serving;

/// <summary>Streams an answer with tool turns for a terminal: text as it comes, each call and its result in brackets,
/// <c>[calculator 347 × 29 → 10063] 10063</c>.</summary>
public sealed class ToolTurnText(GptTokenizer tokenizer, Action<string> write)
{
    readonly int _call = tokenizer.SpecialId(SpecialTokens.ToolCall), _tool = tokenizer.SpecialId(SpecialTokens.Tool);
    readonly int _assistant = tokenizer.SpecialId(SpecialTokens.Assistant);
    AnswerText _text = new(tokenizer, null, write);

    public void Add(int token)
    {
        if (!tokenizer.IsSpecial(token)) { _text.Add(token); return; }
        // <|tool_call|> opens the bracket, <|tool|> starts the result, the <|assistant|> after it closes; <|end|> shows nothing.
        string mark = token == _call ? "[" : token == _tool ? " → " : token == _assistant ? "] " : "";
        if (mark.Length == 0) return;
        Finish();
        write(mark);
        _text = new AnswerText(tokenizer, null, write);
    }

    public void Finish() => _text.Finish();
}
