using GptSharp.Inference.Structured;
using GptSharp.Tokenization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace GptSharp.Serving;

/// <summary>An error to answer in OpenAI's shape: <c>{"error": {"message", "type", "param", "code"}}</c> with an HTTP status.</summary>
public sealed class ApiError(int status, string message, string? param = null, string? code = null, string type = "invalid_request_error") : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;
    public string Type { get; } = type;

    /// <summary>Sent as the Retry-After header (a 429 says when to come back).</summary>
    public int? RetryAfterSeconds { get; init; }

    public object Body => new { error = new { message = Message, type = Type, param = Param, code = Code } };
}

/// <summary>The sampling part of a request, validated against OpenAI's ranges.</summary>
/// <param name="Choices">OpenAI's <c>n</c>: answers to generate for the prompt, each with its own seed.</param>
/// <param name="TopLogprobs">Null: no log-probabilities; otherwise how many alternatives to report per token.</param>
/// <param name="TopK">Sample among the k likeliest tokens only (Anthropic's <c>top_k</c>; 0: all).</param>
public sealed record RequestSampling(double Temperature, double TopP, int? MaxTokens, IReadOnlyList<string> Stop, long? Seed, bool Stream, bool IncludeUsage,
    int Choices = 1, double PresencePenalty = 0, double FrequencyPenalty = 0, int? TopLogprobs = null, int TopK = 0);

/// <summary>A parsed <c>/v1/chat/completions</c> request; <paramref name="Shape"/> holds its response format and tools.</summary>
public sealed record ChatRequest(string Model, IReadOnlyList<ChatMessage> Messages, RequestSampling Sampling, AnswerShape Shape);

/// <summary>A parsed <c>/v1/completions</c> request.</summary>
public sealed record CompletionRequest(string Model, string Prompt, RequestSampling Sampling);

/// <summary>Parses OpenAI request bodies; every problem is an <see cref="ApiError"/> naming the field.</summary>
public static class OpenAiProtocol
{
    /// <summary>The most answers one request may ask for (<c>n</c>).</summary>
    public const int MaxChoices = 8;
    /// <summary>The most alternatives per token (<c>top_logprobs</c>; OpenAI's limit).</summary>
    public const int MaxTopLogprobs = 20;

    public static JsonElement ParseBody(string body)
    {
        if (string.IsNullOrWhiteSpace(body)) throw new ApiError(400, "The request body is empty; expected a JSON object.");
        try
        {
            var root = JsonDocument.Parse(body).RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ApiError(400, "The request body must be a JSON object.");
            return root;
        }
        catch (JsonException e)
        {
            throw new ApiError(400, $"The request body is not valid JSON: {e.Message}");
        }
    }

