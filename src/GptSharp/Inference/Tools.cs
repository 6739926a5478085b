using GptSharp.Tokenization;

namespace GptSharp.Inference;

/// <summary>What a tool answered: a result, or an error the model reads as text.</summary>
public sealed record ToolResult(bool Ok, string Text);

/// <summary>A tool a model may call by name; <paramref name="Run"/> takes the call's arguments as text.</summary>
public sealed record Tool(string Name, string Description, Func<string, ToolResult> Run);

/// <summary>
/// The tools offered to a model. The system turn names them (<see cref="Offer(IReadOnlyList{ChatMessage})"/>), the decoder runs a call when the
/// model writes one and feeds the answer back as a tool turn (<see cref="Interjection"/>). Whatever a call holds — an
/// unknown tool, a malformed or huge expression, a tool that throws — the model gets an error text, and decoding goes on.
/// </summary>
public sealed class ToolBox
{
    /// <summary>A tool's answer longer than this is cut (a model's context is small).</summary>
    public const int MaxResultCharacters = 200;
    /// <summary>Calls one answer may make; a further call ends the answer.</summary>
    public const int DefaultMaxCalls = 4;

    /// <summary>The sandboxed arithmetic of <see cref="Inference.Calculator"/>.</summary>
    public static Tool Calculator { get; } = new("calculator", "arithmetic: numbers, + - × /, parentheses", Inference.Calculator.Evaluate);

    public ToolBox(IReadOnlyList<Tool> tools, int maxCalls = DefaultMaxCalls)
    {
        if (tools.Count == 0) throw new ArgumentException("A tool box needs at least one tool.", nameof(tools));
        foreach (var tool in tools)
            if (tool.Name.Length == 0 || tool.Name.Any(char.IsWhiteSpace)) throw new ArgumentException($"Tool name '{tool.Name}' must be one word.", nameof(tools));
        if (tools.Select(t => t.Name).Distinct().Count() != tools.Count) throw new ArgumentException("Two tools share a name.", nameof(tools));
        if (maxCalls < 1) throw new ArgumentOutOfRangeException(nameof(maxCalls), maxCalls, "maxCalls must be >= 1.");
        Tools = tools;
        MaxCalls = maxCalls;
    }

    public IReadOnlyList<Tool> Tools { get; }
    public int MaxCalls { get; }

    /// <summary>The built-in tools by name, comma-separated (today: <c>calculator</c>).</summary>
    public static ToolBox Named(string names) => new([.. names.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(name => name switch
    {
        "calculator" => Calculator,
        _ => throw new ArgumentException($"Unknown tool '{name}': the built-in tools are: calculator.", nameof(names)),
    })]);

    /// <summary>The line a system turn carries to offer these tools; models learn to call only where they see it.</summary>
    public string SystemLine => Line(Tools.Select(t => t.Name));

    /// <summary>The conversation with the tools offered: the system turn gains <see cref="SystemLine"/> (one is added first if there is none).</summary>
    public IReadOnlyList<ChatMessage> Offer(IReadOnlyList<ChatMessage> messages) => Offer(messages, Tools.Select(t => t.Name));

    /// <summary>The conversation with tools of these names offered in its system turn (tools a client runs itself, too).</summary>
    public static IReadOnlyList<ChatMessage> Offer(IReadOnlyList<ChatMessage> messages, IEnumerable<string> names)
    {
        string line = Line(names);
        if (messages.Count > 0 && messages[0].Role == ChatRoles.System)
            return [messages[0] with { Content = messages[0].Content + "\n" + line }, .. messages.Skip(1)];
        return [new ChatMessage(ChatRoles.System, line), .. messages];
    }

    static string Line(IEnumerable<string> names) => "Tools: " + string.Join(", ", names) + ".";

    /// <summary>Runs one call; every failure is an error text for the model, never an exception.</summary>
    public ToolResult Call(ToolCall call)
    {
        var tool = Tools.FirstOrDefault(t => t.Name == call.Name);
        if (tool is null)
            return new(false, $"error: no tool named '{Cut(call.Name, 40)}'; the tools are: {string.Join(", ", Tools.Select(t => t.Name))}");
        ToolResult result;
        try { result = tool.Run(call.Arguments); }
        catch (Exception e) { result = new(false, $"error: {tool.Name} failed: {e.Message}"); }
        return result with { Text = Cut(result.Text, MaxResultCharacters) };
    }

    static string Cut(string text, int length) => text.Length <= length ? text : text[..length] + "…";

