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

/// <summary>The text of one tool call: a tool's name, a space, then its arguments as JSON following the tool's schema.</summary>
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

    public static ToolCallState Start(IEnumerable<(string Name, SchemaNode Arguments)> tools) =>
        new([.. tools.Select(t => (System.Text.Encoding.UTF8.GetBytes(t.Name + " "), t.Arguments))], 0, null);

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
/// A chat answer with tools offered: text (itself constrained when a response format is set), or a
/// <c>&lt;|tool_call|&gt;</c> whose name is one of the tools and whose arguments follow that tool's schema, closed by
/// <c>&lt;|end|&gt;</c>. <c>none</c> forbids the call, <c>required</c> and a named tool make the answer start with it.
/// </summary>
public sealed class ToolCallConstraint(VocabularyTrie vocabulary, Func<int, byte[]> tokenBytes, int toolCallToken, int endToken,
    IReadOnlyList<(string Name, SchemaNode Arguments)> tools, ToolChoiceMode mode, GrammarConstraint? content) : ITokenConstraint
{
    bool _started;
    GrammarConstraint? _call;

    public bool[]? Allowed(int tokensLeft)
    {
        if (_call is not null) return _call.Allowed(tokensLeft);
        bool mayCall = mode != ToolChoiceMode.None && (!_started || content is null);
        if (!_started && mode is ToolChoiceMode.Required or ToolChoiceMode.Named)
        {
            var only = new bool[vocabulary.VocabularySize];
            only[toolCallToken] = true;
            return only;
        }
        var allowed = content?.Allowed(tokensLeft);
        if (allowed is null)
        {
            if (mayCall) return null;
            allowed = new bool[vocabulary.VocabularySize];
            Array.Fill(allowed, true);
        }
        allowed[toolCallToken] = mayCall;
        return allowed;
    }

    public void Accept(int token)
    {
        if (_call is not null) { _call.Accept(token); return; }
        if (token == toolCallToken && mode != ToolChoiceMode.None && (!_started || content is null))
        {
            _call = new GrammarConstraint(ToolCallState.Start(tools), vocabulary, tokenBytes, [endToken]);
            return;
        }
        _started = true;
        content?.Accept(token);
    }
}
