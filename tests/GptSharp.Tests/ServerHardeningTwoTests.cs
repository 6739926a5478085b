using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using GptSharp.Inference;
using GptSharp.Inference.Structured;
using GptSharp.Serving;
using GptSharp.Tokenization;

namespace GptSharp.Tests;

/// <summary>The second round of hostile input to the server: each test failed before its fix.</summary>
public class ServerHardeningTwoTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    static StringContent Json(JsonNode body) => new(body.ToJsonString(), Encoding.UTF8, "application/json");

    static JsonObject Chat(JsonNode? schema = null, JsonNode? tool = null, int maxTokens = 20)
    {
        var body = new JsonObject
        {
            ["model"] = "tiny-chat", ["max_tokens"] = maxTokens, ["temperature"] = 0,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "床前明月光" }),
        };
        if (schema is not null) body["response_format"] = new JsonObject { ["type"] = "json_schema", ["json_schema"] = new JsonObject { ["name"] = "x", ["schema"] = schema } };
        if (tool is not null) body["tools"] = new JsonArray(new JsonObject { ["type"] = "function", ["function"] = tool });
        return body;
    }

    static async Task<(HttpStatusCode Status, JsonNode Body)> Post(HttpClient http, JsonNode body)
    {
        var reply = await http.PostAsync("/v1/chat/completions", Json(body));
        return (reply.StatusCode, JsonNode.Parse(await reply.Content.ReadAsStringAsync())!);
    }

    /// <summary>d0 → d1 → … through <c>$ref</c>, each an object whose one required property is the next definition.</summary>
    static JsonObject RefChain(int length)
    {
        var defs = new JsonObject();
        for (int i = 0; i < length; i++)
            defs[$"d{i}"] = i == length - 1 ? new JsonObject { ["type"] = "string" }
                : new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["x"] = new JsonObject { ["$ref"] = $"#/$defs/d{i + 1}" } }, ["required"] = new JsonArray("x") };
        return new JsonObject { ["$ref"] = "#/$defs/d0", ["$defs"] = defs };
    }

    static JsonElement Element(JsonNode node) => JsonDocument.Parse(node.ToJsonString()).RootElement;

    [Fact]
    public void ALongRefChainIsRefusedBeforeItCanOverflowTheStack()
    {
        // 5,000 levels overflowed the compiler's stack (and so the process) before the depth limit.
        var error = Assert.Throws<JsonSchemaException>(() => JsonSchema.Compile(Element(RefChain(5000))));
        Assert.Contains($"more than {JsonSchema.MaxDepth} levels", error.Message);
        // A chain that fits is compiled: the shortest answer nests every level.
        var root = JsonSchema.Compile(Element(RefChain(20)));
        Assert.Equal(19 * "{\"x\":}".Length + 2, root.MinBytes);
    }

    [Fact]
    public async Task DeepSchemasAndTooManyPartsAre400sNamingTheLimitInFormatsAndTools()
    {
        var (status, body) = await Post(fixture.Http, Chat(RefChain(300)));
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains($"more than {JsonSchema.MaxDepth} levels", body["error"]!["message"]!.GetValue<string>());
        Assert.Equal("response_format.json_schema.schema", body["error"]!["param"]!.GetValue<string>());

        (status, body) = await Post(fixture.Http, Chat(tool: new JsonObject { ["name"] = "calc", ["parameters"] = RefChain(300) }));
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("tools[0].function.parameters", body["error"]!["param"]!.GetValue<string>());

        // Many parts side by side (no depth): the node limit.
        var wide = new JsonObject();
        for (int i = 0; i < JsonSchema.MaxNodes / 60 + 1; i++)
        {
            var properties = new JsonObject();
            for (int j = 0; j < 60; j++) properties[$"p{j}"] = new JsonObject { ["type"] = "integer" };
            wide[$"o{i}"] = new JsonObject { ["type"] = "object", ["properties"] = properties };
        }
        var manyParts = Assert.Throws<JsonSchemaException>(() => JsonSchema.Compile(Element(new JsonObject { ["type"] = "array", ["items"] = new JsonObject { ["anyOf"] = new JsonArray([.. wide.Select(p => p.Value!.DeepClone())]) } })));
        Assert.Contains($"more than {JsonSchema.MaxNodes:N0} parts", manyParts.Message);
        Assert.Equal(HttpStatusCode.OK, (await fixture.Http.GetAsync("/health")).StatusCode);
    }

    [Theory]
    [InlineData("minLength", 2147483600.0, "more than 1,000,000")]
    [InlineData("minLength", 540000000.0, "more than 1,000,000")]
    [InlineData("minLength", 1e300, "more than 1,000,000")]
    [InlineData("minLength", 1.5, "non-negative integer")]
    [InlineData("minItems", 2147483647.0, "more than 1,000,000")]
    [InlineData("minLength", 1000.0, "'max_tokens' leaves room")]
    public async Task HugeMinimumsAreClear400sNotUnclosedAnswers(string keyword, double bound, string reason)
    {
        var value = keyword == "minLength" ? new JsonObject { ["type"] = "string", [keyword] = bound } : new JsonObject { ["type"] = "array", [keyword] = bound };
        var schema = new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["v"] = value }, ["required"] = new JsonArray("v") };
        foreach (var body in new[] { Chat(schema), Chat(tool: new JsonObject { ["name"] = "calc", ["parameters"] = schema.DeepClone() }) })
        {
            if (body["tools"] is not null) body["tool_choice"] = "required";
            var (status, reply) = await Post(fixture.Http, body);
            Assert.Equal(HttpStatusCode.BadRequest, status);
            Assert.Contains(reason, reply["error"]!["message"]!.GetValue<string>());
        }
    }

    [Fact]
    public void MinimumsThatMultiplyPastAnyLengthSaySoNotThatAPropertyContainsItself()
    {
        var schema = Element(new JsonObject { ["type"] = "array", ["minItems"] = 1_000_000, ["items"] = new JsonObject { ["type"] = "array", ["minItems"] = 1_000_000, ["items"] = new JsonObject { ["type"] = "string", ["minLength"] = 1_000_000 } } });
        var error = Assert.Throws<JsonSchemaException>(() => JsonSchema.Compile(schema));
        Assert.Contains("no JSON value shorter than", error.Message);
        // maxLength beyond int is no limit, not an error or an overflow.
        Assert.Equal(int.MaxValue, ((StringNode)JsonSchema.Compile(Element(new JsonObject { ["type"] = "string", ["maxLength"] = 1e12 }))).MaxLength);
    }

    [Fact]
    public async Task AToolNameWithATrailingNewlineIsRefused()
    {
        var (status, body) = await Post(fixture.Http, Chat(tool: new JsonObject { ["name"] = "calc\n", ["parameters"] = new JsonObject { ["type"] = "object" } }));
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("tools[0].function.name", body["error"]!["param"]!.GetValue<string>());
    }

    [Fact]
    public async Task ALargeEnumIsFollowedExactly()
    {
        var values = new JsonArray([.. Enumerable.Range(0, 2000).Select(i => (JsonNode)$"v{i:D4}")]);
        var schema = new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["pick"] = new JsonObject { ["enum"] = values } }, ["required"] = new JsonArray("pick") };
        var (status, body) = await Post(fixture.Http, Chat(schema, maxTokens: 40));
        Assert.Equal(HttpStatusCode.OK, status);
        var answer = JsonNode.Parse(body["choices"]![0]!["message"]!["content"]!.GetValue<string>())!;
        Assert.Matches(@"\Av\d{4}\z", answer["pick"]!.GetValue<string>());
    }

    [Fact]
    public void LiteralSetsNarrowByPrefixAndKnowTheirShortestValue()
    {
        var root = JsonSchema.Compile(Element(new JsonObject { ["type"] = "array", ["items"] = new JsonObject { ["enum"] = new JsonArray("abc", "a", "ab", "b", 7, 70) } }));
        JsonState? Feed(string text)
        {
            var state = JsonState.Start(root);
            foreach (byte b in Encoding.UTF8.GetBytes(text)) if ((state = state?.Feed(b)) is null) return null;
            return state;
        }
        Assert.Equal(0, Feed("[\"ab\",\"a\",7,70,\"abc\"]")!.Remaining);
        Assert.Null(Feed("[\"ac\""));
        Assert.Null(Feed("[\"abcd"));
        Assert.Null(Feed("[71"));
        Assert.Equal(2, Feed("[\"a")!.Remaining);     // '"' closes "a", then ']'
        Assert.Equal(1, Feed("[7")!.Remaining);       // 7 is whole: only ']' is missing
        Assert.Equal(1, Feed("[")!.Remaining);        // an empty array: ']' alone

        // 20,000 values: every one is accepted, near misses are not.
        var many = JsonSchema.Compile(Element(new JsonObject { ["enum"] = new JsonArray([.. Enumerable.Range(0, 20_000).Select(i => (JsonNode)$"k{i}")]) }));
        foreach (int i in new[] { 0, 9, 10, 1999, 19_999 })
        {
            var state = JsonState.Start(many);
            foreach (byte b in Encoding.UTF8.GetBytes($"\"k{i}\"")) state = state!.Feed(b);
            Assert.Equal(0, state!.Remaining);
        }
        var miss = JsonState.Start(many);
        foreach (byte b in Encoding.UTF8.GetBytes("\"k20000")) miss = miss?.Feed(b);
        Assert.Null(miss);
    }

    /// <summary>A constraint whose first mask takes until the test releases it (a heavy grammar); then it allows anything.</summary>
    sealed class HeavyConstraint(ManualResetEventSlim release) : ITokenConstraint
    {
        public bool[]? Allowed(int tokensLeft)
        {
            release.Wait();
            return null;
        }

        public void Accept(int token) { }
    }

    [Fact]
    public async Task AHeavyGrammarDelaysItsOwnRequestNotItsNeighbours()
    {
        var scheduler = fixture.Server.Scheduler("tiny-chat");
        int[] prompt = fixture.Model.Template.RenderPrompt([new ChatMessage(ChatRoles.User, "春眠不覺曉")]);
        using var release = new ManualResetEventSlim();
        var heavy = scheduler.Enqueue(new BatchRow(prompt, new SamplingOptions(Temperature: 0, MaxNewTokens: 6), Constraint: new HeavyConstraint(release)));
        var plain = scheduler.Enqueue(new BatchRow(prompt, new SamplingOptions(Temperature: 0, MaxNewTokens: 24)));
        // Before, the decode loop computed every row's mask in turn: the plain request waited as long as the heavy mask took.
        var plainResult = await plain.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(24, plainResult.Generation.Tokens.Length);
        Assert.False(heavy.IsCompleted);
        release.Set();
        var heavyResult = await heavy.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Null(heavyResult.Error);
        Assert.Equal(plainResult.Generation.Tokens[..6], heavyResult.Generation.Tokens);   // the same greedy tokens, only later
    }
}