    public static ChatRequest Chat(JsonElement root)
    {
        string model = Model(root);
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array)
            throw new ApiError(400, "'messages' is required and must be an array.", "messages");
        if (messages.GetArrayLength() == 0) throw new ApiError(400, "'messages' must not be empty.", "messages");
        var conversation = new Conversation();
        int i = 0;
        foreach (var message in messages.EnumerateArray())
        {
            string where = $"messages[{i++}]";
            if (message.ValueKind != JsonValueKind.Object) throw new ApiError(400, $"{where} must be an object.", where);
            string role = message.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String ? Text(r, $"{where}.role") : "";
            role = role == "developer" ? ChatRoles.System : role;
            if (role is not (ChatRoles.System or ChatRoles.User or ChatRoles.Assistant or ChatRoles.Tool))
                throw new ApiError(400, $"{where}.role '{role}' is not supported; expected system, developer, user, assistant or tool.", $"{where}.role");
            string content = Content(message, where);
            if (content.Length == 0 && role != ChatRoles.Assistant && role != ChatRoles.Tool) throw new ApiError(400, $"{where}.content must not be empty.", $"{where}.content");
            if (role == ChatRoles.Tool)
                conversation.AddResult(message.TryGetProperty("tool_call_id", out var callId) && callId.ValueKind == JsonValueKind.String ? Text(callId, $"{where}.tool_call_id") : "",
                    content, $"{where}.tool_call_id");
            else if (role == ChatRoles.Assistant && Calls(message, where) is { Count: > 0 } calls) conversation.AddCalls(content, calls, $"{where}.tool_calls");
            else conversation.Add(role, content);
        }
        return new ChatRequest(model, conversation.Turns("messages"), Sampling(root, chat: true), Shape(root));
    }

    /// <summary>An assistant message's <c>tool_calls</c>: [{"id", "type": "function", "function": {"name", "arguments"}}].</summary>
    static List<FunctionCall> Calls(JsonElement message, string where)
    {
        if (!message.TryGetProperty("tool_calls", out var calls) || calls.ValueKind == JsonValueKind.Null) return [];
        if (calls.ValueKind != JsonValueKind.Array) throw new ApiError(400, $"{where}.tool_calls must be an array.", $"{where}.tool_calls");
        var list = new List<FunctionCall>();
        foreach (var call in calls.EnumerateArray())
        {
            string field = $"{where}.tool_calls[{list.Count}]";
            if (call.ValueKind != JsonValueKind.Object || !call.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object)
                throw new ApiError(400, $"{field} must be an object with a 'function'.", field);
            string id = call.TryGetProperty("id", out var i) && i.ValueKind == JsonValueKind.String ? Text(i, $"{field}.id") : "";
            if (id.Length == 0) throw new ApiError(400, $"{field}.id must be a non-empty string.", $"{field}.id");
            string name = function.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String ? Text(n, $"{field}.function.name") : "";
            if (!ToolName.IsMatch(name)) throw new ApiError(400, $"{field}.function.name must be 1–64 letters, digits, '_' or '-'.", $"{field}.function.name");
            string arguments = function.TryGetProperty("arguments", out var a) && a.ValueKind == JsonValueKind.String ? Text(a, $"{field}.function.arguments") : "{}";
            list.Add(new FunctionCall(id, name, arguments));
        }
        return list;
    }

    static readonly Regex ToolName = new(@"\A[A-Za-z0-9_-]{1,64}\z", RegexOptions.Compiled);

    /// <summary><c>response_format</c>, <c>tools</c> and <c>tool_choice</c>: what the answer must look like.</summary>
    static AnswerShape Shape(JsonElement root)
    {
        SchemaNode? format = null;
        if (root.TryGetProperty("response_format", out var rf) && rf.ValueKind != JsonValueKind.Null)
            format = rf.ValueKind == JsonValueKind.Object && rf.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String && Text(t, "response_format.type") == "json_schema"
                ? rf.TryGetProperty("json_schema", out var js) && js.ValueKind == JsonValueKind.Object && js.TryGetProperty("schema", out var schema)
                    ? Schema(schema, "response_format.json_schema.schema")
                    : throw new ApiError(400, "'response_format.json_schema.schema' is required for type json_schema.", "response_format.json_schema.schema")
                : Format(rf, "response_format");
        var tools = new List<FunctionTool>();
        if (root.TryGetProperty("tools", out var list) && list.ValueKind != JsonValueKind.Null)
        {
            if (list.ValueKind != JsonValueKind.Array) throw new ApiError(400, "'tools' must be an array.", "tools");
            foreach (var tool in list.EnumerateArray())
            {
                string field = $"tools[{tools.Count}]";
                if (tool.ValueKind != JsonValueKind.Object || !tool.TryGetProperty("type", out var tt) || tt.ValueKind != JsonValueKind.String || Text(tt, $"{field}.type") != "function")
                    throw new ApiError(400, $"{field}.type must be \"function\".", $"{field}.type");
                if (!tool.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object)
                    throw new ApiError(400, $"{field}.function must be an object.", $"{field}.function");
                tools.Add(Tool(function, $"{field}.function", "parameters", tools));
            }
        }
        var (choice, named) = (ToolChoiceMode.Auto, (string?)null);
        if (root.TryGetProperty("tool_choice", out var tc) && tc.ValueKind != JsonValueKind.Null)
        {
            const string expected = "'tool_choice' must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\": ...}}.";
            (choice, named) = tc.ValueKind == JsonValueKind.String ? (ChoiceMode(Text(tc, "tool_choice"), "tool_choice", expected), null)
                : tc.ValueKind == JsonValueKind.Object && tc.TryGetProperty("function", out var f) && f.ValueKind == JsonValueKind.Object
                  && f.TryGetProperty("name", out var fn) && fn.ValueKind == JsonValueKind.String ? (ToolChoiceMode.Named, Text(fn, "tool_choice.function.name"))
                : throw new ApiError(400, expected, "tool_choice");
        }
        return NewShape(format, tools, choice, named, root.TryGetProperty("tool_choice", out var given) && given.ValueKind != JsonValueKind.Null, "tool_choice");
    }

    /// <summary>A response format object <c>{"type": "text" | "json_object" | "json_schema", ...}</c> whose schema sits in <c>schema</c> (Responses' <c>text.format</c>); null for text.</summary>
    internal static SchemaNode? Format(JsonElement format, string field)
    {
        string type = format.ValueKind == JsonValueKind.Object && format.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? Text(t, $"{field}.type") : "";
        return type switch
        {
            "text" => null,
            "json_object" => JsonSchema.AnyObject(),
            "json_schema" => format.TryGetProperty("schema", out var schema) && schema.ValueKind == JsonValueKind.Object
                ? Schema(schema, $"{field}.schema") : throw new ApiError(400, $"'{field}.schema' is required for type json_schema.", $"{field}.schema"),
            _ => throw new ApiError(400, $"'{field}.type' must be text, json_object or json_schema.", $"{field}.type"),
        };
    }

    /// <summary>A function tool from an object holding <c>name</c>, <c>description</c> and its arguments' schema in <paramref name="parametersName"/>.</summary>
    internal static FunctionTool Tool(JsonElement function, string field, string parametersName, IReadOnlyList<FunctionTool> earlier)
    {
        string name = function.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String ? Text(n, $"{field}.name") : "";
        if (!ToolName.IsMatch(name)) throw new ApiError(400, $"{field}.name must be 1–64 letters, digits, '_' or '-'.", $"{field}.name");
        if (earlier.Any(x => x.Name == name)) throw new ApiError(400, $"{field}.name '{name}' is already the name of another tool.", $"{field}.name");
        string? description = function.TryGetProperty("description", out var d) && d.ValueKind == JsonValueKind.String ? Text(d, $"{field}.description") : null;
        var arguments = function.TryGetProperty(parametersName, out var p) && p.ValueKind != JsonValueKind.Null
            ? Schema(p, $"{field}.{parametersName}") : JsonSchema.Compile(JsonDocument.Parse("""{"type": "object", "properties": {}}""").RootElement);
        return new FunctionTool(name, description, arguments, function.TryGetProperty(parametersName, out var given) && given.ValueKind == JsonValueKind.Object ? given.Clone() : null);
    }

    /// <summary>A tool choice given by name (auto, none, required, or another API's word for them).</summary>
    internal static ToolChoiceMode ChoiceMode(string mode, string field, string expected) => mode switch
    {
        "auto" => ToolChoiceMode.Auto, "none" => ToolChoiceMode.None, "required" or "any" => ToolChoiceMode.Required,
        _ => throw new ApiError(400, expected, field),
    };

    /// <summary>The answer's shape, checking that a tool choice has tools to choose from and names one of them.</summary>
    internal static AnswerShape NewShape(SchemaNode? format, IReadOnlyList<FunctionTool> tools, ToolChoiceMode choice, string? named, bool choiceGiven, string choiceField)
    {
        if (choiceGiven && tools.Count == 0) throw new ApiError(400, $"'{choiceField}' needs 'tools'.", choiceField);
        if (named is not null && tools.All(x => x.Name != named))
            throw new ApiError(400, $"'{choiceField}' names '{named}', which is not among 'tools' ({string.Join(", ", tools.Select(x => x.Name))}).", choiceField);
        return new AnswerShape(format, tools.Count == 0 ? null : tools, choice, named);
    }

    internal static SchemaNode Schema(JsonElement schema, string field)
    {
        try { return JsonSchema.Compile(schema); }
        catch (JsonSchemaException e) { throw new ApiError(400, $"'{field}' is not a schema structured output can follow: {e.Message}", field, "invalid_json_schema"); }
        catch (InvalidOperationException) { throw new ApiError(400, $"'{field}' holds text that is not valid Unicode (a lone surrogate such as \\ud800).", field, "invalid_json_schema"); }
    }

    public static CompletionRequest Completion(JsonElement root)
    {
        string model = Model(root);
        if (!root.TryGetProperty("prompt", out var prompt)) throw new ApiError(400, "'prompt' is required.", "prompt");
        string text = prompt.ValueKind switch
        {
            JsonValueKind.String => Text(prompt, "prompt"),
            JsonValueKind.Array when prompt.GetArrayLength() == 1 && prompt[0].ValueKind == JsonValueKind.String => Text(prompt[0], "prompt"),
            _ => throw new ApiError(400, "'prompt' must be a string (or an array of one string).", "prompt"),
        };
        if (text.Length == 0) throw new ApiError(400, "'prompt' must not be empty.", "prompt");
        return new CompletionRequest(model, text, Sampling(root, chat: false));
    }

    internal static string Model(JsonElement root) =>
        root.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.String && Text(m, "model") is { Length: > 0 } name
            ? name : throw new ApiError(400, "'model' is required and must be a non-empty string.", "model");

    /// <summary>A JSON string's value; a lone UTF-16 surrogate (valid JSON, invalid text) is a 400 naming the field.</summary>
    internal static string Text(JsonElement value, string field)
    {
        try { return value.GetString()!; }
        catch (InvalidOperationException)
        {
            throw new ApiError(400, $"'{field}' is not valid Unicode text (it holds a lone surrogate such as \\ud800).", field);
        }
    }

    static string Content(JsonElement message, string where)
    {
        if (!message.TryGetProperty("content", out var content) || content.ValueKind == JsonValueKind.Null) return "";
        if (content.ValueKind == JsonValueKind.String) return Text(content, $"{where}.content");
        if (content.ValueKind == JsonValueKind.Array)
            return string.Concat(content.EnumerateArray().Select((part, i) =>
            {
                string field = $"{where}.content[{i}]";
                if (part.ValueKind != JsonValueKind.Object) throw new ApiError(400, $"{field} must be an object {{\"type\": \"text\", \"text\": \"...\"}}.", field);
                if (!part.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || Text(type, $"{field}.type") != "text")
                    throw new ApiError(400, $"{field}.type must be \"text\": only text parts are supported.", $"{field}.type");
                if (!part.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                    throw new ApiError(400, $"{field}.text must be a string.", $"{field}.text");
                return Text(text, $"{field}.text");
            }));
        throw new ApiError(400, $"{where}.content must be a string or an array of text parts.", $"{where}.content");
    }

    static RequestSampling Sampling(JsonElement root, bool chat)
    {
        double temperature = Number(root, "temperature", 1.0, 0, 2);
        double topP = Number(root, "top_p", 1.0, double.Epsilon, 1);
        int? maxTokens = null;
        foreach (string name in chat ? new[] { "max_tokens", "max_completion_tokens" } : ["max_tokens"])
            if (root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null)
                maxTokens = v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int n) && n >= 1 ? n : throw new ApiError(400, $"'{name}' must be an integer of at least 1.", name);
        int choices = Integer(root, "n", 1, 1, MaxChoices) ?? 1;
        var stop = new List<string>();
        if (root.TryGetProperty("stop", out var s))
        {
            if (s.ValueKind == JsonValueKind.String) stop.Add(Text(s, "stop"));
            else if (s.ValueKind == JsonValueKind.Array) stop.AddRange(s.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? Text(x, "stop") : throw new ApiError(400, "'stop' must be a string or an array of strings.", "stop")));
            else if (s.ValueKind != JsonValueKind.Null) throw new ApiError(400, "'stop' must be a string or an array of strings.", "stop");
            if (stop.Count > 4 || stop.Any(x => x.Length == 0)) throw new ApiError(400, "'stop' takes up to 4 non-empty sequences.", "stop");
        }
        long? seed = root.TryGetProperty("seed", out var sd) && sd.ValueKind != JsonValueKind.Null
            ? (sd.ValueKind == JsonValueKind.Number && sd.TryGetInt64(out long sv) ? sv : throw new ApiError(400, "'seed' must be an integer.", "seed")) : null;
        bool stream = Boolean(root, "stream");
        if (root.TryGetProperty("stream_options", out var so) && so.ValueKind is not (JsonValueKind.Object or JsonValueKind.Null))
            throw new ApiError(400, "'stream_options' must be an object.", "stream_options");
        bool usage = so.ValueKind == JsonValueKind.Object && so.TryGetProperty("include_usage", out var iu) && iu.ValueKind == JsonValueKind.True;
        double presence = Number(root, "presence_penalty", 0, -2, 2), frequency = Number(root, "frequency_penalty", 0, -2, 2);
        int? topLogprobs;
        if (chat)
        {
            // Chat: logprobs is a switch, top_logprobs the number of alternatives (and only with the switch on).
            int? alternatives = Integer(root, "top_logprobs", null, 0, MaxTopLogprobs);
            bool logprobs = Boolean(root, "logprobs");
            if (alternatives is not null && !logprobs) throw new ApiError(400, "'top_logprobs' needs 'logprobs': true.", "top_logprobs");
            topLogprobs = logprobs ? alternatives ?? 0 : null;
        }
        else topLogprobs = Integer(root, "logprobs", null, 0, 5);   // completions: the number of alternatives, at most 5
        return new RequestSampling(temperature, topP, maxTokens, stop, seed, stream, usage, choices, presence, frequency, topLogprobs);
    }

    internal static bool Boolean(JsonElement root, string name) => root.TryGetProperty(name, out var v) && v.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False or JsonValueKind.Null => false,
        _ => throw new ApiError(400, $"'{name}' must be a boolean.", name),
    };

    internal static int? Integer(JsonElement root, string name, int? fallback, int min, int max)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int n) || n < min || n > max)
            throw new ApiError(400, $"'{name}' must be an integer from {min} to {max}.", name);
        return n;
    }

    internal static double Number(JsonElement root, string name, double fallback, double min, double max)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double d) || d < min || d > max)
            throw new ApiError(400, $"'{name}' must be a number in [{(min == double.Epsilon ? "0 (exclusive)" : min.ToString())}, {max}].", name);
        return d;
    }
}
