using System.Text.Json;

namespace GptSharp.Tests;

/// <summary>
/// The official npm clients against the server: <c>openai</c> (pinned to 6.49.0 in tests/js/package.json: 7.x asks for
/// Node 22) — chat streaming with <c>include_usage</c>, <c>n</c>, <c>logprobs</c>, <c>response_format</c>, <c>tools</c>,
/// a 400 as an APIError, and the Responses API whole, streamed, with a function call and <c>previous_response_id</c> —
/// and <c>@anthropic-ai/sdk</c> — messages whole and streamed, stop sequences, tool_use/tool_result, count_tokens,
/// errors in Anthropic's shape, the key sent as <c>x-api-key</c>.
/// </summary>
public class NpmClientTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    [Fact]
    public void TheNpmOpenAiClientPassesItsContract()
    {
        var (code, output) = NodePackages.Run("node", NodePackages.Folder, "openai-contract.mjs", fixture.Server.Address + "/v1", "tiny-chat");
        Assert.True(code == 0, output);
        var summary = JsonDocument.Parse(output.Trim().Split('\n')[^1]).RootElement;
        Assert.True(summary.GetProperty("ok").GetBoolean());
        Assert.Equal(8, summary.GetProperty("checks").GetArrayLength());
    }

    [Fact]
    public async Task TheNpmAnthropicClientPassesItsContract()
    {
        await using var keyed = new GptSharp.Serving.GptServer([fixture.Model], new GptSharp.Serving.ServerOptions(Port: 0, ApiKey: "anthropic-key"));
        await keyed.StartAsync();
        var (code, output) = NodePackages.Run("node", NodePackages.Folder, "anthropic-contract.mjs", keyed.Address, "tiny-chat", "anthropic-key");
        Assert.True(code == 0, output);
        var summary = JsonDocument.Parse(output.Trim().Split('\n')[^1]).RootElement;
        Assert.True(summary.GetProperty("ok").GetBoolean());
        Assert.Equal(4, summary.GetProperty("checks").GetArrayLength());
    }
}
