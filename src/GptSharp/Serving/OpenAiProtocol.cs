using GptSharp.Tokenization;
using System.Text.Json;

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
public sealed record RequestSampling(double Temperature, double TopP, int? MaxTokens, IReadOnlyList<string> Stop, long? Seed, bool Stream, bool IncludeUsage,
    int Choices = 1, double PresencePenalty = 0, double FrequencyPenalty = 0, int? TopLogprobs = null);

/// <summary>A parsed <c>/v1/chat/completions</c> request.</summary>
public sealed record ChatRequest(string Model, IReadOnlyList<ChatMessage> Messages, RequestSampling Sampling);

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
        var list = new List<ChatMessage>();
        int i = 0;
        foreach (var message in messages.EnumerateArray())
        {
            string where = $"messages[{i++}]";
            if (message.ValueKind != JsonValueKind.Object) throw new ApiError(400, $"{where} must be an object.", where);
            string role = message.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String ? Text(r, $"{where}.role") : "";
            role = role == "developer" ? ChatRoles.System : role;
            if (role is not (ChatRoles.System or ChatRoles.User or ChatRoles.Assistant))
                throw new ApiError(400, $"{where}.role '{role}' is not supported; expected system, developer, user or assistant.", $"{where}.role");
            string content = Content(message, where);
            if (content.Length == 0 && role != ChatRoles.Assistant) throw new ApiError(400, $"{where}.content must not be empty.", $"{where}.content");
            list.Add(new ChatMessage(role, content));
        }
        if (!list.Any(m => m.Role == ChatRoles.User)) throw new ApiError(400, "'messages' needs at least one user message.", "messages");
        return new ChatRequest(model, list, Sampling(root, chat: true));
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

    static string Model(JsonElement root) =>
        root.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.String && Text(m, "model") is { Length: > 0 } name
            ? name : throw new ApiError(400, "'model' is required and must be a non-empty string.", "model");

    /// <summary>A JSON string's value; a lone UTF-16 surrogate (valid JSON, invalid text) is a 400 naming the field.</summary>
    static string Text(JsonElement value, string field)
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

    static bool Boolean(JsonElement root, string name) => root.TryGetProperty(name, out var v) && v.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False or JsonValueKind.Null => false,
        _ => throw new ApiError(400, $"'{name}' must be a boolean.", name),
    };

    static int? Integer(JsonElement root, string name, int? fallback, int min, int max)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int n) || n < min || n > max)
            throw new ApiError(400, $"'{name}' must be an integer from {min} to {max}.", name);
        return n;
    }

    static double Number(JsonElement root, string name, double fallback, double min, double max)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double d) || d < min || d > max)
            throw new ApiError(400, $"'{name}' must be a number in [{(min == double.Epsilon ? "0 (exclusive)" : min.ToString())}, {max}].", name);
        return d;
    }
}
