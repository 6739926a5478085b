using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace GptSharp.Fuzzing;

/// <summary>
/// Mutates valid chat, completion, Responses, Anthropic Messages and embeddings requests (types, extreme and edge values, unicode, nesting, missing and extra
/// fields, broken bytes, and schemas built to hurt: <c>$ref</c> chains thousands long, deep nesting, bounds near 2^31,
/// enums of thousands of values) and sends them to a running server a few at a time, each round beside one well-formed
/// greedy request whose latency is reported. Invariants: never a 5xx; never a stack trace or a path in a body; every 4xx
/// in its API's error shape (OpenAI's, or Anthropic's on /v1/messages); every stream ends as its API ends one ([DONE],
/// response.completed, message_stop) without an error event; health stays ok; the well-formed request in the same batch
/// always gets its right answer.
/// </summary>
public static class RequestFuzzer
{
    const string Surrogate = "@@SURROGATE@@", Huge = "@@HUGE@@";
    static readonly JsonSerializerOptions Deep = new() { MaxDepth = 256 };

    /// <summary>The API a fuzzed request goes to.</summary>
    enum Api { Chat, Completion, Responses, Messages, Embeddings }

    static string PathOf(Api api) => api switch
    {
        Api.Chat => "/v1/chat/completions", Api.Completion => "/v1/completions", Api.Responses => "/v1/responses", Api.Messages => "/v1/messages",
        _ => "/v1/embeddings",
    };

    static readonly string[] Leaks = ["   at ", ".cs:line", "Exception", "/usr/", "/home/", "/tmp/", "/work/", "libtorch", "c10::", "TorchSharp"];

    /// <param name="control">A well-formed request body (greedy) and the exact answer text it must always get.</param>
    public static async Task<FuzzReport> Run(HttpClient http, string model, (string Body, string Answer) control, int cases, int seed, int concurrency = 3)
    {
        var random = new Random(seed);
        var outcomes = new Dictionary<string, int>();
        var violations = new List<string>();
        var controlMilliseconds = new List<double>();
        var watch = Stopwatch.StartNew();
        for (int done = 0; done < cases; done += concurrency)
        {
            var bodies = Enumerable.Range(0, Math.Min(concurrency, cases - done)).Select(_ => Case(random, model)).ToList();
            var fuzzed = bodies.Select(b => Send(http, PathOf(b.Api), (b.Body, b.ContentType))).ToList();
            var controlClock = Stopwatch.StartNew();
            var controlReply = Send(http, PathOf(Api.Chat), (Encoding.UTF8.GetBytes(control.Body), "application/json"));
            await controlReply;
            controlMilliseconds.Add(controlClock.Elapsed.TotalMilliseconds);
            await Task.WhenAll(fuzzed);
            for (int i = 0; i < bodies.Count; i++)
            {
                var (status, text) = fuzzed[i].Result;
                string key = status.ToString();
                outcomes[key] = outcomes.GetValueOrDefault(key) + 1;
                if (Check(bodies[i].Api, status, text, status == 200 ? ChoicesAsked(bodies[i].Body) : 1) is { } problem) violations.Add($"{problem} — request {Encoding.UTF8.GetString(bodies[i].Body)[..Math.Min(600, bodies[i].Body.Length)]} — reply {status} {text[..Math.Min(300, text.Length)]}");
            }
            var (controlStatus, controlText) = controlReply.Result;
            string? answer = controlStatus == 200 ? JsonNode.Parse(controlText)?["choices"]?[0]?["message"]?["content"]?.GetValue<string>() : null;
            if (answer != control.Answer) violations.Add($"the well-formed request beside them got {controlStatus} '{answer ?? controlText}', expected '{control.Answer}'");
            if (done % 60 == 0)
            {
                var health = await http.GetAsync("/health");
                if (!health.IsSuccessStatusCode || !(await health.Content.ReadAsStringAsync()).Contains("\"ok\"")) violations.Add($"health is {health.StatusCode} after {done} cases");
            }
            if (violations.Count > 20) break;
        }
        return new FuzzReport(cases, outcomes, violations, watch.Elapsed.TotalSeconds, controlMilliseconds);
    }

