using GptSharp.Tokenization;
using System.ClientModel;
using System.Net;
using System.Text;
using System.Text.Json;
using GptSharp.Inference;
using GptSharp.Serving;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using ChatFinishReason = OpenAI.Chat.ChatFinishReason;

namespace GptSharp.Tests;

/// <summary>A server on a free port over a small random-weight model, shared by the serving tests.</summary>
public sealed class ServerFixture : IAsyncLifetime
{
    readonly TrainedTokenizerFixture _tokenizer = new();
    readonly TempDirectory _dir = new();

    public ServedModel Model { get; private set; } = null!;
    public GptServer Server { get; private set; } = null!;
    public HttpClient Http { get; } = new();

    public async Task InitializeAsync()
    {
        _tokenizer.SaveInitialRun(_dir.File("tiny-chat"), context: 64);
        Model = ServedModel.Load(_dir.File("tiny-chat"));
        Server = new GptServer([Model], new ServerOptions(Port: 0, MaxBodyBytes: 64 * 1024, MaxConcurrent: 2));
        await Server.StartAsync();
        Http.BaseAddress = new Uri(Server.Address);
    }

    /// <summary>The served chat model's greedy answer to one user message, as the server's chat template stops it.</summary>
    public string Greedy(string question, int maxTokens)
    {
        var prompt = Model.Template.RenderPrompt([new GptSharp.Tokenization.ChatMessage(ChatRoles.User, question)]);
        var generation = Model.Generate(prompt, new SamplingOptions(Temperature: 0, MaxNewTokens: maxTokens, StopTokens: [Model.Tokenizer.EndId, Model.Tokenizer.BosId]), null, default);
        return Model.Text(generation, null);
    }

    public OpenAIClient OpenAi(string key = "unused") => new(new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = new Uri(Server.Address + "/v1") });

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        Model.Dispose();
        Http.Dispose();
        _dir.Dispose();
        _tokenizer.Dispose();
    }
}

