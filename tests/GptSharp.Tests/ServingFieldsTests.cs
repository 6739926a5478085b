#pragma warning disable OPENAI001 // ChatCompletionOptions.Seed: the SDK marks it experimental; the server honours it
using System.Net;
using System.Text;
using System.Text.Json;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Serving;
using OpenAI.Chat;
using static TorchSharp.torch;

namespace GptSharp.Tests;

/// <summary>The OpenAI fields clients rely on beyond the basics, llama.cpp's extras, and the server's operations endpoints.</summary>
public class ServingFieldsTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    static StringContent Json(object body) => new(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");

    async Task<JsonDocument> Post(string path, object body)
    {
        var reply = await fixture.Http.PostAsync(path, Json(body));
        string text = await reply.Content.ReadAsStringAsync();
        Assert.True(reply.IsSuccessStatusCode, text);
        return JsonDocument.Parse(text);
    }

    static object[] User(string content) => [new { role = "user", content }];

    [Fact]
    public async Task SeveralChoicesEachSeededAndTheUsageCountsThemAll()
    {
        var request = new { model = "tiny-chat", messages = User("寫一首詩"), n = 3, seed = 11, temperature = 1.0, max_tokens = 8 };
        using var first = await Post("/v1/chat/completions", request);
        using var again = await Post("/v1/chat/completions", request);
        var choices = first.RootElement.GetProperty("choices").EnumerateArray().ToList();
        Assert.Equal([0, 1, 2], choices.Select(c => c.GetProperty("index").GetInt32()));
        var texts = choices.Select(c => c.GetProperty("message").GetProperty("content").GetString()).ToList();
        Assert.Equal(texts, again.RootElement.GetProperty("choices").EnumerateArray().Select(c => c.GetProperty("message").GetProperty("content").GetString()));
        Assert.True(texts.Distinct().Count() > 1, "three sampled choices were all the same: they share a seed");
        var usage = first.RootElement.GetProperty("usage");
        Assert.InRange(usage.GetProperty("completion_tokens").GetInt32(), 3, 24);
        Assert.Equal(usage.GetProperty("completion_tokens").GetInt32(), first.RootElement.GetProperty("timings").GetProperty("predicted_n").GetInt32());
    }

    [Fact]
    public async Task TheOpenAiSdkGetsEachTokensLogprobAndItsAlternatives()
    {
        var client = fixture.OpenAi().GetChatClient("tiny-chat");
        var completion = (await client.CompleteChatAsync([new UserChatMessage("床前明月光")],
            new ChatCompletionOptions { IncludeLogProbabilities = true, TopLogProbabilityCount = 3, Temperature = 0, MaxOutputTokenCount = 6 })).Value;
        var tokens = completion.ContentTokenLogProbabilities;
        Assert.NotEmpty(tokens);
        // The tokens' bytes spell the answer, and greedy picks each step's likeliest token.
        Assert.Equal(completion.Content[0].Text, Encoding.UTF8.GetString([.. tokens.SelectMany(t => t.Utf8Bytes!.Value.ToArray())]));
        foreach (var token in tokens)
        {
            Assert.Equal(3, token.TopLogProbabilities.Count);
            Assert.Equal(token.TopLogProbabilities[0].LogProbability, token.LogProbability, 6);
            Assert.True(token.LogProbability <= 0);
            Assert.True(token.TopLogProbabilities[0].LogProbability >= token.TopLogProbabilities[2].LogProbability);
        }
    }

    [Fact]
    public async Task StreamedChoicesAndLogprobsAddUpToTheWholeAnswer()
    {
        var body = new { model = "tiny-chat", messages = User("白日依山盡"), n = 2, seed = 4, temperature = 0.9, max_tokens = 10, logprobs = true };
        using var whole = await Post("/v1/chat/completions", body);
        var reply = await fixture.Http.PostAsync("/v1/chat/completions", Json(new
        {
            body.model, body.messages, body.n, body.seed, body.temperature, body.max_tokens, body.logprobs, stream = true, stream_options = new { include_usage = true },
        }));
        var text = new StringBuilder[] { new(), new() };
        var logprobCount = new int[2];
        var finishes = new string?[2];
        JsonElement? usage = null;
        foreach (string line in (await reply.Content.ReadAsStringAsync()).Split('\n').Where(l => l.StartsWith("data: {")))
        {
            var chunk = JsonDocument.Parse(line[6..]).RootElement;
            if (chunk.TryGetProperty("usage", out var u)) usage = u;
            foreach (var choice in chunk.GetProperty("choices").EnumerateArray())
            {
                int i = choice.GetProperty("index").GetInt32();
                if (choice.GetProperty("delta").TryGetProperty("content", out var c)) text[i].Append(c.GetString());
                if (choice.TryGetProperty("logprobs", out var l) && l.ValueKind == JsonValueKind.Object) logprobCount[i] += l.GetProperty("content").GetArrayLength();
                if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String) finishes[i] = choice.GetProperty("finish_reason").GetString();
            }
        }
        var choices = whole.RootElement.GetProperty("choices");
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(choices[i].GetProperty("message").GetProperty("content").GetString(), text[i].ToString());
            Assert.Equal(choices[i].GetProperty("logprobs").GetProperty("content").GetArrayLength(), logprobCount[i]);
            Assert.Equal(choices[i].GetProperty("finish_reason").GetString(), finishes[i]);
        }
        Assert.Equal(whole.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), usage!.Value.GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task ASecondTurnReportsItsCachedPromptTokens()
    {
        // A prompt no other test sends, so that its first request finds nothing cached.
        var first = new { model = "tiny-chat", messages = User("秋風起兮白雲飛"), max_tokens = 4, temperature = 0 };
        using var one = await Post("/v1/chat/completions", first);
        string answer = one.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!;
        Assert.Equal(0, one.RootElement.GetProperty("usage").GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());
        using var two = await Post("/v1/chat/completions", new
        {
            model = "tiny-chat", max_tokens = 4, temperature = 0,
            messages = new object[] { new { role = "user", content = "秋風起兮白雲飛" }, new { role = "assistant", content = answer }, new { role = "user", content = "再寫一首" } },
        });
        int cached = two.RootElement.GetProperty("usage").GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32();
        int promptTokens = one.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();
        Assert.InRange(cached, promptTokens, two.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32() - 1);
        var timings = two.RootElement.GetProperty("timings");
        Assert.Equal(cached, timings.GetProperty("cache_n").GetInt32());
        Assert.Equal(two.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32() - cached, timings.GetProperty("prompt_n").GetInt32());
        Assert.True(timings.GetProperty("prompt_per_second").GetDouble() > 0);
    }

    const string CitySchema = """{"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}, "days": {"type": "integer"}, "metric": {"type": "boolean"}}, "required": ["city", "days"], "additionalProperties": false}""";

    [Fact]
    public async Task EveryAnswerToAJsonSchemaResponseFormatValidates()
    {
        using var reply = await Post("/v1/chat/completions", new
        {
            model = "tiny-chat", messages = User("天氣"), n = 8, seed = 3, temperature = 1.0, max_tokens = 40,
            response_format = new { type = "json_schema", json_schema = new { name = "weather", strict = true, schema = JsonDocument.Parse(CitySchema).RootElement } },
        });
        var choices = reply.RootElement.GetProperty("choices").EnumerateArray().ToList();
        Assert.Equal(8, choices.Count);
        foreach (var choice in choices)
        {
            Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
            StructuredOutputTests.AssertValid(CitySchema, choice.GetProperty("message").GetProperty("content").GetString()!);
        }
        // json_object: any object, streamed.
        var sdk = fixture.OpenAi().GetChatClient("tiny-chat");
        var text = new StringBuilder();
        await foreach (var update in sdk.CompleteChatStreamingAsync([new UserChatMessage("JSON")],
                           new ChatCompletionOptions { ResponseFormat = ChatResponseFormat.CreateJsonObjectFormat(), MaxOutputTokenCount = 30, Seed = 5 }))
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
        Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(text.ToString()).RootElement.ValueKind);
    }

    static ChatTool Weather => ChatTool.CreateFunctionTool("get_weather", "The weather in a city", BinaryData.FromString(CitySchema));

    [Fact]
    public async Task ARequiredToolCallRoundTripsThroughTheOpenAiSdk()
    {
        var sdk = fixture.OpenAi().GetChatClient("tiny-chat");
        var options = new ChatCompletionOptions { Tools = { Weather, ChatTool.CreateFunctionTool("now", "The time") }, ToolChoice = ChatToolChoice.CreateRequiredChoice(), MaxOutputTokenCount = 40, Seed = 9 };
        List<OpenAI.Chat.ChatMessage> messages = [new UserChatMessage("天氣")];
        var first = (await sdk.CompleteChatAsync(messages, options)).Value;
        Assert.Equal(ChatFinishReason.ToolCalls, first.FinishReason);
        var call = Assert.Single(first.ToolCalls);
        Assert.StartsWith("call_", call.Id);
        Assert.Contains(call.FunctionName, new[] { "get_weather", "now" });
        StructuredOutputTests.AssertValid(call.FunctionName == "now" ? """{"type": "object", "properties": {}, "additionalProperties": false}""" : CitySchema, call.FunctionArguments.ToString());

        // The call and its result go back; with tool_choice none the answer is text.
        messages.Add(new AssistantChatMessage(first));
        messages.Add(new ToolChatMessage(call.Id, "晴 22°C"));
        var second = (await sdk.CompleteChatAsync(messages, new ChatCompletionOptions { Tools = { Weather, ChatTool.CreateFunctionTool("now", "The time") }, ToolChoice = ChatToolChoice.CreateNoneChoice(), MaxOutputTokenCount = 8 })).Value;
        Assert.NotEqual(ChatFinishReason.ToolCalls, second.FinishReason);
        Assert.Empty(second.ToolCalls);
    }

    [Fact]
    public async Task ANamedToolCallStreamsAsAToolCallDelta()
    {
        var sdk = fixture.OpenAi().GetChatClient("tiny-chat");
        var options = new ChatCompletionOptions { Tools = { Weather, ChatTool.CreateFunctionTool("now", "The time") }, ToolChoice = ChatToolChoice.CreateFunctionChoice("get_weather"), MaxOutputTokenCount = 40, Seed = 2 };
        string? name = null, id = null;
        var arguments = new StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (var update in sdk.CompleteChatStreamingAsync([new UserChatMessage("天氣")], options))
        {
            Assert.DoesNotContain(update.ContentUpdate, p => p.Text.Length > 0);   // a forced call writes no text
            foreach (var tool in update.ToolCallUpdates)
            {
                name ??= tool.FunctionName;
                id ??= tool.ToolCallId;
                arguments.Append(tool.FunctionArgumentsUpdate?.ToString());
            }
            finish ??= update.FinishReason;
        }
        Assert.Equal("get_weather", name);
        Assert.StartsWith("call_", id);
        Assert.Equal(ChatFinishReason.ToolCalls, finish);
        StructuredOutputTests.AssertValid(CitySchema, arguments.ToString());
    }

    [Fact]
    public async Task TokenizeAndDetokenizeRoundTripAndBadIdsAreNamed()
    {
        using var tokens = await Post("/tokenize", new { content = "床前明月光，疑是地上霜。" });
        int[] ids = [.. tokens.RootElement.GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32())];
        Assert.Equal(fixture.Model.Tokenizer.Encode("床前明月光，疑是地上霜。"), ids);
        using var text = await Post("/detokenize", new { tokens = ids });
        Assert.Equal("床前明月光，疑是地上霜。", text.RootElement.GetProperty("content").GetString());
        using var pieces = await Post("/tokenize", new { model = "tiny-chat", content = "hi", add_special = true, with_pieces = true });
        var first = pieces.RootElement.GetProperty("tokens")[0];
        Assert.Equal(fixture.Model.Tokenizer.BosId, first.GetProperty("id").GetInt32());

        var bad = await fixture.Http.PostAsync("/detokenize", Json(new { tokens = new[] { 1, 999_999 } }));
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("tokens[1]", await bad.Content.ReadAsStringAsync());
        var missing = await fixture.Http.PostAsync("/tokenize", Json(new { text = "hi" }));
        Assert.Equal(HttpStatusCode.BadRequest, missing.StatusCode);
        Assert.Contains("'content' is required", await missing.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task MetricsAreInPrometheusTextFormat()
    {
        using var _ = await Post("/v1/chat/completions", new { model = "tiny-chat", messages = User("hi"), max_tokens = 3 });
        var reply = await fixture.Http.GetAsync("/metrics");
        Assert.StartsWith("text/plain", reply.Content.Headers.ContentType!.ToString());
        string metrics = await reply.Content.ReadAsStringAsync();
        Assert.Contains("gptsharp_requests_total{path=\"/v1/chat/completions\",status=\"200\"}", metrics);
        Assert.Contains("gptsharp_slots{model=\"tiny-chat\"} 2", metrics);
        Assert.Contains("gptsharp_queue_length{model=\"tiny-chat\"} 0", metrics);
        Assert.Contains("gptsharp_time_to_first_token_seconds_bucket{model=\"tiny-chat\",le=\"0.01\"}", metrics);
        var completions = metrics.Split('\n').Single(l => l.StartsWith("gptsharp_completion_tokens_total{model=\"tiny-chat\"}"));
        Assert.True(double.Parse(completions.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture) >= 1);
    }

    [Fact]
    public void PresenceAndFrequencyPenaltiesStopRepeats()
    {
        manual_seed(2);
        using var model = new Gpt(GptConfig.Gpt2(vocab: 50, context: 64, layers: 2, heads: 2, width: 16));
        var decoder = new TokenDecoder(model);
        int[] prompt = [1, 2, 3];
        var plain = decoder.Generate(prompt, new SamplingOptions(Temperature: 0, MaxNewTokens: 30));
        Assert.True(plain.Tokens.Distinct().Count() < 30, "the unpenalised greedy answer should repeat itself");
        foreach (var options in new[] { new SamplingOptions(Temperature: 0, MaxNewTokens: 30, PresencePenalty: 2), new SamplingOptions(Temperature: 0, MaxNewTokens: 30, FrequencyPenalty: 2) })
            Assert.Equal(30, decoder.Generate(prompt, options).Tokens.Distinct().Count());
    }
}

