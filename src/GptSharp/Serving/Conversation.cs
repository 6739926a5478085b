using GptSharp.Tokenization;

namespace GptSharp.Serving;

/// <summary>One message of a request's conversation: the calls it makes (an assistant's) or the call it answers (a tool result's).</summary>
public sealed record ConversationEntry(ChatMessage Message, IReadOnlyList<FunctionCall> Calls, string? AnswersCall);

/// <summary>
/// A conversation as a request states it — Chat Completions' messages, Responses' input items, Anthropic's content
/// blocks — checked as it is read: every tool result answers an earlier call of the conversation, once, and call ids
/// are unique. Each API names its own fields in the errors; all three reach the model's turns the same way.
/// </summary>
public sealed class Conversation
{
    readonly List<ConversationEntry> _entries = [];
    readonly HashSet<string> _open = [], _ids = [];

    public Conversation() { }

    /// <summary>Continues a stored conversation (its calls may be answered by what is added next).</summary>
    public Conversation(IEnumerable<ConversationEntry> earlier)
    {
        foreach (var entry in earlier)
        {
            _entries.Add(entry);
            foreach (var call in entry.Calls) { _ids.Add(call.Id); _open.Add(call.Id); }
            if (entry.AnswersCall is { } id) _open.Remove(id);
        }
    }

    /// <summary>The messages so far, as stored for a later request to continue.</summary>
    public IReadOnlyList<ConversationEntry> Entries => _entries;

    /// <summary>A system, user or assistant message without calls.</summary>
    public void Add(string role, string content) => _entries.Add(new ConversationEntry(new ChatMessage(role, content), [], null));

    /// <summary>An assistant message making <paramref name="calls"/> (after its text, which may be empty).</summary>
    public void AddCalls(string content, IReadOnlyList<FunctionCall> calls, string field)
    {
        foreach (var call in calls)
            if (!_ids.Add(call.Id) || !_open.Add(call.Id)) throw new ApiError(400, $"{field}: the call id '{call.Id}' is used by an earlier call.", field);
        _entries.Add(new ConversationEntry(new ChatMessage(ChatRoles.Assistant, content), calls, null));
    }

    /// <summary>A tool's result, answering the open call <paramref name="callId"/>; <paramref name="field"/> names where the id was given.</summary>
    public void AddResult(string callId, string content, string field)
    {
        if (!_open.Remove(callId))
            throw new ApiError(400, $"{field} '{callId}' does not answer a tool call made earlier in the conversation (or answers it twice).", field);
        _entries.Add(new ConversationEntry(new ChatMessage(ChatRoles.Tool, content), [], callId));
    }

    /// <summary>The turns the chat template renders (each call followed by its result); <paramref name="field"/> names the conversation when it has no user message.</summary>
    public IReadOnlyList<ChatMessage> Turns(string field)
    {
        if (!_entries.Any(e => e.Message.Role == ChatRoles.User)) throw new ApiError(400, $"'{field}' needs at least one user message.", field);
        return AnswerShape.Turns(_entries.Select(e => (e.Message, e.Calls, e.AnswersCall)));
    }
}
