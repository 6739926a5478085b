using System.Text.Json;
using GptSharp.Inference.Structured;
using GptSharp.Tokenization;
using static GptSharp.Serving.OpenAiProtocol;

namespace GptSharp.Serving;

/// <summary>A parsed Anthropic <c>POST /v1/messages</c> (or <c>count_tokens</c>) request.</summary>
sealed record MessagesRequest(string Model, IReadOnlyList<ChatMessage> Turns, RequestSampling Sampling, AnswerShape Shape);

/// <summary>
/// Parses Anthropic Messages API bodies: <c>system</c>, <c>messages</c> of text, <c>tool_use</c> and <c>tool_result</c>
/// blocks, <c>max_tokens</c> (required, as Anthropic requires it), <c>stop_sequences</c>, sampling, <c>tools</c> with
/// <c>input_schema</c> and <c>tool_choice</c>. Every problem is an <see cref="ApiError"/> whose message starts with the field,
/// as Anthropic's do (<c>messages.1.content.0.tool_use_id: ...</c>).
/// </summary>
static class AnthropicProtocol
{
    /// <summary>The most stop sequences one request may give.</summary>
    public const int MaxStopSequences = 16;

    public static MessagesRequest Parse(JsonElement root, bool countOnly = false)
    {
        string model = root.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.String && Text(m, "model") is { Length: > 0 } name
            ? name : throw Bad("model", "Field required (a non-empty string).");
        int? maxTokens = null;
        if (!countOnly)
            maxTokens = !root.TryGetProperty("max_tokens", out var mt) || mt.ValueKind == JsonValueKind.Null ? throw Bad("max_tokens", "Field required: the most tokens the answer may have.")
                : mt.ValueKind == JsonValueKind.Number && mt.TryGetInt32(out int n) && n >= 1 ? n : throw Bad("max_tokens", "Must be an integer of at least 1.");
        var turns = new List<ChatMessage>();
        if (root.TryGetProperty("system", out var system) && system.ValueKind != JsonValueKind.Null)
        {
            string text = system.ValueKind == JsonValueKind.String ? Text(system, "system") : TextBlocks(system, "system");
            if (text.Length > 0) turns.Add(new ChatMessage(ChatRoles.System, text));
        }
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
            throw Bad("messages", "Field required: a non-empty array of messages.");
        var conversation = new Conversation();
        int i = 0;
        foreach (var message in messages.EnumerateArray()) Message(message, $"messages.{i++}", conversation);
        turns.AddRange(conversation.Turns("messages"));

        var stops = new List<string>();
        if (root.TryGetProperty("stop_sequences", out var ss) && ss.ValueKind != JsonValueKind.Null)
        {
            if (ss.ValueKind != JsonValueKind.Array) throw Bad("stop_sequences", "Must be an array of strings.");
            stops.AddRange(ss.EnumerateArray().Select((s, j) => s.ValueKind == JsonValueKind.String && Text(s, $"stop_sequences.{j}") is { Length: > 0 } stop
                ? stop : throw Bad($"stop_sequences.{j}", "Must be a non-empty string.")));
            if (stops.Count > MaxStopSequences) throw Bad("stop_sequences", $"At most {MaxStopSequences} sequences.");
        }
        var sampling = new RequestSampling(Fraction(root, "temperature", 1.0), Fraction(root, "top_p", 1.0), maxTokens, stops, Seed: null,
            Stream: root.TryGetProperty("stream", out var st) && (st.ValueKind == JsonValueKind.True || (st.ValueKind is JsonValueKind.False or JsonValueKind.Null ? false : throw Bad("stream", "Must be a boolean."))),
            IncludeUsage: false, TopK: TopK(root));
        return new MessagesRequest(model, turns, sampling, Shape(root));
    }

    /// <summary>A 400 whose message names the field first, in Anthropic's dotted form.</summary>
    static ApiError Bad(string field, string message) => new(400, $"{field}: {message}", field);

