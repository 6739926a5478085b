using GptSharp.Fuzzing;
using System.Text.Json;
using Xunit.Abstractions;

namespace GptSharp.Tests;

/// <summary>
/// Seeded fuzzing with a fixed number of cases, so that it runs the same in every test run; <c>bench -- fuzz</c> runs
/// more cases from other seeds.
/// </summary>
public class RequestFuzzTests(ServerFixture fixture, ITestOutputHelper output) : IClassFixture<ServerFixture>
{
    [Fact]
    public async Task ThousandsOfMutatedRequestsNeverGet5xxOrLeakAndNeverDisturbAWellFormedOne()
    {
        string body = JsonSerializer.Serialize(new { model = "tiny-chat", messages = new[] { new { role = "user", content = "春眠不覺曉" } }, max_tokens = 8, temperature = 0 });
        var report = await RequestFuzzer.Run(fixture.Http, "tiny-chat", (body, fixture.Greedy("春眠不覺曉", 8)), cases: 2000, seed: 13);
        output.WriteLine(report.ToString());
        Assert.True(report.Violations.Count == 0, report.ToString());
        Assert.True(report.Outcomes.GetValueOrDefault("200") > 200, report.ToString()); // many mutants are still valid and are generated
        Assert.True(report.Outcomes.GetValueOrDefault("400") > 200, report.ToString());
    }
}

public class FileFuzzTests(ITestOutputHelper output)
{
    [Fact]
    public void CorruptFilesFailWithOneLineNamingTheFile()
    {
        using var dir = new TempDirectory();
        var report = FileFuzzer.Run(dir.Path, cases: 1500, seed: 29);
        output.WriteLine(report.ToString());
        Assert.True(report.Violations.Count == 0, report.ToString());
        Assert.Contains(report.Outcomes, o => o.Key.EndsWith("loaded"));              // some damage is harmless, and loads
        Assert.Contains(report.Outcomes, o => o.Key.EndsWith(nameof(InvalidDataException)));
    }
}