public class ServingTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    const string Question = "《靜夜思》的作者是誰？";

    [Fact]
    public async Task TheOpenAiSdkChatsWholeAndStreamed()
    {
        var chat = fixture.OpenAi().GetChatClient("tiny-chat");
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 12 };
        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage(Question)], options);
        string expected = fixture.Greedy(Question, 12);
        Assert.Equal(expected, completion.Content[0].Text);
        Assert.Equal(fixture.Model.Template.RenderPrompt([new GptSharp.Tokenization.ChatMessage(ChatRoles.User, Question)]).Length, completion.Usage.InputTokenCount);
        Assert.InRange(completion.Usage.OutputTokenCount, 1, 12);
        Assert.Equal(ChatFinishReason.Length, completion.FinishReason);

        var streamed = new StringBuilder();
        int updates = 0;
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage(Question)], options))
        {
            foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
            updates++;
        }
        Assert.Equal(expected, streamed.ToString());
        Assert.True(updates > 2, $"{updates} updates: the answer should arrive piece by piece");

        var models = (await fixture.OpenAi().GetOpenAIModelClient().GetModelsAsync()).Value;
        Assert.Equal("tiny-chat", Assert.Single(models).Id);
    }

    [Fact]
    public async Task MicrosoftExtensionsAiChatClientWorksUnchanged()
    {
        IChatClient client = fixture.OpenAi().GetChatClient("tiny-chat").AsIChatClient();
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 10 };
        List<Microsoft.Extensions.AI.ChatMessage> messages = [new(ChatRole.System, "你是詩人。"), new(ChatRole.User, Question)];
        var response = await client.GetResponseAsync(messages, options);
        var streamed = new StringBuilder();
        await foreach (var update in client.GetStreamingResponseAsync(messages, options)) streamed.Append(update.Text);
        Assert.Equal(response.Text, streamed.ToString());
        Assert.True(response.Text.Length > 0);
        Assert.NotNull(response.Usage);
    }

    [Fact]
    public async Task CompletionsContinueTheRawPrompt()
    {
        var reply = await fixture.Http.PostAsync("/v1/completions", Json(new { model = "tiny-chat", prompt = "床前明月光", max_tokens = 5, temperature = 0 }));
        Assert.Equal(HttpStatusCode.OK, reply.StatusCode);
        using var body = JsonDocument.Parse(await reply.Content.ReadAsStringAsync());
        Assert.Equal("text_completion", body.RootElement.GetProperty("object").GetString());
        Assert.Equal(5, body.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        var health = await fixture.Http.GetStringAsync("/health");
        Assert.Contains("\"ok\"", health);
        Assert.Contains("<title>GptSharp chat</title>", await fixture.Http.GetStringAsync("/"));
    }

    public static TheoryData<string, int, string> BadRequests => new()
    {
        { "{not json", 400, "not valid JSON" },
        { """{"model":"nope","messages":[{"role":"user","content":"hi"}]}""", 404, "does not exist" },
        { """{"model":"tiny-chat","messages":[]}""", 400, "must not be empty" },
        { """{"model":"tiny-chat"}""", 400, "'messages' is required" },
        { """{"model":"tiny-chat","messages":[{"role":"robot","content":"hi"}]}""", 400, "role 'robot'" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":""}]}""", 400, "content must not be empty" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"temperature":2.5}""", 400, "'temperature'" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"top_p":0}""", 400, "'top_p'" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":0}""", 400, "'max_tokens'" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":100000}""", 400, "'max_tokens'" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"n":9}""", 400, "'n' must be an integer from 1 to 8" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":21}""", 400, "'top_logprobs' must be an integer from 0 to 20" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"top_logprobs":2}""", 400, "needs 'logprobs': true" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"presence_penalty":3}""", 400, "'presence_penalty'" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"frequency_penalty":"a"}""", 400, "'frequency_penalty'" },
        { $$"""{"model":"tiny-chat","messages":[{"role":"user","content":"{{new string('詩', 200)}}"}]}""", 400, "context_length_exceeded" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"strnig"}}}}""", 400, "invalid_json_schema" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","pattern":"a+"}}}}""", 400, "#/pattern" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"yaml"}}""", 400, "response_format.type" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"description":"no name"}}]}""", 400, "tools[0].function.name" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"a"}},{"type":"function","function":{"name":"a"}}]}""", 400, "already the name of another tool" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"a"}}],"tool_choice":{"type":"function","function":{"name":"b"}}}""", 400, "names 'b', which is not among 'tools'" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"a","parameters":{"type":"object","properties":{"x":{"minimum":1}}}}}]}""", 400, "tools[0].function.parameters" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"tool_choice":"required"}""", 400, "'tool_choice' needs 'tools'" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"call_1","content":"42"}]}""", 400, "messages[1].tool_call_id" },
        { """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"a b","arguments":"{}"}}]}]}""", 400, "messages[1].tool_calls[0].function.name" },
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task BadRequestsGetOpenAiErrorsNot500s(string body, int status, string message)
    {
        var reply = await fixture.Http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        Assert.Equal(status, (int)reply.StatusCode);
        string text = await reply.Content.ReadAsStringAsync();
        using var json = JsonDocument.Parse(text);
        Assert.Contains(message, json.RootElement.GetProperty("error").GetRawText());
        Assert.Equal(JsonValueKind.String, json.RootElement.GetProperty("error").GetProperty("type").ValueKind);
    }

    [Fact]
    public async Task OversizedBodiesAre413AndUnknownRoutes404()
    {
        string huge = $$"""{"model":"tiny-chat","messages":[{"role":"user","content":"{{new string('a', 100_000)}}"}]}""";
        var reply = await fixture.Http.PostAsync("/v1/chat/completions", new StringContent(huge, Encoding.UTF8, "application/json"));
        Assert.Equal(413, (int)reply.StatusCode);
        Assert.Contains("larger than", await reply.Content.ReadAsStringAsync());
        Assert.Equal(404, (int)(await fixture.Http.GetAsync("/v1/nothing")).StatusCode);
    }

    [Fact]
    public async Task ConcurrentClientsAreAllServed()
    {
        var chat = fixture.OpenAi().GetChatClient("tiny-chat");
        var answers = await Task.WhenAll(Enumerable.Range(0, 6).Select(i =>
            chat.CompleteChatAsync([new UserChatMessage($"寫一首詩，題為《春曉》。{i}")], new ChatCompletionOptions { MaxOutputTokenCount = 8 })));
        Assert.All(answers, a => Assert.InRange(a.Value.Usage.OutputTokenCount, 1, 8));

    }

    static StringContent Json(object body) => new(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");
}

public class ApiKeyTests : IClassFixture<TrainedTokenizerFixture>
{
    readonly TrainedTokenizerFixture _fixture;
    public ApiKeyTests(TrainedTokenizerFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task AKeyedServerRefusesMissingOrWrongKeys()
    {
        using var dir = new TempDirectory();
        _fixture.SaveInitialRun(dir.File("m"), context: 32);
        using var model = ServedModel.Load(dir.File("m"));
        await using var server = new GptServer([model], new ServerOptions(Port: 0, ApiKey: "s3cret"));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address) };
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("/v1/models")).StatusCode);
        http.DefaultRequestHeaders.Authorization = new("Bearer", "wrong");
        var wrong = await http.GetAsync("/v1/models");
        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        Assert.Contains("invalid_api_key", await wrong.Content.ReadAsStringAsync());
        var client = new OpenAIClient(new ApiKeyCredential("s3cret"), new OpenAIClientOptions { Endpoint = new Uri(server.Address + "/v1") });
        var answer = await client.GetChatClient("m").CompleteChatAsync([new UserChatMessage("hi")], new ChatCompletionOptions { MaxOutputTokenCount = 3 });
        Assert.InRange(answer.Value.Usage.OutputTokenCount, 1, 3);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/health")).StatusCode); // health and the page need no key
    }

    [Fact]
    public async Task AClientThatLeavesMidStreamStopsItsGenerationAndFreesItsSlot()
    {
        using var dir = new TempDirectory();
        using var model = ServedModel.Load(_fixture.SaveSlowRun(dir.File("slow")));
        await using var server = new GptServer([model], new ServerOptions(Port: 0, MaxConcurrent: 1)); // one slot
        await server.StartAsync();
        // A client that really hangs up: by default HttpClient drains an unread body to reuse the connection.
        using var http = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = new Uri(server.Address) };
        using (var cts = new CancellationTokenSource())
        {
            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = new StringContent(JsonSerializer.Serialize(new { model = "slow", messages = new[] { new { role = "user", content = "hi" } }, stream = true, max_tokens = 1000, temperature = 0 }),
                    Encoding.UTF8, "application/json"),
            };
            var reply = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
            var stream = await reply.Content.ReadAsStreamAsync(cts.Token);
            await stream.ReadAtLeastAsync(new byte[64], 1, throwOnEndOfStream: true, cts.Token);
            cts.Cancel(); // leave after the first chunk of a 1,000-token answer
            reply.Dispose();
        }
        // The only slot must come free: a new request is answered long before 1,000 tokens could have been generated.
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var next = await http.PostAsync("/v1/chat/completions", new StringContent(
            JsonSerializer.Serialize(new { model = "slow", messages = new[] { new { role = "user", content = "hi" } }, max_tokens = 2 }), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, next.StatusCode);
        var batcher = (ContinuousBatcher)server.Scheduler("slow");
        Assert.True(watch.Elapsed.TotalSeconds < 3, $"the slot came free only after {watch.Elapsed.TotalSeconds:F1} s " +
            $"(cancelled generations {server.CancelledGenerations}, decode steps {batcher.DecodeSteps}, engine {(model.Decoder.Engine is null ? "libtorch" : "CPU")})");
        for (int i = 0; i < 50 && server.CancelledGenerations == 0; i++) await Task.Delay(100);
        Assert.Equal(1, server.CancelledGenerations);
    }
}

public class ChatSessionTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    [Fact]
    public void CommandsHistoryTrimmingAndStoppingAnAnswer()
    {
        using var dir = new TempDirectory();
        fixture.SaveInitialRun(dir.File("m"), context: 48);
        using var model = ServedModel.Load(dir.File("m"));
        var session = new ChatSession(model, maxTokens: 6);
        var output = new StringBuilder();
        void Say(string line) => Assert.True(session.Handle(line, s => output.Append(s), seed: 1));

        Say("/system 你是詩人。");
        Assert.Equal("你是詩人。", session.System);
        Say("/temp 0.3");
        Assert.Equal(0.3, session.Temperature);
        Say("/temp hot");
        Assert.Equal(0.3, session.Temperature);
        Assert.Contains("must be a number", output.ToString());
        Say("床前明月光");
        Assert.Equal([ChatRoles.User, ChatRoles.Assistant], session.History.Select(m => m.Role));
        // Many turns: the prompt never outgrows the window; the oldest turns go.
        for (int i = 0; i < 10; i++) Say($"第{i}句");
        Assert.True(session.History.Count < 22);
        Assert.Equal("第9句", session.History[^2].Content);
        Say("/reset");
        Assert.Empty(session.History);
        Say("/nonsense");
        Assert.Contains("commands:", output.ToString());

        // Ctrl+C: a cancelled answer ends with "(stopped)" and the session goes on.
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        var stopped = new StringBuilder();
        Assert.True(session.Handle("hello", s => stopped.Append(s), cancelled.Token));
        Assert.Contains("(stopped)", stopped.ToString());
        Assert.Equal(2, session.History.Count);
        Assert.False(session.Handle("/quit", _ => { }));
    }
}
