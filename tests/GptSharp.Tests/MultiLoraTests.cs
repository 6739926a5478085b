using System.Net;
using System.Text;
using System.Text.Json;
using GptSharp.Alignment;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Serving;
using GptSharp.Tokenization;
using GptSharp.Training;

namespace GptSharp.Tests;

/// <summary>
/// Many LoRA adapters on one base: each served as <c>base:name</c> with the base's weights held once, rows of different
/// adapters decoded in one batch, each answering exactly as its adapter merged into the base and served alone; adapters
/// loaded and unloaded at run time with the admin key; mismatched and clashing adapters refused.
/// </summary>
public class MultiLoraTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    static IReadOnlyList<ChatMessage> Ask(string question, string answer) => [new(ChatRoles.User, question), new(ChatRoles.Assistant, answer)];
    static StringContent Json(object body) => new(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");

    /// <summary>A base and two LoRA runs on it that learnt different answers.</summary>
    (string Base, string A, string B) Runs(TempDirectory dir)
    {
        fixture.SaveInitialRun(dir.File("base"), context: 48);
        var training = new TrainingConfig { Steps = 25, BatchSize = 8, LearningRate = 1e-2, WarmupSteps = 2, EvalEvery = 1000, CheckpointEvery = 1000 };
        foreach (var (run, answer) in new[] { ("a", "李白。"), ("b", "杜甫。") })
            SftRun.Execute(dir.File("base"), [.. Enumerable.Repeat(Ask("誰？", answer), 16)], [Ask("誰？", answer)], training,
                new RunOptions(dir.File(run)) { Resume = false, Lora = new LoraConfig(Rank: 4, Alpha: 8) });
        return (dir.File("base"), dir.File("a"), dir.File("b"));
    }

    [Fact]
    public async Task AdaptersShareOneBatchAndAnswerTokenForTokenAsTheirMergedModels()
    {
        using var dir = new TempDirectory();
        var (baseRun, a, b) = Runs(dir);
        using var served = ServedModel.Load($"base={baseRun}", engine: "cpu");
        served.LoadAdapter("a", a);
        served.LoadAdapter("b", b);
        Assert.Equal(["a", "b"], served.Adapters.Keys.Order());

        // What each answers alone: the base, and each adapter folded into its weights (a LoRA run loads merged).
        using var mergedA = ServedModel.Load(a, engine: "cpu");
        using var mergedB = ServedModel.Load(b, engine: "cpu");
        string Greedy(ServedModel model, string question)
        {
            var prompt = model.Template.RenderPrompt([new ChatMessage(ChatRoles.User, question)]);
            return model.Text(model.Generate(prompt, new SamplingOptions(Temperature: 0, MaxNewTokens: 8, StopTokens: [model.Tokenizer.EndId, model.Tokenizer.BosId]), null, default), null);
        }
        string[] questions = ["誰？", "床前明月光"];
        var expected = new Dictionary<string, string>();
        foreach (string q in questions)
        {
            expected[$"base|{q}"] = Greedy(served, q);
            expected[$"base:a|{q}"] = Greedy(mergedA, q);
            expected[$"base:b|{q}"] = Greedy(mergedB, q);
        }
        Assert.NotEqual(expected["base:a|誰？"], expected["base:b|誰？"]);   // the adapters learnt different answers

        await using var server = new GptServer([served], new ServerOptions(Port: 0, MaxConcurrent: 6));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address) };
        var requests = (from name in new[] { "base", "base:a", "base:b" } from q in questions select (name, q)).ToList();
        var replies = await Task.WhenAll(requests.Select(async r =>
        {
            var reply = await http.PostAsync("/v1/chat/completions", Json(new { model = r.name, temperature = 0, max_tokens = 8, messages = new[] { new { role = "user", content = r.q } } }));
            string text = await reply.Content.ReadAsStringAsync();
            Assert.True(reply.IsSuccessStatusCode, text);
            using var doc = JsonDocument.Parse(text);
            Assert.Equal(r.name, doc.RootElement.GetProperty("model").GetString());
            return doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();
        }));
        for (int i = 0; i < requests.Count; i++) Assert.Equal(expected[$"{requests[i].name}|{requests[i].q}"], replies[i]);
        Assert.True(((ContinuousBatcher)server.Scheduler("base")).LargestBatch >= 2, "the requests of different adapters were never decoded in one batch");
        var models = await http.GetStringAsync("/v1/models");
        Assert.Contains("\"base:a\"", models);
        Assert.Contains("\"parent\":\"base\"", models);
    }

    [Fact]
    public async Task AdaptersLoadAndUnloadWithTheAdminKeyAndBadOnesAreRefusedByName()
    {
        using var dir = new TempDirectory();
        var (baseRun, a, _) = Runs(dir);
        // An adapter trained on another base: a wider model over the same tokenizer.
        fixture.SaveRandomRun(dir.File("other"), GptConfig.Gpt2(fixture.Tokenizer.VocabSize, 48, layers: 2, heads: 2, width: 64));
        SftRun.Execute(dir.File("other"), [.. Enumerable.Repeat(Ask("誰？", "李白。"), 8)], [Ask("誰？", "李白。")],
            new TrainingConfig { Steps = 2, BatchSize = 8, WarmupSteps = 1, EvalEvery = 1000, CheckpointEvery = 1000 },
            new RunOptions(dir.File("other-lora")) { Resume = false, Lora = new LoraConfig(Rank: 4) });

        using var served = ServedModel.Load($"base={baseRun}", engine: "cpu");
        await using var server = new GptServer([served], new ServerOptions(Port: 0, AdminKey: "admin"));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address) };
        async Task<(HttpStatusCode Status, JsonElement Body)> Send(HttpMethod method, string path, object? body, string? key = "admin")
        {
            var request = new HttpRequestMessage(method, path) { Content = body is null ? null : Json(body) };
            if (key is not null) request.Headers.Authorization = new("Bearer", key);
            var reply = await http.SendAsync(request);
            return (reply.StatusCode, JsonDocument.Parse(await reply.Content.ReadAsStringAsync()).RootElement.Clone());
        }

        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(HttpMethod.Post, "/v1/adapters", new { model = "base", name = "a", path = a }, key: "wrong")).Status);
        var loaded = await Send(HttpMethod.Post, "/v1/adapters", new { model = "base", name = "a", path = a });
        Assert.Equal(HttpStatusCode.Created, loaded.Status);
        Assert.Equal("base:a", loaded.Body.GetProperty("id").GetString());
        var ask = new { model = "base:a", max_tokens = 4, messages = new[] { new { role = "user", content = "誰？" } } };
        Assert.True((await http.PostAsync("/v1/chat/completions", Json(ask))).IsSuccessStatusCode);

        var clash = await Send(HttpMethod.Post, "/v1/adapters", new { model = "base", name = "a", path = a });
        Assert.Equal(HttpStatusCode.Conflict, clash.Status);
        var other = await Send(HttpMethod.Post, "/v1/adapters", new { model = "base", name = "other", path = dir.File("other-lora") });
        Assert.Equal(HttpStatusCode.BadRequest, other.Status);
        Assert.Contains("another base", other.Body.GetProperty("error").GetProperty("message").GetString());
        Assert.Contains("[", other.Body.GetProperty("error").GetProperty("message").GetString());   // the shapes are named
        var missing = await Send(HttpMethod.Post, "/v1/adapters", new { model = "base", name = "gone", path = dir.File("nothing") });
        Assert.Equal(HttpStatusCode.BadRequest, missing.Status);
        var notLora = await Send(HttpMethod.Post, "/v1/adapters", new { model = "base", name = "plain", path = baseRun });
        Assert.Equal(HttpStatusCode.BadRequest, notLora.Status);
        Assert.Contains("no LoRA tensors", notLora.Body.GetProperty("error").GetProperty("message").GetString());

        Assert.True((await Send(HttpMethod.Delete, "/v1/adapters/base:a", null)).Body.GetProperty("deleted").GetBoolean());
        var gone = await http.PostAsync("/v1/chat/completions", Json(ask));
        Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await Send(HttpMethod.Delete, "/v1/adapters/base:a", null)).Status);
        // The base served throughout.
        Assert.True((await http.PostAsync("/v1/chat/completions", Json(new { model = "base", max_tokens = 2, messages = new[] { new { role = "user", content = "誰？" } } }))).IsSuccessStatusCode);

        // Without --admin-key, adapters are fixed at start.
        await using var locked = new GptServer([served], new ServerOptions(Port: 0));
        await locked.StartAsync();
        using var lockedHttp = new HttpClient { BaseAddress = new Uri(locked.Address) };
        Assert.Equal(HttpStatusCode.Forbidden, (await lockedHttp.PostAsync("/v1/adapters", Json(new { model = "base", name = "a", path = a }))).StatusCode);
    }
}