    static async Task<(int Status, string Text)> Send(HttpClient http, string path, (byte[] Body, string ContentType) request)
    {
        var content = new ByteArrayContent(request.Body);
        content.Headers.ContentType = MediaTypeHeaderValue.Parse(request.ContentType);
        using var reply = await http.PostAsync(path, content);
        return ((int)reply.StatusCode, await reply.Content.ReadAsStringAsync());
    }

    /// <summary>Why a reply breaks an invariant, or null.</summary>
    static string? Check(Api api, int status, string text, int choicesAsked)
    {
        if (status >= 500) return $"a {status}";
        if (Leaks.FirstOrDefault(text.Contains) is { } leak) return $"the body leaks '{leak}'";
        if (status >= 400)
        {
            try
            {
                var body = JsonNode.Parse(text);
                var error = body?["error"];
                if (error?["message"]?.GetValueKind() != JsonValueKind.String || error["type"]?.GetValueKind() != JsonValueKind.String)
                    return "a 4xx not in its API's error shape";
                if (api == Api.Messages && body?["type"]?.GetValue<string>() != "error") return "a /v1/messages 4xx not in Anthropic's error shape";
            }
            catch (JsonException) { return "a 4xx whose body is not JSON"; }
            return null;
        }
        if (text.StartsWith("data: ", StringComparison.Ordinal))
        {
            if (!text.EndsWith("data: [DONE]\n\n", StringComparison.Ordinal)) return "a stream that does not end with [DONE]";
            if (text.Contains("\"error\"")) return "an error inside a 200 stream";
            return null;
        }
        if (text.StartsWith("event: ", StringComparison.Ordinal))
        {
            string last = text.TrimEnd().Split("\n\n")[^1];
            string[] endings = api == Api.Messages ? ["event: message_stop"] : ["event: response.completed", "event: response.incomplete"];
            if (!endings.Any(last.StartsWith)) return $"a stream that does not end with {string.Join(" or ", endings)}";
            if (text.Contains("event: error")) return "an error inside a 200 stream";
            return null;
        }
        try
        {
            var body = JsonNode.Parse(text);
            return api switch
            {
                Api.Responses => body?["object"]?.GetValue<string>() == "response" && body["output"] is JsonArray { Count: > 0 } ? null : "a 200 without a response's output",
                Api.Messages => body?["type"]?.GetValue<string>() == "message" && body["content"] is JsonArray { Count: > 0 } ? null : "a 200 without a message's content",
                Api.Embeddings => body?["data"] is JsonArray { Count: > 0 } ? null : "a 200 without embeddings",
                _ => body?["choices"] is JsonArray choices && choices.Count == choicesAsked ? null : $"a 200 without {choicesAsked} choice(s)",
            };
        }
        catch (JsonException) { return "a 200 whose body is not JSON"; }
    }

    /// <summary>How many choices a 200 must carry: the request's <c>n</c>, or 1 (only asked of bodies the server accepted, so they parse).</summary>
    static int ChoicesAsked(byte[] body)
    {
        try { return JsonNode.Parse(body)?["n"] is JsonValue n && n.TryGetValue(out int count) ? count : 1; }
        catch (JsonException) { return 1; }
    }

