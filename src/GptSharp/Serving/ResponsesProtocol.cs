using System.Text.Json;
using GptSharp.Inference.Structured;
using GptSharp.Tokenization;
using static GptSharp.Serving.OpenAiProtocol;

namespace GptSharp.Serving;

/// <summary>
/// A parsed <c>POST /v1/responses</c> request: the conversation (a stored one continued by <c>previous_response_id</c>,
/// then <c>input</c>), <c>instructions</c> for this request only (as OpenAI does, they are not carried to the next),
/// and what the request echoes back in its response object.
/// </summary>
sealed record ResponsesRequest(string Model, string? Instructions, Conversation Conversation, RequestSampling Sampling, AnswerShape Shape,
    bool Store, string? PreviousResponseId, JsonElement Echo)
{
    /// <summary>The turns the model reads: the instructions as a system turn, then the conversation.</summary>
    public IReadOnlyList<ChatMessage> Turns() => [.. Instructions is null ? [] : new[] { new ChatMessage(ChatRoles.System, Instructions) }, .. Conversation.Turns("input")];
}

/// <summary>Parses OpenAI Responses API bodies; every problem is an <see cref="ApiError"/> naming the field (<c>input[2].call_id</c>).</summary>
static class ResponsesProtocol
{
    public static ResponsesRequest Parse(JsonElement root, Func<string, StoredResponse?> stored)
    {
        string model = Model(root);
        string? previous = root.TryGetProperty("previous_response_id", out var p) && p.ValueKind != JsonValueKind.Null
            ? p.ValueKind == JsonValueKind.String ? Text(p, "previous_response_id") : throw new ApiError(400, "'previous_response_id' must be a string.", "previous_response_id")
            : null;
        var conversation = previous is null ? new Conversation()
            : new Conversation((stored(previous) ?? throw new ApiError(404, $"Previous response with id '{previous}' not found (never stored, deleted, or evicted: the server keeps the latest --stored-responses).",
                "previous_response_id", "previous_response_not_found")).Conversation);
        if (!root.TryGetProperty("input", out var input) || input.ValueKind == JsonValueKind.Null)
            throw new ApiError(400, "'input' is required: a string or an array of input items.", "input");
        if (input.ValueKind == JsonValueKind.String)
            conversation.Add(ChatRoles.User, Text(input, "input") is { Length: > 0 } text ? text : throw new ApiError(400, "'input' must not be empty.", "input"));
        else if (input.ValueKind == JsonValueKind.Array && input.GetArrayLength() > 0)
        {
            int i = 0;
            foreach (var item in input.EnumerateArray()) Item(item, $"input[{i++}]", conversation);
        }
        else throw new ApiError(400, "'input' must be a string or a non-empty array of input items.", "input");

        string? instructions = root.TryGetProperty("instructions", out var ins) && ins.ValueKind != JsonValueKind.Null
            ? ins.ValueKind == JsonValueKind.String ? Text(ins, "instructions") : throw new ApiError(400, "'instructions' must be a string.", "instructions")
            : null;
        int? maxTokens = root.TryGetProperty("max_output_tokens", out var mt) && mt.ValueKind != JsonValueKind.Null
            ? mt.ValueKind == JsonValueKind.Number && mt.TryGetInt32(out int n) && n >= 1 ? n : throw new ApiError(400, "'max_output_tokens' must be an integer of at least 1.", "max_output_tokens")
            : null;
        var sampling = new RequestSampling(Number(root, "temperature", 1.0, 0, 2), Number(root, "top_p", 1.0, double.Epsilon, 1), maxTokens, [], Seed: null,
            Stream: Boolean(root, "stream"), IncludeUsage: false);
        bool store = !root.TryGetProperty("store", out var st) || st.ValueKind != JsonValueKind.False;
        return new ResponsesRequest(model, instructions?.Length > 0 ? instructions : null, conversation, sampling, Shape(root), store, previous, root.Clone());
    }

