using GptSharp.Serving;
using Microsoft.Playwright;

namespace GptSharp.Tests;

/// <summary>Drives the web chat in headless Chromium (Debian's /usr/bin/chromium; .ci/run installs it).</summary>
public class WebChatTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    const string Chromium = "/usr/bin/chromium";

    [Fact]
    public async Task TypeSendSeeAStreamedAnswerStopAndStartANewChat()
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: install Debian's chromium package (apt-get install chromium), as .ci/run does.");
        using var dir = new TempDirectory();
        using var model = ServedModel.Load(fixture.SaveSlowRun(dir.File("poet")));
        await using var server = new GptServer([model], new ServerOptions(Port: 0));
        await server.StartAsync();

        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = Chromium, Headless = true, Args = ["--no-sandbox"] });
        var page = await browser.NewPageAsync();
        await page.GotoAsync(server.Address);
        await Assertions.Expect(page.Locator("#model option")).ToHaveTextAsync("poet");

        // Send, and see the answer arrive in pieces.
        await page.FillAsync("#max_tokens", "12");
        await page.FillAsync("#input", "床前明月光");
        await page.PressAsync("#input", "Enter");
        await Assertions.Expect(page.Locator(".msg.user")).ToHaveTextAsync("床前明月光");
        var answer = page.Locator(".msg.assistant").Last;
        await Assertions.Expect(page.Locator("#send")).ToBeEnabledAsync(new() { Timeout = 30_000 });
        Assert.NotEmpty(await answer.TextContentAsync() ?? "");

        // A long answer, stopped while it streams: the page is ready again and the server stopped generating. Greedy,
        // so the premise holds every time: this model's greedy answer runs the full 1,000 tokens without a stop token.
        var prompt = model.Template.RenderPrompt([new GptSharp.Tokenization.ChatMessage("user", "寫一首詩")]);
        var full = model.Generate(prompt, new GptSharp.Inference.SamplingOptions(Temperature: 0, MaxNewTokens: 1000,
            StopTokens: [model.Tokenizer.EndId, model.Tokenizer.BosId]), null, default);
        Assert.Equal(1000, full.Tokens.Length);
        await page.FillAsync("#temperature", "0");
        await page.FillAsync("#max_tokens", "1000");
        await page.FillAsync("#input", "寫一首詩");
        await page.ClickAsync("#send");
        await Assertions.Expect(page.Locator("#stop")).ToBeEnabledAsync();
        await Assertions.Expect(page.Locator(".msg.assistant").Last).Not.ToBeEmptyAsync(new() { Timeout = 30_000 });
        string partial = await page.Locator(".msg.assistant").Last.TextContentAsync() ?? "";
        // Clicked from script: the button moves while the answer grows, and Playwright's wait for a stable element can
        // outlast the whole generation on a busy machine.
        bool stoppedWhileStreaming = await page.EvaluateAsync<bool>("() => { const b = document.getElementById('stop'); if (b.disabled) return false; b.click(); return true; }");
        Assert.True(stoppedWhileStreaming, "the answer finished before Stop could be clicked");
        await Assertions.Expect(page.Locator("#send")).ToBeEnabledAsync(new() { Timeout = 5_000 });
        for (int i = 0; i < 50 && server.CancelledGenerations == 0; i++) await Task.Delay(100);
        Assert.Equal(1, server.CancelledGenerations);
        Assert.StartsWith(partial, await page.Locator(".msg.assistant").Last.TextContentAsync() ?? "");
        Assert.Empty(await page.Locator("#error").TextContentAsync() ?? "");

        string screenshots = Path.Combine(AppContext.BaseDirectory, "../../../../../artifacts/test-results");
        Directory.CreateDirectory(screenshots);
        await page.ScreenshotAsync(new() { Path = Path.Combine(screenshots, "webchat.png"), FullPage = true });

        // New chat empties the conversation.
        await page.ClickAsync("#new");
        await Assertions.Expect(page.Locator(".msg")).ToHaveCountAsync(0);

        // A server error is shown, not swallowed: an unknown model.
        await page.EvaluateAsync("() => { const o = document.createElement('option'); o.value = o.textContent = 'missing'; document.getElementById('model').appendChild(o); document.getElementById('model').value = 'missing'; }");
        await page.FillAsync("#input", "hi");
        await page.PressAsync("#input", "Enter");
        await Assertions.Expect(page.Locator("#error")).ToContainTextAsync("does not exist");
    }
}