    static (byte[] Body, string ContentType, Api Api) Case(Random random, string model)
    {
        var api = random.Next(9) switch { < 4 => Api.Chat, 4 => Api.Completion, 5 or 6 => Api.Responses, 7 => Api.Messages, _ => Api.Embeddings };
        bool chat = api == Api.Chat;
        var root = new JsonObject { ["model"] = model };
        root[api == Api.Responses ? "max_output_tokens" : "max_tokens"] = random.Next(1, 6);
        switch (api)
        {
            case Api.Chat: root["messages"] = new JsonArray(Message("system", "你是詩人。"), Message("user", "床前明月光")); break;
            case Api.Completion: root["prompt"] = "床前明月光"; break;
            case Api.Embeddings:
                root.Remove("max_tokens");
                root["input"] = random.Next(2) == 0 ? "床前明月光" : new JsonArray("床前明月光", "疑是地上霜");
                break;
            case Api.Responses:
                root["input"] = random.Next(2) == 0 ? "床前明月光" : new JsonArray(Message("user", "床前明月光"));
                if (random.Next(2) == 0) root["instructions"] = "你是詩人。";
                break;
            default:
                root["system"] = "你是詩人。";
                root["messages"] = new JsonArray(Message("user", "床前明月光"));
                break;
        }
        if (random.Next(3) == 0) root["stream"] = true;
        if (random.Next(3) == 0) root["temperature"] = random.NextDouble() * (api == Api.Messages ? 1 : 2);
        int mutations = 1 + random.Next(3);
        for (int m = 0; m < mutations; m++)
        {
            if (api == Api.Embeddings) MutateEmbeddings(random, root);
            else if (api == Api.Responses) MutateResponses(random, root);
            else if (api == Api.Messages) MutateMessages(random, root);
            else Mutate(random, root, chat);
        }
        string text = root.ToJsonString(Deep);
        text = text.Replace($"\"{Surrogate}\"", "\"\\ud800x\"").Replace($"\"{Huge}\"", "1e400");
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        switch (random.Next(20))
        {
            case 0: bytes = bytes[..random.Next(bytes.Length)]; break;                                        // truncated
            case 1: bytes[random.Next(bytes.Length)] = (byte)random.Next(256); break;                        // one byte replaced
            case 2: bytes = [.. bytes[..(bytes.Length / 2)], 0xC3, 0x28, .. bytes[(bytes.Length / 2)..]]; break; // invalid UTF-8
            case 3: return (bytes, random.Next(2) == 0 ? "text/plain" : "application/x-www-form-urlencoded", api);
        }
        return (bytes, random.Next(10) == 0 ? "application/json; charset=utf-8" : "application/json", api);
    }

    /// <summary>An embeddings request's fields and inputs: strings, token ids in and out of the vocabulary, nesting, too long, empty.</summary>
    static void MutateEmbeddings(Random random, JsonObject root)
    {
        string[] fields = ["model", "input", "encoding_format", "dimensions", "user"];
        switch (random.Next(4))
        {
            case 0: root[fields[random.Next(fields.Length)]] = Value(random); break;
            case 1: root.Remove(fields[random.Next(fields.Length)]); break;
            case 2:
                root["input"] = random.Next(4) switch
                {
                    0 => new JsonArray(1, 2, random.Next(2) == 0 ? 3 : Value(random)),
                    1 => new JsonArray(new JsonArray(5, 6), Value(random)),
                    2 => new string('詩', random.Next(1, 200)),
                    _ => new JsonArray(),
                };
                break;
            default: root["encoding_format"] = random.Next(2) == 0 ? "base64" : Value(random); break;
        }
    }

    static readonly string[] ResponsesFields =
        ["model", "input", "instructions", "temperature", "top_p", "max_output_tokens", "stream", "store", "previous_response_id", "tools", "tool_choice", "text", "metadata", "parallel_tool_calls"];

