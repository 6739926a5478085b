using System.Net;
using System.Text;
using System.Text.Json;
using GptSharp.Serving;
using GptSharp.Tokenization;

namespace GptSharp.Tests;

/// <summary>
/// Tool calling with imported open models in their own formats: a Qwen3-shaped and a Llama 3.2-shaped model are served
/// with a tool offered through Chat Completions, the Responses API and Anthropic's Messages; the prompt holds the tool's
/// definition where the family's template writes it, a required call is decoded in the family's syntax (Qwen's
/// <c>&lt;tool_call&gt;</c> JSON, Llama's <c>{"name", "parameters"}</c>) and read back as the API's call, whole and streamed.
/// </summary>
public class OpenModelToolTests
{
    const string Schema = """{"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"]}""";
    static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    [Theory]
    [InlineData("qwen3")]
    [InlineData("llama3_2")]
    public async Task ARequiredCallIsDecodedInTheFamilysFormatAndReadBackByEveryApi(string family)
    {
        using var dir = new TempDirectory();
        OpenModelPathTests.ImportShaped(dir, "open", family, context: 384);
        using var model = ServedModel.Load(dir.File("open"));
        Assert.True(model.Template.SupportsTools);
        var syntax = ToolCallSyntax.For(model.Tokenizer)!;
        await using var server = new GptServer([model], new ServerOptions(Port: 0));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address) };

        // Chat Completions, whole: the prompt is the family's template with the tool's definition in it.
        string chat = $$$"""{"model":"open","max_tokens":60,"seed":4,"messages":[{"role":"user","content":"Weather in Paris?"}],"tool_choice":"required","tools":[{"type":"function","function":{"name":"get_weather","description":"The weather","parameters":{{{Schema}}}}}]}""";
        var reply = await http.PostAsync("/v1/chat/completions", Json(chat));
        string text = await reply.Content.ReadAsStringAsync();
        Assert.True(reply.IsSuccessStatusCode, text);
        using (var doc = JsonDocument.Parse(text))
        {
            var choice = doc.RootElement.GetProperty("choices")[0];
            Assert.Equal("tool_calls", choice.GetProperty("finish_reason").GetString());
            var function = choice.GetProperty("message").GetProperty("tool_calls")[0].GetProperty("function");
            Assert.Equal("get_weather", function.GetProperty("name").GetString());
            using var arguments = JsonDocument.Parse(function.GetProperty("arguments").GetString()!);
            Assert.Equal(JsonValueKind.String, arguments.RootElement.GetProperty("city").ValueKind);
            var tool = JsonSerializer.SerializeToElement(JsonDocument.Parse($$$"""{"type":"function","function":{"name":"get_weather","description":"The weather","parameters":{{{Schema}}}}}""").RootElement);
            int expected = model.Template.RenderPrompt([new ChatMessage(ChatRoles.User, "Weather in Paris?")], [tool]).Length;
            Assert.Equal(expected, doc.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
            Assert.Contains(family == "qwen3" ? "<tools>" : "Given the following functions", model.Tokenizer.Decode(model.Template.RenderPrompt([new ChatMessage(ChatRoles.User, "x")], [tool])));
        }

        // Streamed: no call text leaks as content, and the call arrives as a tool-call delta.
        var stream = await http.PostAsync("/v1/chat/completions", Json(chat.Replace("\"seed\":4", "\"seed\":4,\"stream\":true")));
        string events = await stream.Content.ReadAsStringAsync();
        Assert.Contains("\"tool_calls\"", events);
        string streamed = string.Concat(events.Split('\n').Where(l => l.StartsWith("data: {"))
            .Select(l => JsonDocument.Parse(l[6..]).RootElement.GetProperty("choices")).Where(c => c.GetArrayLength() > 0)
            .Select(c => c[0].GetProperty("delta").TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.String ? content.GetString() : ""));
        Assert.Equal("", streamed);

        // The Responses API and Anthropic's Messages read the same call.
        var responses = await http.PostAsync("/v1/responses", Json($$$"""{"model":"open","max_output_tokens":60,"input":"Weather in Paris?","tool_choice":"required","tools":[{"type":"function","name":"get_weather","parameters":{{{Schema}}}}]}"""));
        string responseText = await responses.Content.ReadAsStringAsync();
        Assert.True(responses.IsSuccessStatusCode, responseText);
        using (var doc = JsonDocument.Parse(responseText))
            Assert.Equal("get_weather", doc.RootElement.GetProperty("output").EnumerateArray().Single(i => i.GetProperty("type").GetString() == "function_call").GetProperty("name").GetString());
        var messages = await http.PostAsync("/v1/messages", Json($$$"""{"model":"open","max_tokens":60,"messages":[{"role":"user","content":"Weather in Paris?"}],"tool_choice":{"type":"any"},"tools":[{"name":"get_weather","input_schema":{{{Schema}}}}]}"""));
        string messageText = await messages.Content.ReadAsStringAsync();
        Assert.True(messages.IsSuccessStatusCode, messageText);
        using (var doc = JsonDocument.Parse(messageText))
        {
            Assert.Equal("tool_use", doc.RootElement.GetProperty("stop_reason").GetString());
            var use = doc.RootElement.GetProperty("content").EnumerateArray().Single(b => b.GetProperty("type").GetString() == "tool_use");
            Assert.Equal(JsonValueKind.String, use.GetProperty("input").GetProperty("city").ValueKind);
        }

        // The call's round trip: its result goes back in the family's own result turn and the model answers.
        string followUp = $$$"""{"model":"open","max_tokens":4,"messages":[{"role":"user","content":"Weather in Paris?"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"c1","content":"sunny"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{{{Schema}}}}}],"tool_choice":"none"}""";
        var answered = await http.PostAsync("/v1/chat/completions", Json(followUp));
        Assert.True(answered.IsSuccessStatusCode, await answered.Content.ReadAsStringAsync());
        Assert.Equal(syntax.OpenToken >= 0, family == "qwen3");
    }
}