    static double Fraction(JsonElement root, string name, double fallback)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        return v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && d >= 0 && d <= 1 && !(name == "top_p" && d == 0) ? d
            : throw Bad(name, name == "top_p" ? "Must be a number in (0, 1]." : "Must be a number in [0, 1].");
    }

    static int TopK(JsonElement root) => !root.TryGetProperty("top_k", out var v) || v.ValueKind == JsonValueKind.Null ? 0
        : v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int k) && k >= 0 ? k : throw Bad("top_k", "Must be an integer of at least 0.");

    /// <summary>One message: a user's text and tool results (each answering an earlier <c>tool_use</c>), or an assistant's text and tool uses.</summary>
    static void Message(JsonElement message, string where, Conversation conversation)
    {
        if (message.ValueKind != JsonValueKind.Object) throw Bad(where, "Must be an object with a role and content.");
        string role = message.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String ? Text(r, $"{where}.role") : "";
        if (role is not (ChatRoles.User or ChatRoles.Assistant)) throw Bad($"{where}.role", $"'{role}' is not a role here; expected user or assistant (the system prompt goes in 'system').");
        if (!message.TryGetProperty("content", out var content) || content.ValueKind is not (JsonValueKind.String or JsonValueKind.Array))
            throw Bad($"{where}.content", "Field required: a string or an array of content blocks.");
        if (content.ValueKind == JsonValueKind.String)
        {
            string text = Text(content, $"{where}.content");
            if (text.Length == 0 && role == ChatRoles.User) throw Bad($"{where}.content", "Must not be empty.");
            conversation.Add(role, text);
            return;
        }
        var said = new System.Text.StringBuilder();
        var calls = new List<FunctionCall>();
        int j = 0;
        foreach (var block in content.EnumerateArray())
        {
            string at = $"{where}.content.{j++}";
            string type = block.ValueKind == JsonValueKind.Object && block.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? Text(t, $"{at}.type") : "";
            switch (type, role)
            {
                case ("text", _):
                    said.Append(block.TryGetProperty("text", out var text) && text.ValueKind == JsonValueKind.String ? Text(text, $"{at}.text") : throw Bad($"{at}.text", "Field required: a string."));
                    break;
                case ("tool_use", ChatRoles.Assistant):
                    string id = Required(block, "id", at), name = Required(block, "name", at);
                    var input = block.TryGetProperty("input", out var inp) && inp.ValueKind == JsonValueKind.Object ? inp.GetRawText() : throw Bad($"{at}.input", "Field required: an object.");
                    calls.Add(new FunctionCall(id, name, input));
                    break;
                case ("tool_result", ChatRoles.User):
                    if (said.Length > 0) { conversation.Add(ChatRoles.User, said.ToString()); said.Clear(); }
                    string answers = Required(block, "tool_use_id", at);
                    string result = !block.TryGetProperty("content", out var rc) || rc.ValueKind == JsonValueKind.Null ? ""
                        : rc.ValueKind == JsonValueKind.String ? Text(rc, $"{at}.content") : TextBlocks(rc, $"{at}.content");
                    if (block.TryGetProperty("is_error", out var err) && err.ValueKind == JsonValueKind.True) result = "Error: " + result;
                    conversation.AddResult(answers, result, $"{at}.tool_use_id");
                    break;
                default:
                    throw Bad($"{at}.type", $"'{type}' blocks are not supported in a {role} message; expected text{(role == ChatRoles.User ? " or tool_result" : " or tool_use")} (this model reads text).");
            }
        }
        if (calls.Count > 0) conversation.AddCalls(said.ToString(), calls, $"{where}.content");
        else if (said.Length > 0 || role == ChatRoles.Assistant) conversation.Add(role, said.ToString());
    }

    static string Required(JsonElement block, string name, string at) =>
        block.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && Text(v, $"{at}.{name}") is { Length: > 0 } text
            ? text : throw Bad($"{at}.{name}", "Field required: a non-empty string.");

    /// <summary>An array of text blocks joined (a system prompt, a tool result's content).</summary>
    static string TextBlocks(JsonElement blocks, string field)
    {
        if (blocks.ValueKind != JsonValueKind.Array) throw Bad(field, "Must be a string or an array of text blocks.");
        return string.Concat(blocks.EnumerateArray().Select((block, i) =>
            block.ValueKind == JsonValueKind.Object && block.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String && Text(t, $"{field}.{i}.type") == "text"
            && block.TryGetProperty("text", out var text) && text.ValueKind == JsonValueKind.String
                ? Text(text, $"{field}.{i}.text") : throw Bad($"{field}.{i}", "Must be a text block {\"type\": \"text\", \"text\": ...}.")));
    }

    /// <summary><c>tools</c> (client tools: name, description, input_schema) and <c>tool_choice</c> ({"type": auto | any | tool | none}).</summary>
    static AnswerShape Shape(JsonElement root)
    {
        var tools = new List<FunctionTool>();
        if (root.TryGetProperty("tools", out var list) && list.ValueKind != JsonValueKind.Null)
        {
            if (list.ValueKind != JsonValueKind.Array) throw Bad("tools", "Must be an array.");
            foreach (var tool in list.EnumerateArray())
            {
                string field = $"tools.{tools.Count}";
                if (tool.ValueKind != JsonValueKind.Object) throw Bad(field, "Must be an object.");
                if (tool.TryGetProperty("type", out var tt) && tt.ValueKind == JsonValueKind.String && Text(tt, $"{field}.type") is var type && type != "custom")
                    throw Bad($"{field}.type", $"'{type}' is not supported: only client tools (name, description, input_schema) run here.");
                if (!tool.TryGetProperty("input_schema", out var schema) || schema.ValueKind != JsonValueKind.Object) throw Bad($"{field}.input_schema", "Field required: a JSON schema object.");
                tools.Add(Tool(tool, field, "input_schema", tools));
            }
        }
        var (choice, named) = (ToolChoiceMode.Auto, (string?)null);
        bool given = root.TryGetProperty("tool_choice", out var tc) && tc.ValueKind != JsonValueKind.Null;
        const string expected = "tool_choice: Must be {\"type\": \"auto\" | \"any\" | \"none\"} or {\"type\": \"tool\", \"name\": ...}.";
        if (given)
        {
            string type = tc.ValueKind == JsonValueKind.Object && tc.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? Text(t, "tool_choice.type") : "";
            (choice, named) = type == "tool"
                ? (ToolChoiceMode.Named, tc.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String ? Text(n, "tool_choice.name") : throw Bad("tool_choice.name", "Field required for type tool."))
                : (ChoiceMode(type == "required" ? "" : type, "tool_choice", expected), null);
        }
        return NewShape(null, tools, choice, named, given, "tool_choice");
    }
}
