using GptSharp.Tokenization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using GptSharp.Inference;
using GptSharp.Serving;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

/// <summary>Regression tests for hostile input to the server and its parts: each failed before its fix.</summary>
public class ServerHardeningTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    static readonly object[] Ask = [new { role = "user", content = "床前明月光" }];

    static StringContent Json(object body) => new(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");

    int[] Prompt(string question) => fixture.Model.Template.RenderPrompt([new ChatMessage(ChatRoles.User, question)]);

    static async Task<(int Status, JsonElement Body)> Read(HttpResponseMessage reply)
    {
        string text = await reply.Content.ReadAsStringAsync();
        return ((int)reply.StatusCode, JsonDocument.Parse(text).RootElement.Clone());
    }

    [Theory]
    [InlineData(1e-300, 1.0)]
    [InlineData(1e-40, 1.0)]
    [InlineData(double.Epsilon, 1.0)]
    [InlineData(1.0, 1e-300)]
    [InlineData(1.0, double.Epsilon)]
    public void ExtremeButValidSamplingIsGreedyNotNaN(double temperature, double topP)
    {
        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 1f, 3f, 2.9999f, -50f, 3f - 1e-6f });
        var options = new SamplingOptions(Temperature: temperature, TopP: topP, TopK: 0);
        for (int seed = 0; seed < 5; seed++)
            Assert.Equal(1, Sampler.Sample(logits, [], options, new SamplingRandom(seed)));
        Assert.Throws<InvalidOperationException>(() => Sampler.Sample(tensor(new[] { 1f, float.NaN }), [], options, null));
    }

    [Theory]
    [InlineData("temperature", 1e-300)]
    [InlineData("top_p", 1e-300)]
    public async Task AHostileSamplingValueNeitherFailsItselfNorItsBatch(string field, double value)
    {
        // Two requests in one batch (MaxConcurrent 2): the extreme one and a plain greedy one, streamed and whole.
        string expected = fixture.Greedy("床前明月光", 10);
        var hostile = new Dictionary<string, object> { ["model"] = "tiny-chat", ["messages"] = Ask, ["max_tokens"] = 10, [field] = value };
        var plain = new { model = "tiny-chat", messages = Ask, max_tokens = 10, temperature = 0 };
        var streamed = new { model = "tiny-chat", messages = Ask, max_tokens = 10, temperature = 0, stream = true };
        var replies = await Task.WhenAll(fixture.Http.PostAsync("/v1/chat/completions", Json(hostile)),
            fixture.Http.PostAsync("/v1/chat/completions", Json(plain)), fixture.Http.PostAsync("/v1/chat/completions", Json(streamed)));
        Assert.All(replies, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        var (_, body) = await Read(replies[1]);
        Assert.Equal(expected, body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        string events = await replies[2].Content.ReadAsStringAsync();
        Assert.EndsWith("data: [DONE]\n\n", events);
        if (field == "temperature") // so small a temperature is greedy
        {
            var (_, extreme) = await Read(replies[0]);
            Assert.Equal(expected, extreme.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        }
    }

    [Fact]
    public void ARowThatFailsFailsAloneAndALongPromptNeverCutsAShortAnswer()
    {
        var model = fixture.Model.Model;
        int context = model.Config.ContextLength;
        var greedy = new SamplingOptions(Temperature: 0, MaxNewTokens: 30);
        int[] shortPrompt = Prompt("春眠不覺曉");
        int[] longPrompt = [.. Enumerable.Range(0, context - 7).Select(i => 300 + i % 500)];
        var alone = new TokenDecoder(model).Generate([shortPrompt], greedy)[0];
        Assert.Equal(30, alone.Tokens.Length);

        var results = new TokenDecoder(model).Generate([
            new BatchRow(longPrompt, greedy), new BatchRow(shortPrompt, greedy), new BatchRow(longPrompt, greedy),
            new BatchRow(shortPrompt, greedy, OnToken: _ => throw new InvalidOperationException("a failing client callback")),
        ]);
        Assert.Equal(alone.Tokens, results[1].Generation.Tokens);   // 30 tokens, as alone, though two prompts fill the context
        Assert.Equal(FinishReason.Length, results[1].Generation.Finish);
        Assert.Equal(FinishReason.ContextFull, results[0].Generation.Finish);
        Assert.Equal(context - longPrompt.Length + 1, results[0].Generation.Tokens.Length); // the last read the full context
        Assert.Equal(results[0].Generation.Tokens, results[2].Generation.Tokens);
        Assert.Equal("a failing client callback", results[3].Error?.Message);
        Assert.All(results.Take(3), r => Assert.Null(r.Error));
    }

    [Fact]
    public async Task BudgetsDependOnTheirOwnPromptOnlyOverHttp()
    {
        string longText = string.Concat(Enumerable.Repeat("床前明月光，疑是地上霜。", 40));
        int[] longPrompt = Prompt(longText);
        // Fit the long question to leave only a few tokens of room.
        while (longPrompt.Length > fixture.Model.ContextLength - 6) longPrompt = Prompt(longText = longText[..^1]);
        var longRequest = new { model = "tiny-chat", messages = new[] { new { role = "user", content = longText } }, temperature = 0 };
        var shortRequest = new { model = "tiny-chat", messages = Ask, max_tokens = 30, temperature = 0 };
        var replies = await Task.WhenAll(fixture.Http.PostAsync("/v1/chat/completions", Json(longRequest)),
            fixture.Http.PostAsync("/v1/chat/completions", Json(shortRequest)));
        var (status, body) = await Read(replies[1]);
        Assert.Equal(200, status);
        Assert.Equal(fixture.Greedy("床前明月光", 30), body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        Assert.Equal(200, (int)replies[0].StatusCode);
    }

    [Theory]
    [InlineData("""{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"n":"2"}""", "n")]
    [InlineData("""{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"n":true}""", "n")]
    [InlineData("""{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"seed":"abc"}""", "seed")]
    [InlineData("""{"model":"tiny-chat","messages":[{"role":"user","content":[1]}]}""", "messages[0].content[0]")]
    [InlineData("""{"model":"tiny-chat","messages":[{"role":"user","content":[{"type":5,"text":"hi"}]}]}""", "messages[0].content[0].type")]
    [InlineData("""{"model":"tiny-chat","messages":[{"role":"user","content":[{"type":"text","text":7}]}]}""", "messages[0].content[0].text")]
    [InlineData("""{"model":"tiny-chat","messages":[{"role":"user","content":"\ud800"}]}""", "messages[0].content")]
    [InlineData("""{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"stop":"\udc00"}""", "stop")]
    [InlineData("""{"model":"\ud800","messages":[{"role":"user","content":"hi"}]}""", "model")]
    [InlineData("""{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"stream_options":7}""", "stream_options")]
    public async Task WrongTypesAre400sNamingTheField(string body, string field)
    {
        var (status, json) = await Read(await fixture.Http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json")));
        Assert.Equal(400, status);
        Assert.Equal(field, json.GetProperty("error").GetProperty("param").GetString());
    }

    [Fact]
    public async Task InvalidUtf8IsA400()
    {
        byte[] bytes = [.. Encoding.UTF8.GetBytes("""{"model":"tiny-chat","messages":[{"role":"user","content":"hi """), 0xC3, 0x28, .. Encoding.UTF8.GetBytes("\"}]}")];
        var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        var (status, json) = await Read(await fixture.Http.PostAsync("/v1/chat/completions", content));
        Assert.Equal(400, status);
        Assert.Contains("UTF-8", json.GetProperty("error").GetProperty("message").GetString());
    }

    [Fact]
    public async Task ForeignHostsAndNonJsonPostsAreRefused()
    {
        var rebound = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        rebound.Headers.Host = "attacker.example";
        var (status, json) = await Read(await fixture.Http.SendAsync(rebound));
        Assert.Equal(400, status);
        Assert.Equal("host_not_allowed", json.GetProperty("error").GetProperty("code").GetString());
        var local = new HttpRequestMessage(HttpMethod.Get, "/health");
        local.Headers.Host = "localhost:1234";
        Assert.Equal(HttpStatusCode.OK, (await fixture.Http.SendAsync(local)).StatusCode);

        var form = new StringContent(JsonSerializer.Serialize(new { model = "tiny-chat", messages = Ask }), Encoding.UTF8, "text/plain");
        (status, json) = await Read(await fixture.Http.PostAsync("/v1/chat/completions", form));
        Assert.Equal(415, status);
        Assert.Equal("invalid_request_error", json.GetProperty("error").GetProperty("type").GetString());
    }

    [Fact]
    public async Task AllowedHostsWidenTheHostCheck()
    {
        await using var server = new GptServer([fixture.Model], new ServerOptions(Port: 0, AllowedHosts: ["chat.internal"]));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address) };
        var request = new HttpRequestMessage(HttpMethod.Get, "/health");
        request.Headers.Host = "chat.internal";
        Assert.Equal(HttpStatusCode.OK, (await http.SendAsync(request)).StatusCode);
        Assert.False(server.ExposedWithoutKey);
    }

    [Fact]
    public async Task StopSequencesInsideATokenEndTheAnswerTheSameStreamedOrWhole()
    {
        // A sampled answer (seeded, so the server draws the same) with a token of two or more characters, and a stop
        // that begins inside that token rather than at a token boundary.
        var model = fixture.Model;
        int seed = 0, index = -1;
        List<int> tokens = [];
        while (index < 0 && ++seed < 50)
        {
            var generation = model.Generate(Prompt("床前明月光"), new SamplingOptions(Temperature: 1, MaxNewTokens: 40, Seed: seed,
                StopTokens: [model.Tokenizer.EndId, model.Tokenizer.BosId]), null, default);
            tokens = [.. generation.Tokens.Where(t => !model.Tokenizer.IsSpecial(t))];
            index = tokens.FindIndex(t => model.Tokenizer.Decode([t]).Length >= 2);
        }
        Assert.True(index >= 0, "some seed's answer has a token of two or more characters");
        string stop = model.Tokenizer.Decode([tokens[index]])[1..];
        string all = model.Tokenizer.Decode(tokens);
        string expected = all[..all.IndexOf(stop, StringComparison.Ordinal)];

        var request = new Dictionary<string, object> { ["model"] = "tiny-chat", ["messages"] = Ask, ["max_tokens"] = 40, ["temperature"] = 1, ["seed"] = seed, ["stop"] = stop };
        var (status, whole) = await Read(await fixture.Http.PostAsync("/v1/chat/completions", Json(request)));
        Assert.Equal(200, status);
        Assert.Equal(expected, whole.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        Assert.Equal("stop", whole.GetProperty("choices")[0].GetProperty("finish_reason").GetString());

        request["stream"] = true;
        string events = await (await fixture.Http.PostAsync("/v1/chat/completions", Json(request))).Content.ReadAsStringAsync();
        var streamed = new StringBuilder();
        string? finish = null;
        foreach (string line in events.Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            if (line == "data: [DONE]") continue;
            var choice = JsonDocument.Parse(line["data: ".Length..]).RootElement.GetProperty("choices")[0];
            if (choice.GetProperty("delta").TryGetProperty("content", out var piece)) streamed.Append(piece.GetString());
            if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String) finish = choice.GetProperty("finish_reason").GetString();
        }
        Assert.Equal(expected, streamed.ToString());
        Assert.Equal("stop", finish);
    }

    [Fact]
    public void AnswerTextHoldsBackAPossibleStopAndHalfCharacters()
    {
        var tokenizer = fixture.Model.Tokenizer;
        int[] tokens = tokenizer.Encode("床前明月光，疑是地上霜。舉頭望明月");
        var pieces = new List<string>();
        var text = new AnswerText(tokenizer, ["地上霜", "望明月"], pieces.Add);
        foreach (int token in tokens) text.Add(token);
        Assert.Equal("床前明月光，疑是", text.Finish());
        Assert.Equal("床前明月光，疑是", string.Concat(pieces));
        Assert.All(pieces, p => Assert.DoesNotContain("地", p));

        // Byte tokens of one character arrive one by one: nothing is handed out until the character is whole.
        var bytes = new AnswerText(tokenizer, null, pieces.Add);
        pieces.Clear();
        int[] split = [.. Encoding.UTF8.GetBytes("霜").Select(b => ByteToken(tokenizer, b))];
        foreach (int id in split) bytes.Add(id);
        Assert.Equal(["霜"], pieces);
    }

    static int ByteToken(GptSharp.Tokenization.GptTokenizer tokenizer, byte value)
    {
        foreach (var (id, bytes) in tokenizer.OrdinaryTokens)
            if (bytes is [var only] && only == value) return id;
        throw new InvalidOperationException($"no single-byte token for {value}");
    }

    [Fact]
    public async Task EveryErrorIsOpenAiShapedAndThePageIsProtected()
    {
        var head = await fixture.Http.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/health"));
        Assert.Equal(HttpStatusCode.OK, head.StatusCode);
        foreach (string path in new[] { "/v1/nothing", "/favicon.ico", "/v1/models/x.json" })
        {
            var (status, json) = await Read(await fixture.Http.GetAsync(path));
            Assert.Equal(404, status);
            Assert.Equal(JsonValueKind.String, json.GetProperty("error").GetProperty("message").ValueKind);
        }
        var (okStatus, model) = await Read(await fixture.Http.GetAsync("/v1/models/tiny-chat"));
        Assert.Equal(200, okStatus);
        Assert.Equal("tiny-chat", model.GetProperty("id").GetString());
        var (missing, error) = await Read(await fixture.Http.GetAsync("/v1/models/nope"));
        Assert.Equal(404, missing);
        Assert.Equal("model_not_found", error.GetProperty("error").GetProperty("code").GetString());
        var (wrongMethod, _) = await Read(await fixture.Http.DeleteAsync("/v1/models"));
        Assert.Equal(405, wrongMethod);

        var page = await fixture.Http.GetAsync("/");
        Assert.Equal("DENY", page.Headers.GetValues("X-Frame-Options").Single());
        Assert.Contains("frame-ancestors 'none'", page.Headers.GetValues("Content-Security-Policy").Single());
    }

    [Fact]
    public void MistypedHostsAreErrorsAndExposureIsKnown()
    {
        foreach (string host in new[] { "127.0.0.l", "999.1.1.1", "myhost.invalid", "" })
            Assert.Throws<ArgumentException>(() => new ServerOptions(Host: host).BindAddress());
        Assert.Equal(IPAddress.Loopback, new ServerOptions(Host: "localhost").BindAddress());
        Assert.Equal(IPAddress.IPv6Loopback, new ServerOptions(Host: "[::1]").BindAddress());
        Assert.Throws<ArgumentException>(() => new ServerOptions(Port: 70000).Validate());
        Assert.Throws<ArgumentException>(() => new ServerOptions(MaxConcurrent: 0).Validate());
        Assert.Throws<ArgumentException>(() => new ServerOptions(MaxQueue: 0).Validate());
        Assert.Contains("--prefill-chunk 0", Assert.Throws<ArgumentException>(() => new ServerOptions(PrefillChunk: 0).Validate()).Message);
    }

    [Fact]
    public async Task AWildcardBindWithoutAKeyIsFlagged()
    {
        await using var open = new GptServer([fixture.Model], new ServerOptions(Host: "0.0.0.0", Port: 0));
        Assert.True(open.ExposedWithoutKey);
        await using var keyed = new GptServer([fixture.Model], new ServerOptions(Host: "0.0.0.0", Port: 0, ApiKey: "k"));
        Assert.False(keyed.ExposedWithoutKey);
    }
}

public class QueueLimitTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    [Fact]
    public async Task BeyondTheQueueRequestsGet429WithRetryAfter()
    {
        using var dir = new TempDirectory();
        using var model = ServedModel.Load(fixture.SaveSlowRun(dir.File("slow")));
        await using var server = new GptServer([model], new ServerOptions(Port: 0, MaxConcurrent: 1, MaxQueue: 1));
        await server.StartAsync();
        using var http = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = new Uri(server.Address) };
        static StringContent Body(int maxTokens, bool stream) => new(JsonSerializer.Serialize(new
        {
            model = "slow", messages = new[] { new { role = "user", content = "hi" } }, max_tokens = maxTokens, temperature = 0, stream,
        }), Encoding.UTF8, "application/json");

        // A generation that holds the only batch slot until released ...
        using var release = new ManualResetEventSlim();
        var started = new TaskCompletionSource();
        var holder = server.Scheduler("slow").Enqueue(new BatchRow(model.Template.RenderPrompt([new ChatMessage(ChatRoles.User, "hi")]),
            new SamplingOptions(Temperature: 0, MaxNewTokens: 2), OnToken: _ => { started.TrySetResult(); release.Wait(); }));
        await started.Task;
        // ... a request that waits in the queue of one ...
        var second = http.PostAsync("/v1/chat/completions", Body(2, false));
        for (int i = 0; i < 200 && server.Scheduler("slow").Waiting == 0; i++) await Task.Delay(20);
        Assert.Equal(1, server.Scheduler("slow").Waiting);
        // ... and a third finds the queue full, streamed or not.
        foreach (bool stream in new[] { false, true })
        {
            var refused = await http.PostAsync("/v1/chat/completions", Body(2, stream));
            Assert.Equal((HttpStatusCode)429, refused.StatusCode);
            Assert.Equal("1", refused.Headers.GetValues("Retry-After").Single());
            Assert.Contains("rate_limit_exceeded", await refused.Content.ReadAsStringAsync());
        }
        release.Set();
        Assert.Equal(2, (await holder).Generation.Tokens.Length);
        Assert.Equal(HttpStatusCode.OK, (await second).StatusCode);
    }
}