/// <summary>A request that runs too long, and a server that shuts down while it streams.</summary>
public class ServerLimitTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    static StringContent Body(bool stream) => new(JsonSerializer.Serialize(new
    {
        model = "slow", messages = new[] { new { role = "user", content = "hi" } }, max_tokens = 1000, temperature = 0, stream,
    }), Encoding.UTF8, "application/json");

    [Fact]
    public async Task AGenerationPastTheRequestTimeoutIsStoppedWith408()
    {
        using var dir = new TempDirectory();
        using var model = ServedModel.Load(fixture.SaveSlowRun(dir.File("slow")));
        await using var server = new GptServer([model], new ServerOptions(Port: 0, RequestTimeoutSeconds: 0.3));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address) };
        var reply = await http.PostAsync("/v1/chat/completions", Body(stream: false));
        Assert.Equal(HttpStatusCode.RequestTimeout, reply.StatusCode);
        Assert.Contains("request_timeout", await reply.Content.ReadAsStringAsync());
        Assert.Equal(0, server.Scheduler("slow").Running);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/health")).StatusCode);
    }

    [Fact]
    public async Task ShuttingDownEndsARunningStreamProperlyAfterTheGracePeriod()
    {
        using var dir = new TempDirectory();
        using var model = ServedModel.Load(fixture.SaveSlowRun(dir.File("slow")));
        var server = new GptServer([model], new ServerOptions(Port: 0, ShutdownGraceSeconds: 0.3));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address) };
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = Body(stream: true) };
        using var reply = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await reply.Content.ReadAsStreamAsync());
        Assert.StartsWith("data: ", await reader.ReadLineAsync());   // the stream is running
        var stopping = server.StopAsync();
        string rest = await reader.ReadToEndAsync();
        await stopping;
        Assert.Contains("server_shutting_down", rest);
        Assert.EndsWith("data: [DONE]", rest.TrimEnd());
        await server.DisposeAsync();
    }
}

