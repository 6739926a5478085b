using System.Text.Json;

namespace GptSharp.Tests;

/// <summary>
/// The official npm <c>openai</c> client (pinned to 6.49.0 in tests/js/package.json: 7.x asks for Node 22) against the
/// server: streaming with <c>include_usage</c>, <c>n</c>, <c>logprobs</c>, <c>response_format</c>, <c>tools</c> and a
/// 400 as an APIError.
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
        Assert.Equal(5, summary.GetProperty("checks").GetArrayLength());
    }
}
