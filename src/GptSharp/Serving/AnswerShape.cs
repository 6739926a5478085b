using GptSharp.Inference;
using GptSharp.Inference.Structured;
using GptSharp.Tokenization;

namespace GptSharp.Serving;

/// <summary>A function a chat answer may call: its name, what it does, and its arguments' compiled schema; <paramref name="Parameters"/>
/// the schema as given, written into the prompt of a model family whose template lists tool definitions.</summary>
public sealed record FunctionTool(string Name, string? Description, SchemaNode Arguments, System.Text.Json.JsonElement? Parameters = null)
{
    /// <summary>The tool as OpenAI's function definition, the shape chat templates read: <c>{"type": "function", "function": {"name", "description", "parameters"}}</c>.</summary>
    public System.Text.Json.JsonElement Definition()
    {
        var function = new System.Text.Json.Nodes.JsonObject { ["name"] = Name };
        if (Description is not null) function["description"] = Description;
        function["parameters"] = Parameters is { } p ? System.Text.Json.Nodes.JsonNode.Parse(p.GetRawText()) : new System.Text.Json.Nodes.JsonObject { ["type"] = "object", ["properties"] = new System.Text.Json.Nodes.JsonObject() };
        return System.Text.Json.JsonSerializer.SerializeToElement(new System.Text.Json.Nodes.JsonObject { ["type"] = "function", ["function"] = function });
    }
}

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

    /// <summary>The fewest answer tokens that surely hold a complete shaped answer in a tokenizer's call syntax (one byte per token at worst, and the end).</summary>
    public int MinTokens(GptTokenizer tokenizer)
    {
        var syntax = ToolCallSyntax.For(tokenizer);
        return Math.Max(Format?.MinBytes + 1 ?? 1,
            ToolChoice is ToolChoiceMode.Required or ToolChoiceMode.Named && Tools is { Count: > 0 } tools && syntax is not null
                ? 3 + tools.Where(t => NamedTool is null || t.Name == NamedTool)
                    .Min(t => System.Text.Encoding.UTF8.GetByteCount(syntax.Before(t.Name) + syntax.After) + t.Arguments.MinBytes)
                : 1);
    }

    /// <summary>The conversation with the tools named in its system turn, as GptSharp's models trained on tool turns learn to see them.</summary>
    public IReadOnlyList<ChatMessage> Offer(IReadOnlyList<ChatMessage> messages) => Calls ? ToolBox.Offer(messages, Tools!.Select(t => t.Name)) : messages;

    /// <summary>
    /// The prompt a model answers: GptSharp's format names the offered tools in the system turn; an imported family's
    /// writes their definitions where its own template does (Qwen's system turn, Llama 3.1's first user turn).
    /// </summary>
    public int[] Prompt(ChatTemplate template, IReadOnlyList<ChatMessage> messages) =>
        template.Format == ChatFormats.GptSharp ? template.RenderPrompt(Offer(messages))
        : Calls ? template.RenderPrompt(messages, [.. Tools!.Select(t => t.Definition())])
        : template.RenderPrompt(messages);

    /// <summary>Whether answering needs the tool-call tokens: tools offered, or tool turns in the conversation.</summary>
    public bool NeedsToolTokens(IReadOnlyList<ChatMessage> messages) => Calls || messages.Any(m => m.ToolCall is not null || m.Role == ChatRoles.Tool);

    /// <summary>A fresh constraint for one answer, or null when nothing is constrained.</summary>
    public ITokenConstraint? NewConstraint(ServedModel model)
    {
        if (!Constrained) return null;
        var tokenizer = model.Tokenizer;
        var content = Format is null ? null : new GrammarConstraint(JsonState.Start(Format), model.Vocabulary, tokenizer.TokenBytes, [tokenizer.EndId]);
        if (!Calls) return content;
        var syntax = ToolCallSyntax.For(tokenizer) ?? throw new InvalidOperationException($"Model '{model.Name}' has no tool-call syntax.");
        var offered = Tools!.Where(t => ToolChoice != ToolChoiceMode.Named || t.Name == NamedTool).Select(t => (t.Name, t.Arguments)).ToList();
        return new ToolCallConstraint(model.Vocabulary, tokenizer.TokenBytes, syntax, tokenizer.EndId, offered, ToolChoice, content);
    }

    /// <summary>Where the answer's tool call begins (the token that opens it in the model's format), or −1.</summary>
    public int CallStart(GptTokenizer tokenizer, IReadOnlyList<int> tokens) =>
        Calls && ToolCallSyntax.For(tokenizer) is { } syntax ? syntax.Start(tokenizer, tokens) : -1;

    /// <summary>The tool call an answer's tokens end with, or null when it makes none (or was cut before its end).</summary>
    public FunctionCall? ReadCall(GptTokenizer tokenizer, IReadOnlyList<int> tokens) =>
        Calls && ToolCallSyntax.For(tokenizer)?.Read(tokenizer, tokens) is { } call ? new FunctionCall(FunctionCall.NewId(), call.Name, call.Arguments) : null;

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
