namespace GptSharp.Inference.Structured;

/// <summary>
/// Masks each step to the tokens whose bytes continue a grammar (<see cref="IByteState"/>) and still leave room to
/// complete it: a token is allowed only when the shortest completion after it fits in the tokens left (each byte is at
/// most one token in a byte-level vocabulary), so an answer closes its JSON before the length limit instead of being cut.
/// Once the text is complete, the end tokens are allowed (and, for a finished text that could not go on, only they).
/// </summary>
public sealed class GrammarConstraint(IByteState start, VocabularyTrie vocabulary, Func<int, byte[]> tokenBytes, IReadOnlyCollection<int> endTokens, int reserve = 1)
    : ITokenConstraint
{
    IByteState _state = start;

    /// <summary>Whether the text so far is complete (may end here).</summary>
    public bool Complete => _state.Remaining == 0;
    /// <summary>Whether an end token was produced.</summary>
    public bool Ended { get; private set; }

    public bool[]? Allowed(int tokensLeft)
    {
        var allowed = new bool[vocabulary.VocabularySize];
        if (!Ended)
        {
            // Tokens after this one, keeping `reserve` of them for the end token(s).
            int budget = tokensLeft - 1 - reserve;
            int closest = int.MaxValue;
            var fallback = new List<int>();
            bool any = false;
            vocabulary.Walk(_state, (token, next) =>
            {
                if (next.Remaining <= budget) { allowed[token] = true; any = true; }
                if (next.Remaining < closest) { closest = next.Remaining; fallback.Clear(); }
                if (next.Remaining == closest) fallback.Add(token);
            });
            // Too few tokens left to finish whatever comes: take the tokens that come closest (the answer will be cut).
            if (!any && !Complete) foreach (int token in fallback) allowed[token] = true;
        }
        if (Complete || Ended) foreach (int token in endTokens) allowed[token] = true;
        return allowed;
    }

    public void Accept(int token)
    {
        if (Ended) return;
        if (endTokens.Contains(token)) { Ended = true; return; }
        foreach (byte b in tokenBytes(token))
            _state = _state.Feed(b) ?? throw new InvalidOperationException($"Token {token} does not continue the constrained text.");
    }
}

/// <summary>A text followed by fixed bytes (a tool call's closing <c>}</c> after its arguments).</summary>
public sealed class SuffixedState(IByteState inner, byte[] suffix, int position = 0) : IByteState
{
    public int Remaining { get; } = inner.Remaining + suffix.Length - position;

    public IByteState? Feed(byte b)
    {
        if (position == 0 && inner.Feed(b) is { } next) return new SuffixedState(next, suffix, 0);
        return inner.Remaining == 0 && position < suffix.Length && suffix[position] == b ? new SuffixedState(inner, suffix, position + 1) : null;
    }
}

/// <summary>The text of one tool call: a tool's name (in the text before its arguments), then its arguments as JSON following the tool's schema.</summary>
public sealed class ToolCallState : IByteState
{
    readonly IReadOnlyList<(byte[] Prefix, SchemaNode Arguments)> _tools;
    readonly int _position;
    readonly JsonState? _arguments;

    ToolCallState(IReadOnlyList<(byte[] Prefix, SchemaNode Arguments)> tools, int position, JsonState? arguments)
    {
        (_tools, _position, _arguments) = (tools, position, arguments);
        Remaining = arguments?.Remaining ?? tools.Min(t => ArrayNode.Add(t.Prefix.Length - position, t.Arguments.MinBytes));
    }

    /// <param name="before">The text before a tool's arguments, which names it (default GptSharp's: the name and a space); it must end
    /// after the name with a character no name holds, so that a finished prefix names one tool.</param>
    public static ToolCallState Start(IEnumerable<(string Name, SchemaNode Arguments)> tools, Func<string, string>? before = null) =>
        new([.. tools.Select(t => (System.Text.Encoding.UTF8.GetBytes((before ?? (name => name + " "))(t.Name)), t.Arguments))], 0, null);