/// <summary>A request's choices against the queue, and shutdown as clients see it.</summary>
public class QueueAndShutdownTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    static StringContent Body(string model, int n, int maxTokens = 2, bool stream = false) => new(JsonSerializer.Serialize(new
    {
        model, messages = new[] { new { role = "user", content = "hi" } }, max_tokens = maxTokens, temperature = 0.5, n, stream,
    }), Encoding.UTF8, "application/json");

    [Fact]
    public async Task ARequestsChoicesAreQueuedTogetherAndCountedAsChoices()
    {
        using var dir = new TempDirectory();
        using var model = ServedModel.Load(fixture.SaveSlowRun(dir.File("slow")));
        await using var server = new GptServer([model], new ServerOptions(Port: 0, MaxConcurrent: 1, MaxQueue: 3));
        await server.StartAsync();
        using var http = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = new Uri(server.Address) };

        // More choices than the queue can ever hold: a 400 naming n, on an idle server, not a 429 forever.
        var never = await http.PostAsync("/v1/chat/completions", Body("slow", 4));
        Assert.Equal(HttpStatusCode.BadRequest, never.StatusCode);
        string text = await never.Content.ReadAsStringAsync();
        Assert.Contains("\"param\":\"n\"", text);
        Assert.Contains("at most 3 choices", text);

        using var release = new ManualResetEventSlim();
        var started = new TaskCompletionSource();
        var holder = server.Scheduler("slow").Enqueue(new BatchRow(model.Template.RenderPrompt([new ChatMessage(ChatRoles.User, "hi")]),
            new SamplingOptions(Temperature: 0, MaxNewTokens: 2), OnToken: _ => { started.TrySetResult(); release.Wait(); }));
        await started.Task;
        var waiting = http.PostAsync("/v1/chat/completions", Body("slow", 2));   // two choices wait
        for (int i = 0; i < 200 && server.Scheduler("slow").Waiting < 2; i++) await Task.Delay(20);
        Assert.Equal(2, server.Scheduler("slow").Waiting);
        string metrics = await http.GetStringAsync("/metrics");
        Assert.Contains("gptsharp_queue_length{model=\"slow\"} 2", metrics);

        // Two more do not fit in the one place left: refused whole, and nothing of theirs is queued.
        var refused = await http.PostAsync("/v1/chat/completions", Body("slow", 2));
        Assert.Equal((HttpStatusCode)429, refused.StatusCode);
        Assert.Contains("2 choices are waiting", await refused.Content.ReadAsStringAsync());
        Assert.Equal(2, server.Scheduler("slow").Waiting);
        release.Set();
        await holder;
        var answered = await waiting;
        Assert.Equal(HttpStatusCode.OK, answered.StatusCode);
        Assert.Equal(2, JsonNode.Parse(await answered.Content.ReadAsStringAsync())!["choices"]!.AsArray().Count);
        Assert.Equal(0, server.Scheduler("slow").Waiting);
    }

    [Fact]
    public async Task WhileShuttingDownNewRequestsGet503NotARefusedConnection()
    {
        using var dir = new TempDirectory();
        using var model = ServedModel.Load(fixture.SaveSlowRun(dir.File("slow")));
        var server = new GptServer([model], new ServerOptions(Port: 0, ShutdownGraceSeconds: 30));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address) };
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = Body("slow", 1, maxTokens: 800, stream: true) };
        using var reply = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await reply.Content.ReadAsStreamAsync());
        Assert.StartsWith("data: ", await reader.ReadLineAsync());   // a generation is running

        var stopping = server.StopAsync();   // what SIGTERM starts
        await Task.Delay(100);
        using var fresh = new HttpClient { BaseAddress = new Uri(server.Address) };   // a new connection
        var late = await fresh.PostAsync("/v1/chat/completions", Body("slow", 1));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, late.StatusCode);
        Assert.Contains("server_shutting_down", await late.Content.ReadAsStringAsync());
        Assert.False(stopping.IsCompleted);
        string rest = await reader.ReadToEndAsync();   // the running stream still finishes properly
        Assert.EndsWith("data: [DONE]", rest.TrimEnd());
        await stopping;
        await server.DisposeAsync();
    }
}
