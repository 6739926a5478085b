
namespace GptSharp.Tokenization;

/// <summary>Who speaks a chat message.</summary>
public static class ChatRoles
{
    public const string System = "system";
    public const string User = "user";
    public const string Assistant = "assistant";
    public static IReadOnlyList<string> All { get; } = [System, User, Assistant];
}

/// <summary>One message of a conversation, in OpenAI's shape.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>A rendered conversation: token ids and, per token, whether it is an assistant token the loss should cover.</summary>
public sealed record RenderedChat(int[] Tokens, bool[] LossMask);

/// <summary>
/// The one chat template, used for training and inference alike:
/// <c>&lt;|bos|&gt;</c>, then each message as <c>&lt;|role|&gt;</c> + content + <c>&lt;|end|&gt;</c>. The loss covers
/// assistant content and its closing <c>&lt;|end|&gt;</c> (so the model learns to stop), nothing else. Message text is
/// encoded as plain text: a user who types <c>&lt;|end|&gt;</c> cannot end a turn.
/// </summary>
public sealed class ChatTemplate(GptTokenizer tokenizer)
{
    /// <summary>The same template in Jinja, for other runtimes (Hugging Face <c>chat_template</c>, GGUF <c>tokenizer.chat_template</c>).</summary>
    public const string Jinja =
        "{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

    public GptTokenizer Tokenizer => tokenizer;

    /// <summary>Renders a whole conversation for training.</summary>
    public RenderedChat Render(IReadOnlyList<ChatMessage> messages)
    {
        var tokens = new List<int> { tokenizer.BosId };
        var mask = new List<bool> { false };
        foreach (var message in messages)
        {
            bool learn = message.Role == ChatRoles.Assistant;
            tokens.Add(RoleToken(message.Role));
            mask.Add(false);
            foreach (int id in tokenizer.Encode(message.Content)) { tokens.Add(id); mask.Add(learn); }
            tokens.Add(tokenizer.EndId);
            mask.Add(learn);
        }
        return new RenderedChat([.. tokens], [.. mask]);
    }

    /// <summary>Renders the conversation so far followed by <c>&lt;|assistant|&gt;</c>: the prompt a model answers.</summary>
    public int[] RenderPrompt(IReadOnlyList<ChatMessage> messages) =>
        [.. Render(messages).Tokens, tokenizer.SpecialId(SpecialTokens.Assistant)];

    int RoleToken(string role) => role switch
    {
        ChatRoles.System => tokenizer.SpecialId(SpecialTokens.System),
        ChatRoles.User => tokenizer.SpecialId(SpecialTokens.User),
        ChatRoles.Assistant => tokenizer.SpecialId(SpecialTokens.Assistant),
        _ => throw new ArgumentException($"Unknown chat role '{role}': expected one of {string.Join(", ", ChatRoles.All)}.", nameof(role)),
    };
}