    public int Remaining { get; }

    public IByteState? Feed(byte b)
    {
        if (_arguments is not null) return _arguments.Feed(b) is { } next ? new ToolCallState(_tools, _position, next) : null;
        var matching = _tools.Where(t => t.Prefix[_position] == b).ToList();
        if (matching.Count == 0) return null;
        // Names hold no space, so the tool whose name-and-space this byte completes is the only match left.
        return matching.Count == 1 && matching[0].Prefix.Length == _position + 1
            ? new ToolCallState(matching, _position + 1, JsonState.Start(matching[0].Arguments))
            : new ToolCallState(matching, _position + 1, null);
    }
}

/// <summary>How a chat answer may use the offered tools (OpenAI's <c>tool_choice</c>).</summary>
public enum ToolChoiceMode { Auto, None, Required, Named }

/// <summary>
/// A chat answer with tools offered: text (itself constrained when a response format is set), or a call in the model's
/// format (<see cref="GptSharp.Tokenization.ToolCallSyntax"/>) — its opening token, the text naming one of the tools, arguments
/// following that tool's schema, the text and token that close it — then the end of the turn. <c>none</c> forbids the call;
/// <c>required</c> and a named tool make the answer start with it. A format whose call has no opening token (Llama 3.1's
/// JSON) is constrained only when the call is required.
/// </summary>
public sealed class ToolCallConstraint(VocabularyTrie vocabulary, Func<int, byte[]> tokenBytes, GptSharp.Tokenization.ToolCallSyntax syntax, int endToken,
    IReadOnlyList<(string Name, SchemaNode Arguments)> tools, ToolChoiceMode mode, GrammarConstraint? content) : ITokenConstraint
{
    bool _started, _closed;
    GrammarConstraint? _call;
    bool Forced => mode is ToolChoiceMode.Required or ToolChoiceMode.Named;

    GrammarConstraint NewCall() => new(new SuffixedState(ToolCallState.Start(tools, syntax.Before), System.Text.Encoding.UTF8.GetBytes(syntax.After)),
        vocabulary, tokenBytes, [syntax.CloseToken >= 0 ? syntax.CloseToken : endToken], reserve: syntax.CloseToken >= 0 ? 2 : 1);

    public bool[]? Allowed(int tokensLeft)
    {
        if (_closed) return Only(endToken);
        StartBareCall();
        if (_call is not null) return _call.Allowed(tokensLeft);
        if (!_started && Forced) return Only(syntax.OpenToken);
        bool mayCall = mode != ToolChoiceMode.None && syntax.OpenToken >= 0 && (!_started || content is null);
        var allowed = content?.Allowed(tokensLeft);
        if (allowed is null)
        {
            if (mayCall || syntax.OpenToken < 0) return null;
            allowed = new bool[vocabulary.VocabularySize];
            Array.Fill(allowed, true);
        }
        if (syntax.OpenToken >= 0) allowed[syntax.OpenToken] = mayCall;
        return allowed;
    }

    bool[] Only(int token)
    {
        var only = new bool[vocabulary.VocabularySize];
        only[token] = true;
        return only;
    }

    /// <summary>A required call in a format without an opening token is the whole answer: it starts with the first token.</summary>
    void StartBareCall()
    {
        if (_call is null && !_started && Forced && syntax.OpenToken < 0) _call = NewCall();
    }

    public void Accept(int token)
    {
        if (_closed) return;
        StartBareCall();
        if (_call is not null)
        {
            if (token == syntax.CloseToken && syntax.CloseToken >= 0) { _closed = true; return; }
            _call.Accept(token);
            return;
        }
        if (syntax.OpenToken >= 0 && token == syntax.OpenToken && mode != ToolChoiceMode.None && (!_started || content is null))
        {
            _call = NewCall();
            return;
        }
        _started = true;
        content?.Accept(token);
    }
}