    /// <summary>One input item: a message (typed or by role alone), a function call the model made, or a call's output.</summary>
    static void Item(JsonElement item, string where, Conversation conversation)
    {
        if (item.ValueKind != JsonValueKind.Object) throw new ApiError(400, $"{where} must be an object.", where);
        string type = item.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? Text(t, $"{where}.type")
            : item.TryGetProperty("role", out _) ? "message" : "";
        switch (type)
        {
            case "message":
                string role = item.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String ? Text(r, $"{where}.role") : "";
                role = role == "developer" ? ChatRoles.System : role;
                if (role is not (ChatRoles.System or ChatRoles.User or ChatRoles.Assistant))
                    throw new ApiError(400, $"{where}.role '{role}' is not supported; expected user, assistant, system or developer.", $"{where}.role");
                string content = Content(item, where);
                if (content.Length == 0 && role != ChatRoles.Assistant) throw new ApiError(400, $"{where}.content must not be empty.", $"{where}.content");
                conversation.Add(role, content);
                break;
            case "function_call":
                string callId = Required(item, "call_id", where), name = Required(item, "name", where);
                string arguments = item.TryGetProperty("arguments", out var a) && a.ValueKind == JsonValueKind.String ? Text(a, $"{where}.arguments") : "{}";
                conversation.AddCalls("", [new FunctionCall(callId, name, arguments)], $"{where}.call_id");
                break;
            case "function_call_output":
                string answers = Required(item, "call_id", where);
                if (!item.TryGetProperty("output", out var output)) throw new ApiError(400, $"{where}.output is required.", $"{where}.output");
                conversation.AddResult(answers, output.ValueKind == JsonValueKind.String ? Text(output, $"{where}.output") : Parts(output, $"{where}.output"), $"{where}.call_id");
                break;
            default:
                throw new ApiError(400, $"{where}.type '{type}' is not supported; expected message, function_call or function_call_output.", $"{where}.type");
        }
    }

    static string Required(JsonElement item, string name, string where) =>
        item.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && Text(v, $"{where}.{name}") is { Length: > 0 } text
            ? text : throw new ApiError(400, $"{where}.{name} is required and must be a non-empty string.", $"{where}.{name}");

    static string Content(JsonElement item, string where)
    {
        if (!item.TryGetProperty("content", out var content) || content.ValueKind == JsonValueKind.Null) return "";
        return content.ValueKind == JsonValueKind.String ? Text(content, $"{where}.content") : Parts(content, $"{where}.content");
    }

    /// <summary>Text parts (<c>input_text</c>, <c>output_text</c>) joined; images, files and audio are refused by index.</summary>
    static string Parts(JsonElement parts, string field)
    {
        if (parts.ValueKind != JsonValueKind.Array) throw new ApiError(400, $"{field} must be a string or an array of text parts.", field);
        return string.Concat(parts.EnumerateArray().Select((part, i) =>
        {
            string at = $"{field}[{i}]";
            string type = part.ValueKind == JsonValueKind.Object && part.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? Text(t, $"{at}.type") : "";
            if (type is not ("input_text" or "output_text" or "text"))
                throw new ApiError(400, $"{at}.type '{type}' is not supported: only input_text and output_text parts are (this model reads text).", $"{at}.type");
            return part.TryGetProperty("text", out var text) && text.ValueKind == JsonValueKind.String ? Text(text, $"{at}.text")
                : throw new ApiError(400, $"{at}.text must be a string.", $"{at}.text");
        }));
    }

    /// <summary><c>text.format</c>, <c>tools</c> (function tools, flat: name, description, parameters) and <c>tool_choice</c>.</summary>
    static AnswerShape Shape(JsonElement root)
    {
        SchemaNode? format = null;
        if (root.TryGetProperty("text", out var text) && text.ValueKind != JsonValueKind.Null)
        {
            if (text.ValueKind != JsonValueKind.Object) throw new ApiError(400, "'text' must be an object {\"format\": {...}}.", "text");
            if (text.TryGetProperty("format", out var f) && f.ValueKind != JsonValueKind.Null) format = Format(f, "text.format");
        }
        var tools = new List<FunctionTool>();
        if (root.TryGetProperty("tools", out var list) && list.ValueKind != JsonValueKind.Null)
        {
            if (list.ValueKind != JsonValueKind.Array) throw new ApiError(400, "'tools' must be an array.", "tools");
            foreach (var tool in list.EnumerateArray())
            {
                string field = $"tools[{tools.Count}]";
                string type = tool.ValueKind == JsonValueKind.Object && tool.TryGetProperty("type", out var tt) && tt.ValueKind == JsonValueKind.String ? Text(tt, $"{field}.type") : "";
                if (type != "function") throw new ApiError(400, $"{field}.type '{type}' is not supported: only function tools run here (no hosted tools).", $"{field}.type");
                tools.Add(Tool(tool, field, "parameters", tools));
            }
        }
        var (choice, named) = (ToolChoiceMode.Auto, (string?)null);
        bool given = root.TryGetProperty("tool_choice", out var tc) && tc.ValueKind != JsonValueKind.Null;
        const string expected = "'tool_choice' must be auto, none, required or {\"type\": \"function\", \"name\": ...}.";
        if (given)
            (choice, named) = tc.ValueKind == JsonValueKind.String ? (ChoiceMode(Text(tc, "tool_choice"), "tool_choice", expected), null)
                : tc.ValueKind == JsonValueKind.Object && tc.TryGetProperty("name", out var fn) && fn.ValueKind == JsonValueKind.String ? (ToolChoiceMode.Named, Text(fn, "tool_choice.name"))
                : throw new ApiError(400, expected, "tool_choice");
        return NewShape(format, tools, choice, named, given, "tool_choice");
    }
}
