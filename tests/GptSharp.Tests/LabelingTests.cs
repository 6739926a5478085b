using GptSharp.Alignment;
using GptSharp.Serving;
using Microsoft.Playwright;

namespace GptSharp.Tests;

/// <summary>People's feedback: the judgment log survives a crash, and the labeling page works end to end in Chromium.</summary>
public class LabelingTests
{
    const string Chromium = "/usr/bin/chromium";

    static string WriteItems(TempDirectory dir)
    {
        string path = dir.File("items.jsonl");
        File.WriteAllText(path,
            "{\"id\":\"a\",\"prompt\":\"寫一首詩，題為《春曉》。\",\"answers\":[\"春眠不覺曉，處處聞啼鳥。\",\"春春春\",\"夜來風雨聲\"]}\n" +
            "{\"id\":\"b\",\"prompt\":\"《靜夜思》的作者是誰？\",\"answers\":[\"杜甫。\",\"李白。\"]}\n" +
            "{\"id\":\"c\",\"prompt\":\"請接下句：白日依山盡，\",\"answers\":[\"黃河入海流。\",\"黃河。\"]}\n");
        return path;
    }

    [Fact]
    public void JudgmentsSurviveACrashMidWriteAndUndoIsLogged()
    {
        using var dir = new TempDirectory();
        var items = LabelingSession.ReadItems(WriteItems(dir));
        string log = dir.File("judgments.jsonl");
        var session = new LabelingSession(items, log);
        session.Judge("a", "0");
        session.Judge("b", "tie");
        Assert.Equal("b", session.Undo()!.Id);
        session.Judge("b", "1");
        Assert.Throws<InvalidOperationException>(() => session.Judge("b", "0"));
        Assert.Throws<ArgumentException>(() => session.Judge("c", "2"));
        File.AppendAllText(log, "{\"item\":\"c\",\"cho"); // the process died while writing this judgment

        var reopened = new LabelingSession(items, log);
        Assert.Equal([("a", "0"), ("b", "1")], reopened.Judgments);
        Assert.Equal("c", reopened.Next!.Id);
        Assert.EndsWith("\n", File.ReadAllText(log)); // the half line is gone
        var pairs = reopened.Pairs();
        Assert.Equal(3, pairs.Count); // a: answer 0 over 1 and 2; b: answer 1 over 0
        Assert.All(pairs.Take(2), p => Assert.Equal("春眠不覺曉，處處聞啼鳥。", p.Chosen));
        Assert.Equal(("李白。", "杜甫。", "item-b"), (pairs[2].Chosen, pairs[2].Rejected, pairs[2].Group));

        File.WriteAllText(dir.File("bad.jsonl"), "{\"prompt\":\"p\",\"answers\":[\"only one\"]}\n");
        Assert.Contains(":1: \"answers\" holds 1", Assert.Throws<InvalidDataException>(() => LabelingSession.ReadItems(dir.File("bad.jsonl"))).Message);
        File.WriteAllText(dir.File("other.jsonl"), "{\"item\":\"zzz\",\"choice\":\"0\"}\n");
        Assert.Contains("not in the item list", Assert.Throws<InvalidDataException>(() => new LabelingSession(items, dir.File("other.jsonl"))).Message);
    }

