using System.Diagnostics;
using System.Text.Json;

namespace GptSharp.Tests;

/// <summary>
/// The official npm <c>openai</c> client (pinned to 6.49.0 in tests/js/package.json: 7.x asks for Node 22) against the server: streaming with
/// <c>include_usage</c>, <c>n</c>, <c>logprobs</c>, <c>response_format</c>, <c>tools</c> and a 400 as an APIError.
/// Needs Node.js and npm (Debian's nodejs and npm; .ci/run installs them); the package is installed on first run.
/// </summary>
public class NpmClientTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    [Fact]
    public void TheNpmOpenAiClientPassesItsContract()
    {
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "GptSharp.slnx"))) root = root.Parent;
        Assert.NotNull(root);
        string folder = Path.Combine(root!.FullName, "tests", "js");
        if (!File.Exists(Path.Combine(folder, "node_modules", "openai", "package.json")))
        {
            var (installed, log) = Run("npm", folder, "ci", "--no-audit", "--no-fund");
            Assert.True(installed == 0, $"npm ci in {folder} failed (Node.js and npm are needed: apt-get install nodejs npm, as .ci/run does):\n{log}");
        }
        var (code, output) = Run("node", folder, "openai-contract.mjs", fixture.Server.Address + "/v1", "tiny-chat");
        Assert.True(code == 0, output);
        var summary = JsonDocument.Parse(output.Trim().Split('\n')[^1]).RootElement;
        Assert.True(summary.GetProperty("ok").GetBoolean());
        Assert.Equal(5, summary.GetProperty("checks").GetArrayLength());
    }

    static (int Code, string Output) Run(string file, string directory, params string[] args)
    {
        var start = new ProcessStartInfo(file) { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) start.ArgumentList.Add(a);
        Process process;
        try { process = Process.Start(start)!; }
        catch (System.ComponentModel.Win32Exception e) { return (-1, $"cannot run '{file}': {e.Message}"); }
        using (process)
        {
            var stderr = process.StandardError.ReadToEndAsync();
            string stdout = process.StandardOutput.ReadToEnd();
            Assert.True(process.WaitForExit(300_000), $"{file} {string.Join(' ', args)} did not finish in 5 minutes");
            return (process.ExitCode, stdout + stderr.Result);
        }
    }
}