/// <summary>POST /v1/embeddings: the official SDK's client (which asks for base64) and raw requests (floats, token ids, refusals).</summary>
public class EmbeddingsEndpointTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    static StringContent Json(object body) => new(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");

    [Fact]
    public async Task TheSdksEmbeddingsAreTheModelsOwnAndFollowTheText()
    {
        var client = fixture.OpenAi().GetEmbeddingClient("tiny-chat");
        var result = (await client.GenerateEmbeddingsAsync(["床前明月光", "白日依山盡", "床前明月光"])).Value;
        var vectors = result.Select(e => e.ToFloats().ToArray()).ToList();
        int width = fixture.Model.Model.Config.Width;
        Assert.All(vectors, v => Assert.Equal(width, v.Length));
        Assert.Equal(vectors[0], vectors[2]);
        Assert.NotEqual(vectors[0], vectors[1]);
        // The same numbers as the model's own embedding: base64 carries the floats bit for bit.
        Assert.Equal(fixture.Model.Embed(fixture.Model.Tokenizer.Encode("白日依山盡")), vectors[1]);
        Assert.Equal(2 * fixture.Model.Tokenizer.Encode("床前明月光").Length + fixture.Model.Tokenizer.Encode("白日依山盡").Length, result.Usage.InputTokenCount);
    }

    [Fact]
    public async Task FloatsByDefaultAndTokenIdsEmbedLikeTheirText()
    {
        var ids = fixture.Model.Tokenizer.Encode("春眠不覺曉");
        var reply = await fixture.Http.PostAsync("/v1/embeddings", Json(new { model = "tiny-chat", input = new object[] { "春眠不覺曉", ids } }));
        string text = await reply.Content.ReadAsStringAsync();
        Assert.True(reply.IsSuccessStatusCode, text);
        using var doc = JsonDocument.Parse(text);
        var data = doc.RootElement.GetProperty("data").EnumerateArray().ToList();
        Assert.Equal([0, 1], data.Select(d => d.GetProperty("index").GetInt32()));
        var fromText = data[0].GetProperty("embedding").EnumerateArray().Select(x => x.GetSingle()).ToArray();
        var fromIds = data[1].GetProperty("embedding").EnumerateArray().Select(x => x.GetSingle()).ToArray();
        Assert.Equal(fixture.Model.Model.Config.Width, fromText.Length);
        Assert.Equal(fromText, fromIds);
        Assert.Equal("tiny-chat", doc.RootElement.GetProperty("model").GetString());
    }

    [Theory]
    [InlineData("long", "input[1]", "embeds at most 64")]
    [InlineData("format", "encoding_format", "expected 'float' or 'base64'")]
    [InlineData("dimensions", "dimensions", "the width of 'tiny-chat'")]
    [InlineData("dimensions-text", "dimensions", "the width of 'tiny-chat'")]
    [InlineData("empty", "input[0]", "is empty")]
    [InlineData("token", "input[0][1]", "must be a token id")]
    public async Task BadRequestsAreRefusedByTheFieldAtFault(string fault, string param, string message)
    {
        object body = fault switch
        {
            "long" => new { model = "tiny-chat", input = new[] { "短", string.Concat(Enumerable.Repeat("床前明月光，疑是地上霜。", 40)) } },
            "format" => new { model = "tiny-chat", input = "月", encoding_format = "int8" },
            "dimensions" => new { model = "tiny-chat", input = "月", dimensions = 3 },
            "dimensions-text" => new { model = "tiny-chat", input = "月", dimensions = "32" },   // the fuzzer's find: not a number was a 500
            "empty" => new { model = "tiny-chat", input = new[] { "" } },
            _ => new { model = "tiny-chat", input = new[] { new[] { 1, -5 } } },
        };
        var reply = await fixture.Http.PostAsync("/v1/embeddings", Json(body));
        string text = await reply.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, reply.StatusCode);
        using var doc = JsonDocument.Parse(text);
        var error = doc.RootElement.GetProperty("error");
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Contains(message, error.GetProperty("message").GetString());
    }
}
