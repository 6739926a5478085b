using System.Net;
using System.Text;
using System.Text.Json;
using Anthropic;
using Anthropic.Models.Messages;
using GptSharp.Serving;
using GptSharp.Tokenization;

namespace GptSharp.Tests;

/// <summary>Anthropic's Messages API (<c>/v1/messages</c>, <c>count_tokens</c>) through the official .NET SDK, and its refusals in Anthropic's error shape.</summary>
public class MessagesApiTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    const string Question = "《靜夜思》的作者是誰？";

    AnthropicClient Client(string key = "unused") => new(new Anthropic.Core.ClientOptions { BaseUrl = fixture.Server.Address, ApiKey = key, MaxRetries = 0 });

    /// <summary>A greedy request: this SDK version has no temperature property, so the body is given as raw JSON.</summary>
    static MessageCreateParams Ask(long maxTokens = 12) => MessageCreateParams.FromRawUnchecked(new Dictionary<string, JsonElement>(), new Dictionary<string, JsonElement>(), new Dictionary<string, JsonElement>
    {
        ["model"] = JsonSerializer.SerializeToElement("tiny-chat"), ["max_tokens"] = JsonSerializer.SerializeToElement(maxTokens),
        ["temperature"] = JsonSerializer.SerializeToElement(0),
        ["messages"] = JsonSerializer.SerializeToElement(new[] { new { role = "user", content = Question } }),
    });

    [Fact]
    public async Task AWholeMessageIsTheModelsGreedyAnswer()
    {
        var message = await Client().Messages.Create(Ask());
        var text = string.Concat(message.Content.Select(block => block.TryPickText(out var t) ? t.Text : ""));
        Assert.Equal(fixture.Greedy(Question, 12), text);
        Assert.StartsWith("msg_", message.ID);
        Assert.Contains(message.StopReason!.Raw(), new[] { "end_turn", "max_tokens" });
        Assert.Equal(fixture.Model.Template.RenderPrompt([new(ChatRoles.User, Question)]).Length, message.Usage.InputTokens);
        Assert.InRange(message.Usage.OutputTokens, 1, 12);
    }

    [Fact]
    public async Task StreamedTextDeltasMakeTheWholeMessage()
    {
        var client = Client();
        var whole = await client.Messages.Create(Ask());
        string text = string.Concat(whole.Content.Select(block => block.TryPickText(out var t) ? t.Text : ""));
        var deltas = new StringBuilder();
        var kinds = new List<string>();
        await foreach (var update in client.Messages.CreateStreaming(Ask()))
        {
            kinds.Add(update.Type.Raw());
            if (update.TryPickContentBlockDelta(out var delta) && delta.Delta.TryPickText(out var piece)) deltas.Append(piece.Text);
        }
        Assert.Equal(text, deltas.ToString());
        Assert.Equal("message_start", kinds[0]);
        Assert.Equal("message_stop", kinds[^1]);
        Assert.Contains("message_delta", kinds);
    }

    [Fact]
    public async Task CountTokensIsThePromptTheMessageIsAnsweredFrom()
    {
        var counted = await Client().Messages.CountTokens(new MessageCountTokensParams
        {
            Model = "tiny-chat", Messages = [new MessageParam(new UserMessageParam(new MessageContentParam(Question)))],
        });
        Assert.Equal(fixture.Model.Template.RenderPrompt([new(ChatRoles.User, Question)]).Length, counted.InputTokens);
    }

    [Theory]
    [InlineData("""{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}]}""", "max_tokens")]
    [InlineData("""{"model":"tiny-chat","max_tokens":4,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_x","content":"晴"}]}]}""", "messages.0.content.0.tool_use_id")]
    [InlineData("""{"model":"tiny-chat","max_tokens":4,"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]}""", "messages.0.content.0.type")]
    [InlineData("""{"model":"tiny-chat","max_tokens":4,"messages":[{"role":"system","content":"hi"}]}""", "messages.0.role")]
    [InlineData("""{"model":"tiny-chat","max_tokens":4,"messages":[]}""", "messages")]
    [InlineData("""{"model":"tiny-chat","max_tokens":4,"temperature":1.5,"messages":[{"role":"user","content":"hi"}]}""", "temperature")]
    [InlineData("""{"model":"tiny-chat","max_tokens":100000,"messages":[{"role":"user","content":"hi"}]}""", "max_tokens")]
    [InlineData("""{"model":"tiny-chat","max_tokens":4,"tools":[{"type":"bash_20250124","name":"bash"}],"messages":[{"role":"user","content":"hi"}]}""", "tools.0.type")]
    [InlineData("""{"model":"tiny-chat","max_tokens":4,"tool_choice":{"type":"tool","name":"b"},"tools":[{"name":"a","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":"hi"}]}""", "tool_choice")]
    [InlineData("""{"model":"nope","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}""", "model")]
    public async Task BadRequestsAreRefusedInAnthropicsShapeNamingTheField(string body, string field)
    {
        var reply = await fixture.Http.PostAsync("/v1/messages", new StringContent(body, Encoding.UTF8, "application/json"));
        string text = await reply.Content.ReadAsStringAsync();
        Assert.True(reply.StatusCode is HttpStatusCode.BadRequest or HttpStatusCode.NotFound, text);
        using var doc = JsonDocument.Parse(text);
        Assert.Equal("error", doc.RootElement.GetProperty("type").GetString());
        var error = doc.RootElement.GetProperty("error");
        Assert.Equal(reply.StatusCode == HttpStatusCode.NotFound ? "not_found_error" : "invalid_request_error", error.GetProperty("type").GetString());
        Assert.Contains(field, error.GetProperty("message").GetString());
        Assert.True((await fixture.Http.GetAsync("/health")).IsSuccessStatusCode);
    }

    [Fact]
    public async Task TheKeyIsTakenAsXApiKeyOrBearerAndAWrongOneIs401InAnthropicsShape()
    {
        await using var keyed = new GptServer([fixture.Model], new ServerOptions(Port: 0, ApiKey: "k3y"));
        await keyed.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(keyed.Address) };
        HttpRequestMessage Post(string header, string value)
        {
            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/messages/count_tokens")
            { Content = new StringContent("""{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}]}""", Encoding.UTF8, "application/json") };
            request.Headers.TryAddWithoutValidation(header, value);
            return request;
        }
        Assert.True((await http.SendAsync(Post("x-api-key", "k3y"))).IsSuccessStatusCode);
        Assert.True((await http.SendAsync(Post("Authorization", "Bearer k3y"))).IsSuccessStatusCode);
        var refused = await http.SendAsync(Post("x-api-key", "wrong"));
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        using var doc = JsonDocument.Parse(await refused.Content.ReadAsStringAsync());
        Assert.Equal("authentication_error", doc.RootElement.GetProperty("error").GetProperty("type").GetString());
    }
}
