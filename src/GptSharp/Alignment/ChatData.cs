using GptSharp.Runtime;
using GptSharp.Tokenization;
using System.Text.Json;

namespace GptSharp.Alignment;

/// <summary>A preference pair: the same prompt, a better answer and a worse one.</summary>
/// <param name="Group">Pairs ranked from the answers to one prompt share a group and train in one batch (InstructGPT:
/// the K·(K−1)/2 comparisons of a prompt are correlated, so they count as one example); null: a group of its own.</param>
public sealed record PreferencePair(IReadOnlyList<ChatMessage> Prompt, string Chosen, string Rejected, string? Group = null);

/// <summary>
/// Reads conversations (<c>{"messages":[{"role":..,"content":..}]}</c>; an assistant message may carry OpenAI's
/// <c>tool_calls</c>, answered by a <c>tool</c> message) and preference pairs
/// (<c>{"prompt":[..messages..],"chosen":"..","rejected":".."}</c>) from JSON lines. Every error names the file, the
/// line and the field; nothing is dropped silently.
/// </summary>
public static class ChatData
{
    public static IEnumerable<IReadOnlyList<ChatMessage>> ReadConversations(string path)
    {
        foreach (var (root, line) in ReadObjects(path))
        {
            var messages = Messages(root, "messages", path, line);
            if (!messages.Any(m => m.Role == ChatRoles.Assistant))
                throw new InvalidDataException($"{path}:{line}: the conversation has no assistant turn, so there is nothing to learn from it.");
            yield return messages;
        }
    }

    public static IEnumerable<PreferencePair> ReadPreferences(string path)
    {
        // A group holds the comparisons of one prompt's answers: a second prompt in it means the file was assembled wrongly.
        var groupPrompts = new Dictionary<string, (string Prompt, int Line)>(StringComparer.Ordinal);
        foreach (var (root, line) in ReadObjects(path))
        {
            var prompt = Messages(root, "prompt", path, line);
            string? group = null;
            if (root.TryGetProperty("group", out var g))
                group = g.ValueKind == JsonValueKind.String ? g.GetString() : throw new InvalidDataException($"{path}:{line}: field 'group' must be a string.");
            string chosen = Text(root, "chosen", path, line), rejected = Text(root, "rejected", path, line);
            if (chosen == rejected) throw new InvalidDataException($"{path}:{line}: 'chosen' and 'rejected' are the same answer: the pair teaches nothing.");
            if (group is not null)
            {
                string promptText = string.Join("\u0000", prompt.Select(m => m.Role + "\u0001" + m.Content));
                if (!groupPrompts.TryGetValue(group, out var first)) groupPrompts[group] = (promptText, line);
                else if (first.Prompt != promptText)
                    throw new InvalidDataException($"{path}:{line}: group '{group}' holds the answers to the prompt of line {first.Line}, but this pair's prompt differs.");
            }
            yield return new PreferencePair(prompt, chosen, rejected, group);
        }
    }

    /// <summary>
    /// Holds out 5% of the groups of comparisons (chosen by seed; at least one when there are two or more), so that
    /// held-out accuracy is measured on prompts never trained on. Pairs without a group count as groups of one.
    /// </summary>
    public static (List<PreferencePair> Train, List<PreferencePair> HeldOut) SplitByGroup(IReadOnlyList<PreferencePair> pairs, long seed, string splitName)
    {
        var groups = PairBatchSource<PairBatch>.Groups(pairs) ?? [.. Enumerable.Range(0, pairs.Count).Select(i => new[] { i })];
        var heldOutGroups = groups.Where((_, g) => Data.ShardBuilder.IsValidation(seed, splitName, g, 0.05)).ToList();
        if (heldOutGroups.Count == 0 && groups.Count > 1) heldOutGroups.Add(groups[^1]);
        var heldOut = heldOutGroups.SelectMany(g => g).ToHashSet();
        return ([.. pairs.Where((_, i) => !heldOut.Contains(i))], [.. pairs.Where((_, i) => heldOut.Contains(i))]);
    }

    public static void WriteConversations(string path, IEnumerable<IReadOnlyList<ChatMessage>> conversations) =>
        AtomicFile.WriteAllText(path, string.Concat(conversations.Select(c => JsonSerializer.Serialize(new { messages = c.Select(MessageObject) }, JsonOptions) + "\n")));

    public static void WritePreferences(string path, IEnumerable<PreferencePair> pairs) =>
        AtomicFile.WriteAllText(path, string.Concat(pairs.Select(PreferenceLine)));

    /// <summary>One preference pair as a JSONL line (newline included), as <see cref="ReadPreferences"/> reads it.</summary>
    public static string PreferenceLine(PreferencePair pair) => JsonSerializer.Serialize(new
    {
        prompt = pair.Prompt.Select(MessageObject), chosen = pair.Chosen, rejected = pair.Rejected, group = pair.Group,
    }, JsonOptions) + "\n";

