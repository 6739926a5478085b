using System.Text.Json;
using GptSharp.Serving;
using Microsoft.Extensions.AI;

namespace GptSharp.Tests;

/// <summary>The in-process <see cref="GptChatClient"/> through Microsoft.Extensions.AI's own machinery: streaming,
/// options, tool calling with <c>UseFunctionInvocation()</c>, typed output with <c>GetResponseAsync&lt;T&gt;</c>, embeddings.</summary>
public sealed class ChatClientTests : IClassFixture<TrainedTokenizerFixture>, IDisposable
{
    readonly TempDirectory _dir = new();
    readonly GptChatClient _client;

    public ChatClientTests(TrainedTokenizerFixture fixture)
    {
        fixture.SaveInitialRun(_dir.File("tiny"), context: 128);
        _client = GptChatClient.Load(_dir.File("tiny"));
    }

    public void Dispose()
    {
        _client.Dispose();
        _dir.Dispose();
    }

    [Fact]
    public async Task StreamingGivesTheSameAnswerAsAWholeResponseUnderTheSameOptions()
    {
        var options = new ChatOptions { Temperature = 0.8f, TopP = 0.9f, MaxOutputTokens = 12, Seed = 21 };
        ChatMessage[] messages = [new(ChatRole.System, "你是詩人。"), new(ChatRole.User, "床前明月光")];
        var whole = await _client.GetResponseAsync(messages, options);
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in _client.GetStreamingResponseAsync(messages, options)) updates.Add(update);
        var streamed = updates.ToChatResponse();
        Assert.Equal(whole.Text, streamed.Text);
        Assert.Equal(whole.FinishReason, streamed.FinishReason);
        Assert.Equal(whole.Usage!.OutputTokenCount, streamed.Usage!.OutputTokenCount);
        Assert.InRange(whole.Usage.OutputTokenCount!.Value, 1, 12);
        Assert.Equal("tiny", whole.ModelId);

        // A stop sequence cuts the answer before it, as the server does.
        string text = whole.Text;
        if (text.Length > 2)
        {
            var stopped = await _client.GetResponseAsync(messages, new ChatOptions { Temperature = 0.8f, TopP = 0.9f, MaxOutputTokens = 12, Seed = 21, StopSequences = [text[2..3]] });
            Assert.Equal(text[..text.IndexOf(text[2..3], StringComparison.Ordinal)], stopped.Text);
        }
    }

    sealed record Weather(string City, int Days, bool Metric);

    [Fact]
    public async Task GetResponseAsyncOfTDeserialisesEveryAnswer()
    {
        for (int seed = 0; seed < 6; seed++)
        {
            var response = await _client.GetResponseAsync<Weather>("天氣", new ChatOptions { MaxOutputTokens = 80, Seed = seed, Temperature = 1f });
            Assert.True(response.TryGetResult(out var weather), response.Text);
            Assert.NotNull(weather!.City);
        }
    }

    [Fact]
    public async Task FunctionInvocationCallsARealCSharpFunctionAndFeedsItsResultBack()
    {
        var cities = new List<string>();
        var getWeather = AIFunctionFactory.Create((string city, int days) =>
        {
            cities.Add(city);
            return $"sunny in {city} for {days} days";
        }, "get_weather", "The weather in a city");
        using var client = new ChatClientBuilder(_client).UseFunctionInvocation(configure: f => f.MaximumIterationsPerRequest = 2).Build();
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "天氣")],
            new ChatOptions { Tools = [getWeather], ToolMode = ChatToolMode.RequireSpecific("get_weather"), MaxOutputTokens = 40, Seed = 4 });

        Assert.True(cities.Count > 0, string.Join(" | ", response.Messages.SelectMany(m => m.Contents).Select(c => c switch
        {
            FunctionCallContent f => $"call {f.Name} {JsonSerializer.Serialize(f.Arguments)}",
            FunctionResultContent r => $"result {r.Result} {r.Exception?.Message}",
            TextContent t => $"text {t.Text}",
            _ => c.GetType().Name,
        })));   // the model's call reached the C# function, with arguments that bound to its parameters
        var call = response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().First();
        Assert.Equal("get_weather", call.Name);
        var result = response.Messages.SelectMany(m => m.Contents).OfType<FunctionResultContent>().First(r => r.CallId == call.CallId);
        Assert.Equal($"sunny in {cities[0]}", result.Result?.ToString()?.Split(" for ")[0].Trim('"'));
    }

    [Fact]
    public async Task EmbeddingsAreTheModelWidthAndFollowTheText()
    {
        IEmbeddingGenerator<string, Embedding<float>> generator = _client;
        var embeddings = await generator.GenerateAsync(["床前明月光", "白日依山盡", "床前明月光"]);
        Assert.Equal(3, embeddings.Count);
        Assert.All(embeddings, e => Assert.Equal(32, e.Vector.Length));
        Assert.Equal(embeddings[0].Vector.ToArray(), embeddings[2].Vector.ToArray());
        Assert.NotEqual(embeddings[0].Vector.ToArray(), embeddings[1].Vector.ToArray());

        // A text longer than the context is refused by its index, not cut to fit.
        var tooLong = await Assert.ThrowsAsync<ArgumentException>(() => generator.GenerateAsync(["月", string.Concat(Enumerable.Repeat("床前明月光，疑是地上霜。", 200))]));
        Assert.Contains("Text 1", tooLong.Message);
        Assert.Contains("embeds at most", tooLong.Message);
    }

    [Fact]
    public async Task BadOptionsAreArgumentErrorsNamingWhatIsWrong()
    {
        var tool = AIFunctionFactory.Create((string q) => q, "lookup");
        var unknown = await Assert.ThrowsAsync<ArgumentException>(() => _client.GetResponseAsync("hi", new ChatOptions { Tools = [tool], ToolMode = ChatToolMode.RequireSpecific("nope") }));
        Assert.Contains("'nope'", unknown.Message);
        var schema = JsonDocument.Parse("""{"type": "string", "pattern": "a+"}""").RootElement;
        var bad = await Assert.ThrowsAsync<GptSharp.Inference.Structured.JsonSchemaException>(() =>
            _client.GetResponseAsync("hi", new ChatOptions { ResponseFormat = ChatResponseFormat.ForJsonSchema(schema) }));
        Assert.Equal("#/pattern", bad.Path);
    }
}