    [Fact]
    public async Task PeopleRankAnswersWithTheKeyboardAndEveryJudgmentIsOnDisk()
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: install Debian's chromium package (apt-get install chromium), as .ci/run does.");
        using var dir = new TempDirectory();
        var items = LabelingSession.ReadItems(WriteItems(dir));
        string log = dir.File("judgments.jsonl"), pairsPath = dir.File("pairs.jsonl");
        await using var server = new LabelingServer(new LabelingSession(items, log), pairsPath);
        await server.StartAsync();

        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = Chromium, Headless = true, Args = ["--no-sandbox"] });
        var page = await browser.NewPageAsync();
        await page.GotoAsync(server.Address);
        await Assertions.Expect(page.Locator("#prompt")).ToHaveTextAsync("寫一首詩，題為《春曉》。");
        await Assertions.Expect(page.Locator(".answer")).ToHaveCountAsync(3);
        await Assertions.Expect(page.Locator("#progress")).ToHaveTextAsync("0 / 3");

        await page.Keyboard.PressAsync("1");                      // the first answer is best
        await Assertions.Expect(page.Locator("#prompt")).ToHaveTextAsync("《靜夜思》的作者是誰？");
        await Assertions.Expect(page.Locator("#progress")).ToHaveTextAsync("1 / 3");
        await page.Keyboard.PressAsync("t");                      // a tie ...
        await Assertions.Expect(page.Locator("#progress")).ToHaveTextAsync("2 / 3");
        await page.Keyboard.PressAsync("u");                      // ... taken back
        await Assertions.Expect(page.Locator("#prompt")).ToHaveTextAsync("《靜夜思》的作者是誰？");
        await page.Locator(".answer").Nth(1).ClickAsync();        // 李白 by mouse
        await Assertions.Expect(page.Locator("#prompt")).ToHaveTextAsync("請接下句：白日依山盡，");
        await page.Keyboard.PressAsync("b");                      // both bad
        await Assertions.Expect(page.Locator("#finished")).ToBeVisibleAsync();
        await Assertions.Expect(page.Locator("#progress")).ToHaveTextAsync("3 / 3");
        Assert.Empty(await page.Locator("#error").TextContentAsync() ?? "");

        // What a crash would leave: the log and the comparisons, read straight from disk while the server still runs.
        var onDisk = new LabelingSession(items, log);
        Assert.Equal([("a", "0"), ("b", "1"), ("c", "bad")], onDisk.Judgments);
        var pairs = ChatData.ReadPreferences(pairsPath).ToList();
        Assert.Equal(3, pairs.Count);
        Assert.Equal(["item-a", "item-a", "item-b"], pairs.Select(p => p.Group));
    }

    [Fact]
    public async Task ARestartRebuildsTheComparisonsFromTheLogAndRemovesADeadWritersTemporaryFiles()
    {
        using var dir = new TempDirectory();
        var items = LabelingSession.ReadItems(WriteItems(dir));
        string log = dir.File("judgments.jsonl"), pairsPath = dir.File("pairs.jsonl");
        var session = new LabelingSession(items, log);
        session.Judge("a", "0");
        session.Judge("b", "1");
        // kill -9 after the log line and before the comparisons: the file still holds the first judgment's pairs only,
        // and the dead process's temporary file is left beside it.
        ChatData.WritePreferences(pairsPath, session.Pairs().Take(2));
        string leftover = dir.File($".pairs.jsonl.{4_100_000}.{Guid.NewGuid():N}.tmp");
        File.WriteAllText(leftover, new string('x', 1000));
        string someoneElses = dir.File($".pairs.jsonl.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");   // a live writer's: not ours to delete
        File.WriteAllText(someoneElses, "");

        await using (var server = new LabelingServer(new LabelingSession(items, log), pairsPath)) { }
        Assert.Equal(3, ChatData.ReadPreferences(pairsPath).Count());
        Assert.False(File.Exists(leftover));
        Assert.True(File.Exists(someoneElses));
    }

    [Fact]
    public void AWholeLastJudgmentWithoutItsNewlineIsKeptAndOnlyATornTailIsCut()
    {
        using var dir = new TempDirectory();
        var items = LabelingSession.ReadItems(WriteItems(dir));
        string log = dir.File("judgments.jsonl");
        File.WriteAllText(log, "{\"item\":\"a\",\"choice\":\"0\"}\n{\"item\":\"b\",\"choice\":\"1\"}");
        var session = new LabelingSession(items, log);
        Assert.Equal([("a", "0"), ("b", "1")], session.Judgments);
        Assert.Equal("{\"item\":\"a\",\"choice\":\"0\"}\n{\"item\":\"b\",\"choice\":\"1\"}\n", File.ReadAllText(log));
        session.Judge("c", "tie");
        Assert.Equal([("a", "0"), ("b", "1"), ("c", "tie")], new LabelingSession(items, log).Judgments);
    }

    [Theory]
    [InlineData("{\"item\":\"a\",\"choice\":\"99\"}", ":2: Choice '99' for item 'a': expected 0–2, tie or bad.")]
    [InlineData("{\"item\":\"a\",\"choice\":\"-7\"}", ":2: Choice '-7'")]
    [InlineData("{\"item\":\"a\",\"choice\":\"banana\"}", ":2: Choice 'banana'")]
    [InlineData("{\"item\":\"a\",\"choice\":\"01\"}", ":2: Choice '01'")]
    [InlineData("{\"item\":\"b\",\"choice\":\"0\"}", ":2: item 'b' is judged a second time")]
    [InlineData("[1]", ":2: not a JSON object: [1]")]
    [InlineData("5", ":2: not a JSON object: 5")]
    [InlineData("{\"undo\":5}", ":2: \"undo\" must be an item id (a string), not number.")]
    [InlineData("{\"item\":\"a\",\"choice\":1}", ":2: expected a string field \"choice\".")]
    public void ADamagedLogIsRefusedAtStartWithItsFileAndLine(string line, string message)
    {
        using var dir = new TempDirectory();
        var items = LabelingSession.ReadItems(WriteItems(dir));
        string log = dir.File("judgments.jsonl");
        File.WriteAllText(log, "{\"item\":\"b\",\"choice\":\"1\"}\n" + line + "\n{\"item\":\"c\",\"choice\":\"0\"}\n");
        var error = Assert.Throws<InvalidDataException>(() => new LabelingSession(items, log));
        Assert.StartsWith(log + message, error.Message);
    }

    [Fact]
    public async Task BadRequestsGetJsonErrorsAndHostNamesAreCaseInsensitive()
    {
        using var dir = new TempDirectory();
        var items = LabelingSession.ReadItems(WriteItems(dir));
        await using var server = new LabelingServer(new LabelingSession(items, dir.File("j.jsonl")), dir.File("p.jsonl"));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address) };
        async Task<(int Status, string Error)> Post(string body, string? host = null)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/api/judge") { Content = new StringContent(body, System.Text.Encoding.UTF8, "application/json") };
            if (host is not null) request.Headers.Host = host;
            var reply = await http.SendAsync(request);
            string text = await reply.Content.ReadAsStringAsync();
            return ((int)reply.StatusCode, System.Text.Json.JsonDocument.Parse(text).RootElement.GetProperty("error").GetString()!);
        }
        foreach (string body in new[] { "{", "[1]", "{\"item\":5,\"choice\":\"0\"}", "{\"item\":\"a\"}", "{\"item\":\"a\",\"choice\":\"7\"}", "{\"item\":\"zz\",\"choice\":\"0\"}" })
        {
            var (status, error) = await Post(body);
            Assert.Equal(400, status);
            Assert.NotEmpty(error);
        }
        var accepted = await http.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/api/next") { Headers = { Host = "LOCALHOST:" + new Uri(server.Address).Port } });
        Assert.Equal(System.Net.HttpStatusCode.OK, accepted.StatusCode);
        var (misdirected, why) = await Post("{\"item\":\"a\",\"choice\":\"0\"}", "evil.example");
        Assert.Equal(421, misdirected);
        Assert.Contains("evil.example", why);
    }

    [Fact]
    public async Task TheComparisonsFileAlwaysEqualsWhatTheLogImpliesThroughCrashesAndDamage()
    {
        using var dir = new TempDirectory();
        var report = await GptSharp.Fuzzing.LabelingFuzzer.Run(dir.Path, rounds: 120, seed: 5);
        Assert.True(report.Violations.Count == 0, report.ToString());
        foreach (string outcome in new[] { "cut", "stale", "no-newline", "damaged", "repeated", "refused" })
            Assert.True(report.Outcomes.GetValueOrDefault(outcome) > 0, report.ToString());
    }
}
