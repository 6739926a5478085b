using GptSharp.Inference;
using GptSharp.Inference.Structured;
using GptSharp.Tokenization;

namespace GptSharp.Serving;

/// <summary>A function a chat answer may call: its name, what it does, and its arguments' compiled schema.</summary>
public sealed record FunctionTool(string Name, string? Description, SchemaNode Arguments);

/// <summary>A tool call as an answer carries it: OpenAI's id, the function's name, its arguments as JSON text.</summary>
public sealed record FunctionCall(string Id, string Name, string Arguments)
{
    public static string NewId() => "call_" + Guid.NewGuid().ToString("N")[..24];
}

/// <summary>
/// What a chat answer must look like — free text, JSON following a schema (<see cref="Format"/>), or a call to one of
/// <see cref="Tools"/> as <see cref="ToolChoice"/> allows — and how it maps onto the model's tool-call turns. The HTTP
/// server and the in-process <see cref="GptChatClient"/> both go through it.
/// </summary>
public sealed record AnswerShape(SchemaNode? Format = null, IReadOnlyList<FunctionTool>? Tools = null,
    ToolChoiceMode ToolChoice = ToolChoiceMode.Auto, string? NamedTool = null)
{
    public static AnswerShape Free { get; } = new();

    /// <summary>Whether the answer may call a tool.</summary>
    public bool Calls => Tools is { Count: > 0 } && ToolChoice != ToolChoiceMode.None;

    /// <summary>Whether anything constrains the answer's tokens.</summary>
    public bool Constrained => Format is not null || Calls;

    /// <summary>The fewest answer tokens that surely hold a complete shaped answer (one byte per token at worst, and the end).</summary>
    public int MinTokens => Math.Max(Format?.MinBytes + 1 ?? 1,
        ToolChoice is ToolChoiceMode.Required or ToolChoiceMode.Named && Tools is { Count: > 0 } tools
            ? 2 + tools.Where(t => NamedTool is null || t.Name == NamedTool).Min(t => System.Text.Encoding.UTF8.GetByteCount(t.Name) + 1 + t.Arguments.MinBytes)
            : 1);

    /// <summary>The conversation with the tools named in its system turn, as models trained on tool turns learn to see them.</summary>
    public IReadOnlyList<ChatMessage> Offer(IReadOnlyList<ChatMessage> messages) => Calls ? ToolBox.Offer(messages, Tools!.Select(t => t.Name)) : messages;

    /// <summary>Whether answering needs the tool-call tokens: tools offered, or tool turns in the conversation.</summary>
    public bool NeedsToolTokens(IReadOnlyList<ChatMessage> messages) => Calls || messages.Any(m => m.ToolCall is not null || m.Role == ChatRoles.Tool);

    /// <summary>A fresh constraint for one answer, or null when nothing is constrained.</summary>
    public ITokenConstraint? NewConstraint(ServedModel model)
    {
        if (!Constrained) return null;
        var tokenizer = model.Tokenizer;
        var content = Format is null ? null : new GrammarConstraint(JsonState.Start(Format), model.Vocabulary, tokenizer.TokenBytes, [tokenizer.EndId]);
        if (!Calls) return content;
        var offered = Tools!.Where(t => ToolChoice != ToolChoiceMode.Named || t.Name == NamedTool).Select(t => (t.Name, t.Arguments)).ToList();
        return new ToolCallConstraint(model.Vocabulary, tokenizer.TokenBytes, tokenizer.SpecialId(SpecialTokens.ToolCall), tokenizer.EndId,
            offered, ToolChoice, content);
    }

    /// <summary>Where the answer's tool call begins (its <c>&lt;|tool_call|&gt;</c> token), or −1.</summary>
    public int CallStart(GptTokenizer tokenizer, IReadOnlyList<int> tokens)
    {
        if (!Calls) return -1;
        int call = tokenizer.SpecialId(SpecialTokens.ToolCall);
        for (int i = 0; i < tokens.Count; i++) if (tokens[i] == call) return i;
        return -1;
    }

    /// <summary>The tool call an answer's tokens end with, or null when it makes none (or was cut before its end).</summary>
    public FunctionCall? ReadCall(GptTokenizer tokenizer, IReadOnlyList<int> tokens)
    {
        int start = CallStart(tokenizer, tokens);
        if (start < 0) return null;
        var body = tokens.Skip(start + 1).TakeWhile(t => t != tokenizer.EndId).Where(t => !tokenizer.IsSpecial(t)).ToList();
        var call = ToolCall.Parse(tokenizer.Decode(body));
        return new FunctionCall(FunctionCall.NewId(), call.Name, call.Arguments.Length == 0 ? "{}" : call.Arguments);
    }

    /// <summary>
    /// Maps an OpenAI-style conversation onto the template's turns: an assistant message with several tool calls becomes
    /// one call per turn, each followed by the tool message that answers it (matched by id), so the model reads
    /// call → result → call → result as it was trained.
    /// </summary>
    public static List<ChatMessage> Turns(IEnumerable<(ChatMessage Message, IReadOnlyList<FunctionCall> Calls, string? AnswersCall)> messages)
    {
        messages = [.. messages];
        var answers = new Dictionary<string, ChatMessage>();
        foreach (var (message, _, answersCall) in messages)
            if (answersCall is not null && !answers.TryAdd(answersCall, message))
                throw new ArgumentException($"Two tool results answer call '{answersCall}'.", nameof(messages));
        var unanswered = answers.Keys.ToHashSet();
        var turns = new List<ChatMessage>();
        foreach (var (message, calls, answersCall) in messages)
        {
            if (answersCall is not null) continue;   // placed right after its call
            if (calls.Count == 0) { turns.Add(message); continue; }
            for (int i = 0; i < calls.Count; i++)
            {
                turns.Add(new ChatMessage(ChatRoles.Assistant, i == 0 ? message.Content : "", new ToolCall(calls[i].Name, calls[i].Arguments)));
                if (answers.TryGetValue(calls[i].Id, out var answer)) { turns.Add(answer); unanswered.Remove(calls[i].Id); }
            }
        }
        if (unanswered.Count > 0)
            throw new ArgumentException($"A tool result answers call '{unanswered.First()}', which no assistant message made.", nameof(messages));
        return turns;
    }
}