    /// <summary>A Responses request's fields, input items (messages, calls and outputs, matching or not, unknown types), tools and formats.</summary>
    static void MutateResponses(Random random, JsonObject root)
    {
        switch (random.Next(6))
        {
            case 0 or 1: root[ResponsesFields[random.Next(ResponsesFields.Length)]] = Value(random); break;
            case 2: root.Remove(ResponsesFields[random.Next(ResponsesFields.Length)]); break;
            case 3:
                var items = root["input"] as JsonArray ?? [];
                root["input"] = items;
                items.Add(random.Next(5) switch
                {
                    0 => new JsonObject { ["type"] = "function_call", ["call_id"] = "c1", ["name"] = "get_weather", ["arguments"] = random.Next(2) == 0 ? "{\"city\":\"x\"}" : Value(random) },
                    1 => new JsonObject { ["type"] = "function_call_output", ["call_id"] = random.Next(2) == 0 ? "c1" : Value(random), ["output"] = Value(random) },
                    2 => new JsonObject { ["type"] = Value(random), ["role"] = "user", ["content"] = "x" },
                    3 => new JsonObject { ["role"] = random.Next(2) == 0 ? "assistant" : Value(random), ["content"] = new JsonArray(new JsonObject { ["type"] = random.Next(2) == 0 ? "output_text" : Value(random), ["text"] = Value(random) }) },
                    _ => Value(random),
                });
                break;
            case 4:
                root["tools"] = new JsonArray(new JsonObject { ["type"] = random.Next(6) == 0 ? Value(random) : "function", ["name"] = random.Next(4) == 0 ? Value(random) : "get_weather", ["parameters"] = random.Next(3) == 0 ? Value(random) : Schema(random) });
                root["tool_choice"] = random.Next(4) switch { 0 => "required", 1 => "none", 2 => new JsonObject { ["type"] = "function", ["name"] = random.Next(2) == 0 ? "get_weather" : Value(random) }, _ => Value(random) };
                break;
            default:
                root["text"] = new JsonObject { ["format"] = random.Next(3) switch
                {
                    0 => new JsonObject { ["type"] = "json_schema", ["name"] = "x", ["schema"] = Schema(random) },
                    1 => new JsonObject { ["type"] = random.Next(2) == 0 ? "json_object" : Value(random) },
                    _ => Value(random),
                } };
                break;
        }
    }

    static readonly string[] MessagesFields =
        ["model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k", "stop_sequences", "stream", "tools", "tool_choice", "metadata"];

    /// <summary>An Anthropic request's fields, content blocks (text, tool_use, tool_result matching or not, images), tools and tool choices.</summary>
    static void MutateMessages(Random random, JsonObject root)
    {
        switch (random.Next(6))
        {
            case 0 or 1: root[MessagesFields[random.Next(MessagesFields.Length)]] = Value(random); break;
            case 2: root.Remove(MessagesFields[random.Next(MessagesFields.Length)]); break;
            case 3 when root["messages"] is JsonArray turns:
                turns.Add(new JsonObject { ["role"] = "assistant", ["content"] = new JsonArray(
                    new JsonObject { ["type"] = "text", ["text"] = Value(random) },
                    new JsonObject { ["type"] = "tool_use", ["id"] = "toolu_1", ["name"] = "get_weather", ["input"] = random.Next(2) == 0 ? new JsonObject { ["city"] = "x" } : Value(random) }) });
                turns.Add(new JsonObject { ["role"] = random.Next(6) == 0 ? Value(random) : "user", ["content"] = new JsonArray(
                    new JsonObject { ["type"] = random.Next(6) == 0 ? Value(random) : "tool_result", ["tool_use_id"] = random.Next(3) == 0 ? Value(random) : "toolu_1", ["content"] = Value(random) }) });
                break;
            case 4:
                root["tools"] = new JsonArray(new JsonObject { ["name"] = random.Next(4) == 0 ? Value(random) : "get_weather", ["input_schema"] = random.Next(3) == 0 ? Value(random) : Schema(random) });
                root["tool_choice"] = random.Next(4) switch
                {
                    0 => new JsonObject { ["type"] = "any" }, 1 => new JsonObject { ["type"] = "none" },
                    2 => new JsonObject { ["type"] = "tool", ["name"] = random.Next(2) == 0 ? "get_weather" : Value(random) }, _ => Value(random),
                };
                break;
            default:
                root["stop_sequences"] = random.Next(2) == 0 ? new JsonArray("月", Value(random)) : Value(random);
                break;
        }
    }

    static JsonObject Message(string role, string content) => new() { ["role"] = role, ["content"] = content };

