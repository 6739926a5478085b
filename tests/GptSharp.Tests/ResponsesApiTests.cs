using System.Net;
using System.Text;
using System.Text.Json;
using GptSharp.Tokenization;
using OpenAI.Responses;

#pragma warning disable OPENAI001 // the Responses client is marked experimental in the SDK

namespace GptSharp.Tests;

/// <summary>OpenAI's Responses API (<c>/v1/responses</c>) through the official .NET SDK's ResponsesClient, and its refusals.</summary>
public class ResponsesApiTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    const string Question = "《靜夜思》的作者是誰？";
    static StringContent Json(object body) => new(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");
    ResponsesClient Client => fixture.OpenAi().GetResponsesClient();

    static CreateResponseOptions Options(params ResponseItem[] items)
    {
        return new CreateResponseOptions("tiny-chat", items) { Temperature = 0, MaxOutputTokenCount = 12 };
    }

    [Fact]
    public async Task AWholeResponseIsTheModelsGreedyAnswerWithUsage()
    {
        var response = (await Client.CreateResponseAsync(Options(ResponseItem.CreateUserMessageItem(Question)))).Value;
        Assert.StartsWith("resp_", response.Id);
        Assert.Equal(fixture.Greedy(Question, 12), response.GetOutputText());
        var message = Assert.IsAssignableFrom<MessageResponseItem>(Assert.Single(response.OutputItems));
        Assert.Equal(MessageRole.Assistant, message.Role);
        int prompt = fixture.Model.Template.RenderPrompt([new(ChatRoles.User, Question)]).Length;
        Assert.Equal(prompt, response.Usage.InputTokenCount);
        Assert.InRange(response.Usage.OutputTokenCount, 1, 12);
        Assert.Equal(response.Usage.InputTokenCount + response.Usage.OutputTokenCount, response.Usage.TotalTokenCount);
        Assert.True(response.Status is ResponseStatus.Completed or ResponseStatus.Incomplete);
    }

    [Fact]
    public async Task StreamedDeltasMakeTheSameTextAsTheWholeResponse()
    {
        var whole = (await Client.CreateResponseAsync(Options(ResponseItem.CreateUserMessageItem(Question)))).Value;
        var deltas = new StringBuilder();
        var kinds = new List<string>();
        ResponseResult? completed = null;
        var options = Options(ResponseItem.CreateUserMessageItem(Question));
        options.StreamingEnabled = true;
        await foreach (var update in await Client.CreateResponseStreamingAsync(options))
        {
            kinds.Add(update.GetType().Name);
            if (update is StreamingResponseOutputTextDeltaUpdate delta) deltas.Append(delta.Delta);
            if (update is StreamingResponseCompletedUpdate done) completed = done.Response;
            if (update is StreamingResponseIncompleteUpdate cut) completed = cut.Response;
        }
        Assert.Equal(whole.GetOutputText(), deltas.ToString());
        Assert.NotNull(completed);
        Assert.Equal(whole.GetOutputText(), completed.GetOutputText());
        Assert.Equal(nameof(StreamingResponseCreatedUpdate), kinds[0]);
        Assert.Contains(nameof(StreamingResponseOutputItemAddedUpdate), kinds);
        Assert.Contains(nameof(StreamingResponseOutputTextDoneUpdate), kinds);
        Assert.True(kinds.IndexOf(nameof(StreamingResponseOutputItemDoneUpdate)) < kinds.Count - 1, "the item is done before the response");
    }

    [Fact]
    public async Task AFunctionCallRoundTripsThroughPreviousResponseId()
    {
        var tool = ResponseTool.CreateFunctionTool("get_weather",
            BinaryData.FromString("""{"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"]}"""), strictModeEnabled: true, "The weather in a city");
        var options = Options(ResponseItem.CreateUserMessageItem(Question));
        options.Tools.Add(tool);
        options.ToolChoice = ResponseToolChoice.CreateRequiredChoice();
        options.MaxOutputTokenCount = 40;
        var first = (await Client.CreateResponseAsync(options)).Value;
        var call = Assert.IsType<FunctionCallResponseItem>(Assert.Single(first.OutputItems));
        Assert.Equal("get_weather", call.FunctionName);
        using (var arguments = JsonDocument.Parse(call.FunctionArguments.ToString()))
            Assert.Equal(JsonValueKind.String, arguments.RootElement.GetProperty("city").ValueKind);

        // The next request sends only the call's output: the stored conversation supplies the question and the call.
        var next = Options(ResponseItem.CreateFunctionCallOutputItem(call.CallId, "晴"));
        next.PreviousResponseId = first.Id;
        next.Tools.Add(tool);
        next.ToolChoice = ResponseToolChoice.CreateNoneChoice();
        var second = (await Client.CreateResponseAsync(next)).Value;
        Assert.Equal(first.Id, second.PreviousResponseId);
        Assert.IsAssignableFrom<MessageResponseItem>(Assert.Single(second.OutputItems));
        // Its prompt is the whole conversation: longer than the first prompt by the call and its result.
        Assert.True(second.Usage.InputTokenCount > first.Usage.InputTokenCount, $"{second.Usage.InputTokenCount} vs {first.Usage.InputTokenCount}");

        // The same output item sent without the stored conversation answers no call: refused by its field.
        var orphan = Options(ResponseItem.CreateUserMessageItem(Question), ResponseItem.CreateFunctionCallOutputItem(call.CallId, "晴"));
        var error = await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() => Client.CreateResponseAsync(orphan));
        Assert.Equal(400, error.Status);
        Assert.Contains("input[1].call_id", error.Message);
    }

    [Fact]
    public async Task AStoredResponseIsRetrievedAndDeletedAndAnUnknownIdIs404()
    {
        var created = (await Client.CreateResponseAsync(Options(ResponseItem.CreateUserMessageItem(Question)))).Value;
        var fetched = (await Client.GetResponseAsync(created.Id)).Value;
        Assert.Equal(created.GetOutputText(), fetched.GetOutputText());
        Assert.True((await Client.DeleteResponseAsync(created.Id)).Value.Deleted);

        var reply = await fixture.Http.PostAsync("/v1/responses", Json(new { model = "tiny-chat", input = "床前明月光", previous_response_id = created.Id }));
        Assert.Equal(HttpStatusCode.NotFound, reply.StatusCode);
        using var error = JsonDocument.Parse(await reply.Content.ReadAsStringAsync());
        Assert.Equal("previous_response_id", error.RootElement.GetProperty("error").GetProperty("param").GetString());
        Assert.Equal("previous_response_not_found", error.RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal(HttpStatusCode.NotFound, (await fixture.Http.GetAsync($"/v1/responses/{created.Id}")).StatusCode);
    }

    [Fact]
    public async Task AJsonSchemaFormatIsFollowed()
    {
        var options = Options(ResponseItem.CreateUserMessageItem(Question));
        options.MaxOutputTokenCount = 40;
        options.TextOptions = new ResponseTextOptions
        {
            TextFormat = ResponseTextFormat.CreateJsonSchemaFormat("poet",
                BinaryData.FromString("""{"type": "object", "properties": {"poet": {"type": "string", "maxLength": 6}}, "required": ["poet"], "additionalProperties": false}"""), jsonSchemaIsStrict: true),
        };
        var response = (await Client.CreateResponseAsync(options)).Value;
        using var answer = JsonDocument.Parse(response.GetOutputText());
        Assert.Equal(["poet"], answer.RootElement.EnumerateObject().Select(p => p.Name));
    }

    [Theory]
    [InlineData("""{"model":"tiny-chat","input":[{"type":"reasoning","summary":[]}]}""", "input[0].type")]
    [InlineData("""{"model":"tiny-chat","input":[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}]}""", "input[0].content[0].type")]
    [InlineData("""{"model":"tiny-chat","input":[]}""", "input")]
    [InlineData("""{"model":"tiny-chat"}""", "input")]
    [InlineData("""{"model":"tiny-chat","input":"hi","tools":[{"type":"web_search"}]}""", "tools[0].type")]
    [InlineData("""{"model":"tiny-chat","input":"hi","max_output_tokens":0}""", "max_output_tokens")]
    [InlineData("""{"model":"tiny-chat","input":"hi","max_output_tokens":100000}""", "max_output_tokens")]
    [InlineData("""{"model":"tiny-chat","input":"hi","tool_choice":{"type":"function","name":"nope"},"tools":[{"type":"function","name":"a"}]}""", "tool_choice")]
    [InlineData("""{"model":"tiny-chat","input":[{"type":"function_call","call_id":"c1","name":"a","arguments":"{}"},{"type":"function_call","call_id":"c1","name":"a","arguments":"{}"}]}""", "input[1].call_id")]
    [InlineData("""{"model":"tiny-chat","input":"hi","text":{"format":{"type":"json_schema","name":"x"}}}""", "text.format.schema")]
    public async Task BadRequestsAre400sNamingTheField(string body, string param)
    {
        var reply = await fixture.Http.PostAsync("/v1/responses", new StringContent(body, Encoding.UTF8, "application/json"));
        string text = await reply.Content.ReadAsStringAsync();
        Assert.True(reply.StatusCode == HttpStatusCode.BadRequest, text);
        using var error = JsonDocument.Parse(text);
        Assert.Equal(param, error.RootElement.GetProperty("error").GetProperty("param").GetString());
        // The server keeps serving.
        Assert.True((await fixture.Http.GetAsync("/health")).IsSuccessStatusCode);
    }
}
