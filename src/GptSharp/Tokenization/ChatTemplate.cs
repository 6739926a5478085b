namespace GptSharp.Tokenization;

/// <summary>Who speaks a chat message.</summary>
public static class ChatRoles
{
    public const string System = "system";
    public const string User = "user";
    public const string Assistant = "assistant";
    /// <summary>What a tool answered to the assistant's call just before.</summary>
    public const string Tool = "tool";
    public static IReadOnlyList<string> All { get; } = [System, User, Assistant, Tool];
}

/// <summary>An assistant's request to run a tool: its name and its arguments as text (for the calculator, the expression).</summary>
public sealed record ToolCall(string Name, string Arguments)
{
    /// <summary>The call as the model writes it after <c>&lt;|tool_call|&gt;</c>: the name, a space, the arguments.</summary>
    public string Text => Name + " " + Arguments;

    /// <summary>Reads a call the model wrote: the first word names the tool, the rest are its arguments.</summary>
    public static ToolCall Parse(string text)
    {
        text = text.Trim();
        int space = text.IndexOf(' ');
        return space < 0 ? new ToolCall(text, "") : new ToolCall(text[..space], text[(space + 1)..].Trim());
    }
}

/// <summary>One message of a conversation, in OpenAI's shape. An assistant message may end with a tool call (its
/// content may then be empty); the next message is the tool's answer, role <see cref="ChatRoles.Tool"/>.</summary>
public sealed record ChatMessage(string Role, string Content, ToolCall? ToolCall = null);

/// <summary>A rendered conversation: token ids and, per token, whether it is an assistant token the loss should cover.</summary>
public sealed record RenderedChat(int[] Tokens, bool[] LossMask);

/// <summary>
/// The one chat template, used for training and inference alike:
/// <c>&lt;|bos|&gt;</c>, then each message as <c>&lt;|role|&gt;</c> + content + <c>&lt;|end|&gt;</c>. An assistant
/// message with a tool call writes it after its content as <c>&lt;|tool_call|&gt;</c> + name + space + arguments +
/// <c>&lt;|end|&gt;</c>; the tool's answer follows as <c>&lt;|tool|&gt;</c> + result + <c>&lt;|end|&gt;</c>, and the
/// assistant goes on in a new <c>&lt;|assistant|&gt;</c> turn. The loss covers assistant content, tool calls and their
/// closing <c>&lt;|end|&gt;</c> (so the model learns to stop), nothing else: tool results are written by a program, not
/// learned. Message text is encoded as plain text: a user who types <c>&lt;|end|&gt;</c> cannot end a turn.
/// </summary>
public sealed class ChatTemplate(GptTokenizer tokenizer)
{
    /// <summary>The same template in Jinja, for other runtimes (Hugging Face <c>chat_template</c>, GGUF <c>tokenizer.chat_template</c>).
    /// A tool call is read from OpenAI's <c>tool_calls</c> (the first one's function name and arguments).</summary>
    public const string Jinja =
        "{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>' + (message['content'] or '') }}" +
        "{% if message['tool_calls'] %}{{ '<|tool_call|>' + message['tool_calls'][0]['function']['name'] + ' ' + message['tool_calls'][0]['function']['arguments'] }}{% endif %}" +
        "{{ '<|end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

    public GptTokenizer Tokenizer => tokenizer;

    /// <summary>The format conversations are written in: GptSharp's own, or an imported model family's (<see cref="ChatFormats"/>).</summary>
    public string Format => tokenizer.Spec.ChatFormat ?? ChatFormats.GptSharp;

    /// <summary>Whether the tokenizer has the tool-call tokens (tokenizers trained before them do not) and the format writes tool turns.</summary>
    public bool SupportsTools => Format == ChatFormats.GptSharp
        && tokenizer.Spec.SpecialTokens.ContainsKey(SpecialTokens.ToolCall) && tokenizer.Spec.SpecialTokens.ContainsKey(SpecialTokens.Tool);

    /// <summary>Renders a whole conversation for training.</summary>
    public RenderedChat Render(IReadOnlyList<ChatMessage> messages) => Format == ChatFormats.GptSharp ? RenderOwn(messages) : RenderFamily(messages, false);

    /// <summary>An imported family's format: markup may hold special tokens, message content never does.</summary>
    RenderedChat RenderFamily(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        string? bos = tokenizer.Spec.Aliases?.GetValueOrDefault(SpecialTokens.Bos);
        var tokens = new List<int>();
        var mask = new List<bool>();
        // Neighbouring pieces of one kind are encoded together, as the template's whole string would be ("\n" + "\n" is one token).
        var pieces = new List<ChatPiece>();
        foreach (var piece in ChatFormats.Render(Format, tokenizer.Spec.DefaultSystemPrompt, messages, addGenerationPrompt, bos))
            if (pieces.Count > 0 && pieces[^1].Markup == piece.Markup && pieces[^1].Learn == piece.Learn) pieces[^1] = pieces[^1] with { Text = pieces[^1].Text + piece.Text };
            else pieces.Add(piece);
        foreach (var piece in pieces)
            foreach (int id in piece.Markup ? tokenizer.EncodeWithSpecialTokens(piece.Text) : tokenizer.Encode(piece.Text))
            {
                tokens.Add(id);
                mask.Add(piece.Learn);
            }
        return new RenderedChat([.. tokens], [.. mask]);
    }

    RenderedChat RenderOwn(IReadOnlyList<ChatMessage> messages)
    {
        var tokens = new List<int> { tokenizer.BosId };
        var mask = new List<bool> { false };
        foreach (var message in messages)
        {
            bool learn = message.Role == ChatRoles.Assistant;
            tokens.Add(RoleToken(message.Role));
            mask.Add(false);
            foreach (int id in tokenizer.Encode(message.Content)) { tokens.Add(id); mask.Add(learn); }
            if (message.ToolCall is { } call)
            {
                if (message.Role != ChatRoles.Assistant) throw new ArgumentException($"A {message.Role} message carries a tool call: only assistant messages make them.", nameof(messages));
                tokens.Add(ToolId(SpecialTokens.ToolCall));
                mask.Add(true);
                foreach (int id in tokenizer.Encode(call.Text)) { tokens.Add(id); mask.Add(true); }
            }
            tokens.Add(tokenizer.EndId);
            mask.Add(learn);
        }
        return new RenderedChat([.. tokens], [.. mask]);
    }

    /// <summary>Renders the conversation so far followed by <c>&lt;|assistant|&gt;</c>: the prompt a model answers.</summary>
    public int[] RenderPrompt(IReadOnlyList<ChatMessage> messages) => Format == ChatFormats.GptSharp
        ? [.. Render(messages).Tokens, tokenizer.SpecialId(SpecialTokens.Assistant)]
        : RenderFamily(messages, addGenerationPrompt: true).Tokens;

    int RoleToken(string role) => role switch
    {
        ChatRoles.System => tokenizer.SpecialId(SpecialTokens.System),
        ChatRoles.User => tokenizer.SpecialId(SpecialTokens.User),
        ChatRoles.Assistant => tokenizer.SpecialId(SpecialTokens.Assistant),
        ChatRoles.Tool => ToolId(SpecialTokens.Tool),
        _ => throw new ArgumentException($"Unknown chat role '{role}': expected one of {string.Join(", ", ChatRoles.All)}.", nameof(role)),
    };

    int ToolId(string token) => SupportsTools ? tokenizer.SpecialId(token)
        : throw new NotSupportedException($"Tokenizer '{tokenizer.Spec.Name}' has no {token} token (it was trained before tool calls existed): " +
                                          "train a new tokenizer, and a model on it, to use tools.");
}