    static readonly string[] Fields =
    [
        "model", "messages", "prompt", "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stop", "seed", "stream",
        "stream_options", "user", "logprobs", "tools", "response_format", "frequency_penalty",
    ];

    static void Mutate(Random random, JsonObject root, bool chat)
    {
        switch (random.Next(8))
        {
            case 6 when chat: root["response_format"] = Format(random); break;
            case 7 when chat:
                root["tools"] = new JsonArray(Tool(random), random.Next(2) == 0 ? Tool(random) : Value(random));
                root["tool_choice"] = random.Next(5) switch
                {
                    0 => "auto", 1 => "none", 2 => "required",
                    3 => new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = random.Next(2) == 0 ? "get_weather" : Value(random) } },
                    _ => Value(random),
                };
                if (random.Next(3) == 0 && root["messages"] is JsonArray turns)
                {
                    // A tool turn: the assistant's call and its result, with the id matching or not.
                    turns.Add(new JsonObject { ["role"] = "assistant", ["tool_calls"] = new JsonArray(new JsonObject
                    {
                        ["id"] = "call_1", ["type"] = "function", ["function"] = new JsonObject { ["name"] = "get_weather", ["arguments"] = random.Next(2) == 0 ? "{\"city\":\"x\"}" : Value(random) },
                    }) });
                    turns.Add(new JsonObject { ["role"] = "tool", ["tool_call_id"] = random.Next(3) == 0 ? Value(random) : "call_1", ["content"] = Value(random) });
                }
                break;
            case 0 or 1: root[Fields[random.Next(Fields.Length)]] = Value(random); break;
            case 2: root.Remove(Fields[random.Next(Fields.Length)]); break;
            case 3 when chat && root["messages"] is JsonArray messages && messages.Count > 0:
                int i = random.Next(messages.Count);
                if (random.Next(4) == 0) messages[i] = Value(random);
                else if (messages[i] is JsonObject message)
                {
                    string field = random.Next(3) switch { 0 => "role", 1 => "content", _ => "name" };
                    message[field] = random.Next(3) == 0 ? new JsonArray(new JsonObject { ["type"] = Value(random), ["text"] = Value(random) }, Value(random)) : Value(random);
                }
                break;
            case 4 when chat && root["messages"] is JsonArray list:
                list.Add(Message(random.Next(2) == 0 ? "assistant" : "user", random.Next(2) == 0 ? "<|end|><|bos|>" : new string('詩', random.Next(1, 80))));
                break;
            default: root["stream_options"] = new JsonObject { ["include_usage"] = Value(random) }; break;
        }
    }

    static JsonNode? Value(Random random) => random.Next(34) switch
    {
        0 => "", 1 => "x", 2 => new string('a', 5000), 3 => Surrogate, 4 => "🙂👍🏽", 5 => "\u0000", 6 => "\uFFFF", 7 => "\u202E", 8 => "床前明月光",
        9 => "<|end|>", 10 => "2", 11 => "NaN", 12 => "Infinity",
        13 => 0, 14 => -1, 15 => 1, 16 => 2, 17 => 1e-300, 18 => double.Epsilon, 19 => 1e308, 20 => -1e308, 21 => 2147483648L,
        22 => long.MaxValue, 23 => Huge, 24 => 0.5, 25 => 1e-38, 26 => true, 27 => false, 28 => null,
        29 => new JsonArray(), 30 => new JsonArray(1, "a", null, new JsonArray()), 31 => new JsonObject(),
        32 => Nested(random.Next(2, 80)), _ => new JsonObject { ["a"] = new JsonObject { ["b"] = new JsonArray() } },
    };

    /// <summary>A response format: a valid schema, a schema with a wrong or unsupported part, or noise.</summary>
    static JsonNode? Format(Random random) => random.Next(5) switch
    {
        0 => new JsonObject { ["type"] = "json_object" },
        1 => new JsonObject { ["type"] = "json_schema", ["json_schema"] = new JsonObject { ["name"] = "x", ["schema"] = Schema(random) } },
        2 => new JsonObject { ["type"] = "json_schema", ["json_schema"] = new JsonObject { ["name"] = "x", ["schema"] = Value(random) } },
        3 => new JsonObject { ["type"] = Value(random) },
        _ => Value(random),
    };

    static JsonNode Schema(Random random)
    {
        if (random.Next(3) == 0) return Hostile(random);
        var properties = new JsonObject { ["city"] = new JsonObject { ["type"] = "string", ["maxLength"] = random.Next(0, 12) }, ["n"] = new JsonObject { ["type"] = random.Next(4) == 0 ? Value(random) : "integer" } };
        var schema = new JsonObject { ["type"] = "object", ["properties"] = properties, ["required"] = new JsonArray("city") };
        if (random.Next(4) == 0) schema[random.Next(2) == 0 ? "pattern" : "items"] = Value(random);
        if (random.Next(6) == 0) schema["required"] = new JsonArray("nothing");
        return schema;
    }

    /// <summary>A schema built to hurt the compiler or the matcher: long <c>$ref</c> chains, deep nesting, huge bounds, large enums.</summary>
    static JsonNode Hostile(Random random)
    {
        switch (random.Next(4))
        {
            case 0:
                // def0 → def1 → … → defN, each an object whose one required property is the next: recursion as deep as N.
                int length = random.Next(2) == 0 ? random.Next(2, 70) : random.Next(70, 500);
                var defs = new JsonObject();
                for (int i = 0; i < length; i++)
                    defs[$"d{i}"] = i == length - 1 ? new JsonObject { ["type"] = "string" }
                        : new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["x"] = new JsonObject { ["$ref"] = $"#/$defs/d{i + 1}" } }, ["required"] = new JsonArray("x") };
                return new JsonObject { ["$ref"] = "#/$defs/d0", ["$defs"] = defs };
            case 1:
                JsonNode nested = new JsonObject { ["type"] = "integer" };
                for (int depth = random.Next(10, 40); depth > 0; depth--)
                    nested = random.Next(2) == 0 ? new JsonObject { ["type"] = "array", ["items"] = nested }
                        : new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["a"] = nested } };
                return nested;
            case 2:
                JsonNode[] bounds = [2147483647, 2147483600, 540_000_000, 1e300, 1_000_000, 1_000_001, -1, 1.5, 0, 3];
                string keyword = random.Next(4) switch { 0 => "minLength", 1 => "maxLength", 2 => "minItems", _ => "maxItems" };
                var bounded = keyword.EndsWith("Length") ? new JsonObject { ["type"] = "string" } : new JsonObject { ["type"] = "array", ["items"] = new JsonObject { ["type"] = "string", ["minLength"] = bounds[random.Next(bounds.Length)]?.DeepClone() } };
                bounded[keyword] = bounds[random.Next(bounds.Length)]?.DeepClone();
                return new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["v"] = bounded }, ["required"] = new JsonArray("v") };
            default:
                int count = random.Next(2) == 0 ? random.Next(1, 50) : random.Next(500, 3000);
                var values = new JsonArray();
                for (int i = 0; i < count; i++) values.Add(random.Next(4) == 0 ? i : $"v{i}");
                return new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["pick"] = new JsonObject { ["enum"] = values } }, ["required"] = new JsonArray("pick") };
        }
    }

    static JsonNode Tool(Random random) => new JsonObject
    {
        ["type"] = random.Next(8) == 0 ? Value(random) : "function",
        ["function"] = new JsonObject { ["name"] = random.Next(4) == 0 ? Value(random) : "get_weather", ["parameters"] = random.Next(3) == 0 ? Value(random) : Schema(random) },
    };

    static JsonNode Nested(int depth)
    {
        JsonNode node = new JsonArray();
        for (int i = 0; i < depth; i++) node = new JsonArray(node);
        return node;
    }
}