    /// <summary>
    /// What the decoder inserts after each sampled token of one answer (<see cref="BatchRow.Interject"/>): when the
    /// token is the <c>&lt;|end|&gt;</c> that closes a tool call, the call runs and the tokens of its tool turn come
    /// back — <c>&lt;|tool|&gt;</c> result <c>&lt;|end|&gt;</c> <c>&lt;|assistant|&gt;</c> — for the model to read and
    /// go on from; otherwise null. Past <see cref="MaxCalls"/> calls, a call gets no answer and the answer ends.
    /// </summary>
    public Func<IReadOnlyList<int>, int[]?> Interjection(GptTokenizer tokenizer)
    {
        var marks = ToolMarks.Of(tokenizer);
        return answer =>
        {
            if (answer.Count == 0 || answer[^1] != marks.End) return null;
            int start = marks.OpenCall(answer, answer.Count - 1);
            if (start < 0) return null;
            if (answer.Count(id => id == marks.Tool) >= MaxCalls) return null;
            var call = ToolCall.Parse(tokenizer.Decode(answer.Skip(start + 1).Take(answer.Count - 2 - start).Where(id => !tokenizer.IsSpecial(id))));
            var result = Call(call);
            return [marks.Tool, .. tokenizer.Encode(result.Text), marks.End, marks.Assistant];
        };
    }

    /// <summary>
    /// Splits an answer's tokens (as decoded, tool turns included) back into messages: assistant turns with their tool
    /// calls, and the tool turns between them.
    /// </summary>
    public static List<ChatMessage> Messages(GptTokenizer tokenizer, IReadOnlyList<int> answer)
    {
        var marks = ToolMarks.Of(tokenizer);
        string Text(IEnumerable<int> ids) => tokenizer.Decode(ids.Where(id => !tokenizer.IsSpecial(id)));
        var messages = new List<ChatMessage>();
        string role = ChatRoles.Assistant;
        var content = new List<int>();
        List<int>? call = null;
        void Close()
        {
            if (content.Count > 0 || call is not null || messages.Count == 0)
                messages.Add(new ChatMessage(role, Text(content), call is null ? null : ToolCall.Parse(Text(call))));
            content.Clear();
            call = null;
        }
        foreach (int id in answer)
        {
            if (id == marks.ToolCall && role == ChatRoles.Assistant) call = [];
            else if (id == marks.Tool) { Close(); role = ChatRoles.Tool; }
            else if (id == marks.Assistant) { Close(); role = ChatRoles.Assistant; }
            else if (id == marks.End) { }
            else (call ?? content).Add(id);
        }
        Close();
        return messages;
    }

    /// <summary>An answer's turns on one line, for reports: each call in brackets after its text, each tool turn after an
    /// arrow, turns separated by " | " (<c>[calculator 347 × 29] | → 10063 | 347 × 29 = 10063</c>).</summary>
    public static string Transcript(GptTokenizer tokenizer, IReadOnlyList<int> answer) => string.Join(" | ", Messages(tokenizer, answer)
        .Select(m => m.ToolCall is { } call ? $"{m.Content}[{call.Text}]" : m.Role == ChatRoles.Tool ? $"→ {m.Content}" : m.Content));

    /// <summary>The text of an answer's last assistant turn: what it finally says after any tool turns.</summary>
    public static string FinalText(GptTokenizer tokenizer, IReadOnlyList<int> answer)
    {
        int assistant = tokenizer.SpecialId(SpecialTokens.Assistant);
        int last = -1;
        for (int i = answer.Count - 1; i >= 0 && last < 0; i--) if (answer[i] == assistant) last = i;
        return tokenizer.Decode(answer.Skip(last + 1).Where(id => !tokenizer.IsSpecial(id)));
    }

    /// <summary>The special token ids tool use is written with (−1 where a tokenizer lacks them).</summary>
    readonly record struct ToolMarks(int ToolCall, int Tool, int End, int Assistant)
    {
        public static ToolMarks Of(GptTokenizer tokenizer)
        {
            int Id(string token) => tokenizer.Spec.SpecialTokens.TryGetValue(token, out int id) ? id : -1;
            return new(Id(SpecialTokens.ToolCall), Id(SpecialTokens.Tool), tokenizer.EndId, tokenizer.SpecialId(SpecialTokens.Assistant));
        }

        /// <summary>Where the call closed by the <c>&lt;|end|&gt;</c> at <paramref name="end"/> began, or −1 when that
        /// <c>&lt;|end|&gt;</c> closes a plain turn.</summary>
        public int OpenCall(IReadOnlyList<int> answer, int end)
        {
            if (ToolCall < 0) return -1;
            for (int i = end - 1; i >= 0; i--)
            {
                if (answer[i] == ToolCall) return i;
                if (answer[i] == End || answer[i] == Assistant || answer[i] == Tool) return -1;
            }
            return -1;
        }
    }
}
