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

    /// <summary>
    /// Whether conversations with tools can be written: GptSharp's format with its tool-call tokens (tokenizers trained before
    /// them lack them), Qwen's with its <c>&lt;tool_call&gt;</c> tokens, or Llama 3.1/3.2's.
    /// </summary>
    public bool SupportsTools => Format == ChatFormats.GptSharp
        ? tokenizer.Spec.SpecialTokens.ContainsKey(SpecialTokens.ToolCall) && tokenizer.Spec.SpecialTokens.ContainsKey(SpecialTokens.Tool)
        : ChatFormats.WritesTools(Format) && (Format == ChatFormats.Llama31 || tokenizer.Spec.SpecialTokens.ContainsKey(QwenToolCall.Open));

    /// <summary>Renders a whole conversation for training.</summary>
    public RenderedChat Render(IReadOnlyList<ChatMessage> messages) => Format == ChatFormats.GptSharp ? RenderOwn(messages) : RenderFamily(messages, false);

    /// <summary>Renders a whole conversation with tools offered, for training an imported family on tool use.</summary>
    public RenderedChat Render(IReadOnlyList<ChatMessage> messages, IReadOnlyList<System.Text.Json.JsonElement> tools) => Format == ChatFormats.GptSharp
        ? throw new InvalidOperationException("GptSharp's format offers tools by name in the system turn (Inference.Tools.Offer), not as definitions.")
        : RenderFamily(messages, false, tools);

    /// <summary>An imported family's format: markup may hold special tokens, message content never does.</summary>
    RenderedChat RenderFamily(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, IReadOnlyList<System.Text.Json.JsonElement>? tools = null)
    {
        string? bos = tokenizer.Spec.Aliases?.GetValueOrDefault(SpecialTokens.Bos);
        var tokens = new List<int>();
        var mask = new List<bool>();
        // As Hugging Face encodes a rendered template: split at the special tokens, then encode each stretch of text between
        // them whole ("check." + "\n" is one token ".\n"). Only markup may hold special tokens; message content never does.
        var text = new System.Text.StringBuilder();
        var learnBytes = new List<bool>();
        void Flush()
        {
            if (text.Length == 0) return;
            int at = 0;
            foreach (int id in tokenizer.Encode(text.ToString()))
            {
                tokens.Add(id);
                mask.Add(learnBytes[Math.Min(at, learnBytes.Count - 1)]);   // a token is learnt when its first byte is
                at += tokenizer.TokenBytes(id).Length;
            }
            text.Clear();
            learnBytes.Clear();
        }
        void Text(string piece, bool learn)
        {
            text.Append(piece);
            learnBytes.AddRange(Enumerable.Repeat(learn, System.Text.Encoding.UTF8.GetByteCount(piece)));
        }
        foreach (var piece in ChatFormats.Render(Format, tokenizer.Spec.DefaultSystemPrompt, messages, addGenerationPrompt, bos, tools))
        {
            if (!piece.Markup) { Text(piece.Text, piece.Learn); continue; }
            foreach (var (part, special) in SplitSpecials(piece.Text))
                if (special is { } id)
                {
                    Flush();
                    tokens.Add(id);
                    mask.Add(piece.Learn);
                }
                else Text(part, piece.Learn);
        }
        Flush();
        return new RenderedChat([.. tokens], [.. mask]);
    }

    /// <summary>Markup cut at the special tokens it names: (text, null) stretches and (token text, id) specials, in order.</summary>
    IEnumerable<(string Text, int? Special)> SplitSpecials(string markup)
    {
        int at = 0;
        while (at < markup.Length)
        {
            int next = -1;
            string? found = null;
            foreach (string special in tokenizer.Spec.SpecialTokens.Keys)
            {
                int i = markup.IndexOf(special, at, StringComparison.Ordinal);
                if (i >= 0 && (next < 0 || i < next || (i == next && special.Length > found!.Length))) (next, found) = (i, special);
            }
            if (found is null) { yield return (markup[at..], null); yield break; }
            if (next > at) yield return (markup[at..next], null);
            yield return (found, tokenizer.Spec.SpecialTokens[found]);
            at = next + found.Length;
        }
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

    /// <summary>
    /// The prompt with tools offered in an imported family's format: the tools' definitions (OpenAI function objects)
    /// written where the family's template writes them. (GptSharp's own format names the tools in the system turn instead:
    /// <c>Tools.Offer</c>.)
    /// </summary>
    public int[] RenderPrompt(IReadOnlyList<ChatMessage> messages, IReadOnlyList<System.Text.Json.JsonElement> tools) => Format == ChatFormats.GptSharp
        ? throw new InvalidOperationException("GptSharp's format offers tools by name in the system turn (Inference.Tools.Offer), not as definitions.")
        : RenderFamily(messages, addGenerationPrompt: true, tools).Tokens;

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