    /// <summary>How GptSharp writes JSON lines: text as it is (Chinese stays readable), null fields left out.</summary>
    public static readonly JsonSerializerOptions JsonOptions = new()
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
    };

    static IEnumerable<(JsonElement Root, int Line)> ReadObjects(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"No such file: '{path}'.", path);
        int lineNumber = 0, count = 0;
        foreach (string line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonElement root;
            try
            {
                using var document = JsonDocument.Parse(line);
                root = document.RootElement.Clone();
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{path}:{lineNumber}: malformed JSON: {e.Message}", e);
            }
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}:{lineNumber}: expected a JSON object.");
            count++;
            yield return (root, lineNumber);
        }
        if (count == 0) throw new InvalidDataException($"{path}: no records (the file is empty).");
    }

    static List<ChatMessage> Messages(JsonElement root, string field, string path, int line)
    {
        if (!root.TryGetProperty(field, out var array) || array.ValueKind != JsonValueKind.Array || array.GetArrayLength() == 0)
            throw new InvalidDataException($"{path}:{line}: field '{field}' must be a non-empty array of messages.");
        var messages = new List<ChatMessage>();
        int index = 0;
        foreach (var item in array.EnumerateArray())
        {
            string role = item.ValueKind == JsonValueKind.Object && item.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String
                ? JsonText.Read(r, $"{path}:{line}: {field}[{index}].role") : "";
            if (!ChatRoles.All.Contains(role))
                throw new InvalidDataException($"{path}:{line}: {field}[{index}].role is '{role}'; expected one of {string.Join(", ", ChatRoles.All)}.");
            string content = item.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String
                ? JsonText.Read(c, $"{path}:{line}: {field}[{index}].content") : "";
            var call = ReadToolCall(item, $"{path}:{line}: {field}[{index}]");
            if (call is not null && role != ChatRoles.Assistant)
                throw new InvalidDataException($"{path}:{line}: {field}[{index}] is a {role} message with tool_calls: only assistant messages make tool calls.");
            if (content.Trim().Length == 0 && call is null) throw new InvalidDataException($"{path}:{line}: {field}[{index}].content is missing or empty.");
            if (role == ChatRoles.Tool && (messages.Count == 0 || messages[^1].ToolCall is null))
                throw new InvalidDataException($"{path}:{line}: {field}[{index}] is a tool result, but the message before it makes no tool call.");
            messages.Add(new ChatMessage(role, content, call));
            index++;
        }
        return messages;
    }

    /// <summary>OpenAI's <c>tool_calls</c>: one call per message, <c>function.name</c> one word, <c>function.arguments</c> text.</summary>
    static ToolCall? ReadToolCall(JsonElement message, string where)
    {
        if (!message.TryGetProperty("tool_calls", out var calls) || calls.ValueKind == JsonValueKind.Null) return null;
        if (calls.ValueKind != JsonValueKind.Array || calls.GetArrayLength() != 1)
            throw new InvalidDataException($"{where}.tool_calls must be an array of exactly one call (the chat template writes one call per turn).");
        var call = calls[0];
        if (call.ValueKind != JsonValueKind.Object || !call.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{where}.tool_calls[0].function is missing.");
        string name = function.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String ? n.GetString()! : "";
        if (name.Length == 0 || name.Any(char.IsWhiteSpace))
            throw new InvalidDataException($"{where}.tool_calls[0].function.name must be one word, got '{name}'.");
        if (!function.TryGetProperty("arguments", out var arguments) || arguments.ValueKind != JsonValueKind.String)
            throw new InvalidDataException($"{where}.tool_calls[0].function.arguments must be a string.");
        return new ToolCall(name, JsonText.Read(arguments, $"{where}.tool_calls[0].function.arguments"));
    }

    /// <summary>A message as OpenAI writes it: a tool call goes in <c>tool_calls</c>.</summary>
    static object MessageObject(ChatMessage m) => m.ToolCall is { } call
        ? new { role = m.Role, content = m.Content, tool_calls = new[] { new { type = "function", function = new { name = call.Name, arguments = call.Arguments } } } }
        : new { role = m.Role, content = m.Content };

    static string Text(JsonElement root, string field, string path, int line)
    {
        if (!root.TryGetProperty(field, out var value) || value.ValueKind != JsonValueKind.String
            || JsonText.Read(value, $"{path}:{line}: field '{field}'") is not { } text || text.Trim().Length == 0)
            throw new InvalidDataException($"{path}:{line}: field '{field}' must be a non-empty string.");
        return text;
    }
}
