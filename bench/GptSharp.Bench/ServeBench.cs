using GptSharp.Runs;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Serving;
using GptSharp.Tokenization;
using static TorchSharp.torch;

namespace GptSharp.Bench;

/// <summary>
/// The server under a mixed load: requests arrive as a Poisson process, at most C in flight (C = 2, 4, 8), with prompts
/// of 8–300 words and answers of 16–128 tokens; the continuous batcher and the static batcher it replaced, each on
/// libtorch and on the CPU engine, run the same schedule one after the other at each level. Then a chat's second turn with and without the prefix cache. The model
/// has random weights (GPT-2 shaped, 6 layers, width 256, context 512, gpt2 tokenizer), so no trained run is needed.
/// </summary>
static class ServeBench
{
    const int Slots = 4, Requests = 32;
    const double ArrivalsPerSecond = 8;

    sealed record Job(double ArriveAt, string Prompt, int MaxTokens);
    /// <param name="QueueMs">The server's timings: from arrival to its prompt's first chunk.</param>
    /// <param name="PromptMs">Reading its own prompt (its chunks' passes, not the others' work between them).</param>
    sealed record Outcome(double FirstTokenMs, double LatencyMs, int Tokens, double QueueMs, double PromptMs);

    public static void Run(string[] args)
    {
        int[] chunks = args.Length > 1 ? [.. args[1].Split(',').Select(int.Parse)] : [];
        string dir = Path.Combine(Path.GetTempPath(), "gptsharp-serve-bench-" + Guid.NewGuid().ToString("N"));
        try
        {
            manual_seed(0);
            var tokenizer = GptTokenizer.Load("gpt2");
            var config = GptConfig.Gpt2(tokenizer.VocabSize, 512, 6, 8, 256);
            using (var model = new Gpt(config))
                Checkpoint.Save(dir, model, null, new TrainingState(0, "0:0", "", "gpt2"));
            using var served = ServedModel.Load($"bench={dir}");   // the default engine: the CPU engine here
            using var servedTorch = ServedModel.Load($"bench={dir}", engine: GptSharp.Inference.Cpu.DecodeEngine.Torch);
            ReportStepCost(served);

            Console.WriteLine($"\n## Serving under a mixed load ({Requests} requests, Poisson arrivals at {ArrivalsPerSecond}/s, {Slots} slots, streamed)");
            Console.WriteLine("| in flight | engine | failed | tok/s | first token p50 / p95 ms | latency p50 / p95 ms | first token p95: queued / own prompt ms |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|");
            var runs = new[] { served, servedTorch };
            foreach (int concurrency in new[] { 2, 4, 8 })
            {
                var jobs = Schedule(seed: concurrency);
                // Rotate which goes first, so none always runs on a warmer machine.
                foreach (var model in runs.Skip(concurrency % runs.Length).Concat(runs.Take(concurrency % runs.Length)))
                    Report(concurrency, model.Decoder.Engine is null ? "libtorch" : "CPU F32", Measure(model, prefixCache: true, concurrency, jobs).GetAwaiter().GetResult());
            }
            if (chunks.Length > 0)
            {
                Console.WriteLine($"\n## The CPU engine by prefill chunk (prompt tokens read between two decode steps), the same schedules, sizes interleaved");
                Console.WriteLine("| in flight | chunk | failed | tok/s | first token p50 / p95 ms | latency p50 / p95 ms | first token p95: queued / own prompt ms |");
                Console.WriteLine("|---|---|---|---|---|---|---|");
                foreach (int concurrency in new[] { 4, 8 })
                    foreach (int chunk in concurrency == 4 ? chunks : [.. chunks.Reverse()])
                        Report(concurrency, chunk.ToString(), Measure(served, prefixCache: true, concurrency, Schedule(seed: concurrency), chunk).GetAwaiter().GetResult());
            }

            Console.WriteLine("\n## A chat's second turn (a 400-word system prompt, a 32-token first answer), 5 pairs interleaved");
            Console.WriteLine("| prefix cache | second-turn first token p50 ms | cached prompt tokens |");
            Console.WriteLine("|---|---|---|");
            var turns = new Dictionary<bool, List<(double Ms, int Cached)>> { [true] = [], [false] = [] };
            for (int pair = 0; pair < 5; pair++)
                foreach (bool prefix in pair % 2 == 0 ? new[] { true, false } : new[] { false, true })
                    turns[prefix].Add(SecondTurn(served, prefix, pair).GetAwaiter().GetResult());
            foreach (bool prefix in new[] { false, true })
                Console.WriteLine($"| {(prefix ? "on" : "off")} | {Percentile([.. turns[prefix].Select(t => t.Ms)], 0.5):F0} | {turns[prefix][0].Cached} |");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    static readonly string[] Words = ["the", "moon", "river", "mountain", "poem", "night", "light", "autumn", "wind", "song", "bright", "old", "home"];

    static string Text(Random random, int words) => string.Join(' ', Enumerable.Range(0, words).Select(_ => Words[random.Next(Words.Length)]));

    static List<Job> Schedule(int seed)
    {
        var random = new Random(seed);
        double at = 0;
        return [.. Enumerable.Range(0, Requests).Select(_ =>
        {
            at += -Math.Log(1 - random.NextDouble()) / ArrivalsPerSecond * 1000;
            return new Job(at, Text(random, random.Next(8, 301)), random.Next(16, 129));
        })];
    }

    /// <summary>What the target is measured against: one prefill of the longest prompt plus one decode step of a full batch.</summary>
    static void ReportStepCost(ServedModel served)
    {
        var model = served.Model;
        using var noGrad = no_grad();
        double Time(Action action)
        {
            action();
            var watch = Stopwatch.StartNew();
            for (int i = 0; i < 5; i++) action();
            return watch.Elapsed.TotalMilliseconds / 5;
        }
        double prefill = Time(() =>
        {
            using var scope = NewDisposeScope();
            using var cache = new KvCache(model.Config, 1);
            model.Forward(randint(0, 1000, [1, 300]), cache);
        });
        double step = Time(() =>
        {
            using var scope = NewDisposeScope();
            using var cache = new KvCache(model.Config, Slots);
            cache.Advance(200);
            model.Forward(randint(0, 1000, [Slots, 1]), cache);
        });
        Console.WriteLine($"\nlibtorch: one prefill of a 300-token prompt {prefill:F0} ms; one decode step of {Slots} rows at 200 cached tokens {step:F1} ms.");
        if (served.Decoder.Engine is not { } engine) return;
        var cpuCache = new GptSharp.Inference.Cpu.CpuKvCache(model.Config, Slots);
        var logits = new float[Slots * model.Config.VocabSize];
        int[] prompt = [.. Enumerable.Range(0, 300).Select(i => i * 37 % 1000)];
        double cpuPrefill = Time(() => engine.Forward(cpuCache, 300, prompt, new int[300], [.. Enumerable.Range(0, 300)], [299], logits));
        double cpuStep = Time(() => engine.Forward(cpuCache, Slots, [.. prompt[..Slots]], [.. Enumerable.Range(0, Slots)], [.. Enumerable.Repeat(200, Slots)],
            [.. Enumerable.Range(0, Slots)], logits));
        Console.WriteLine($"CPU engine F32: one prefill of a 300-token prompt {cpuPrefill:F0} ms; one decode step of {Slots} rows at 200 cached tokens {cpuStep:F1} ms.");
    }

    static async Task<List<Outcome?>> Measure(ServedModel served, bool prefixCache, int concurrency, List<Job> jobs, int prefillChunk = 256)
    {
        await using var server = new GptServer([served], new ServerOptions(Port: 0, MaxConcurrent: Slots, PrefixCache: prefixCache, PrefillChunk: prefillChunk));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address), Timeout = TimeSpan.FromMinutes(5) };
        using var inFlight = new SemaphoreSlim(concurrency);
        var clock = Stopwatch.StartNew();
        var tasks = jobs.Select(async job =>
        {
            double wait = job.ArriveAt - clock.Elapsed.TotalMilliseconds;
            if (wait > 0) await Task.Delay(TimeSpan.FromMilliseconds(wait));
            await inFlight.WaitAsync();
            try { return await Stream(http, [new { role = "user", content = job.Prompt }], job.MaxTokens); }
            catch (HttpRequestException) { return null; }
            finally { inFlight.Release(); }
        }).ToList();
        var outcomes = (await Task.WhenAll(tasks)).ToList();
        Elapsed = clock.Elapsed.TotalSeconds;
        return outcomes;
    }

    static double Elapsed;

    static async Task<Outcome> Stream(HttpClient http, object[] messages, int maxTokens)
    {
        var start = Stopwatch.StartNew();
        double? first = null;
        int tokens = 0;
        double queueMs = 0, promptMs = 0;
        var body = JsonSerializer.Serialize(new { model = "bench", messages, stream = true, max_tokens = maxTokens, temperature = 1.0, stream_options = new { include_usage = true } });
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using var reply = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        reply.EnsureSuccessStatusCode();
        using var reader = new StreamReader(await reply.Content.ReadAsStreamAsync());
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: {", StringComparison.Ordinal)) continue;
            using var chunk = JsonDocument.Parse(line[6..]);
            if (chunk.RootElement.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
            {
                tokens = usage.GetProperty("completion_tokens").GetInt32();
                if (chunk.RootElement.TryGetProperty("timings", out var timings) && timings.ValueKind == JsonValueKind.Object)
                    (queueMs, promptMs) = (timings.GetProperty("queue_ms").GetDouble(), timings.GetProperty("prompt_ms").GetDouble());
            }
            else if (first is null && chunk.RootElement.GetProperty("choices")[0].GetProperty("delta").TryGetProperty("content", out var c) && c.GetString()!.Length > 0)
                first = start.Elapsed.TotalMilliseconds;
        }
        return new Outcome(first ?? start.Elapsed.TotalMilliseconds, start.Elapsed.TotalMilliseconds, tokens, queueMs, promptMs);
    }

    static async Task<(double Ms, int Cached)> SecondTurn(ServedModel served, bool prefixCache, int seed)
    {
        await using var server = new GptServer([served], new ServerOptions(Port: 0, MaxConcurrent: Slots, PrefixCache: prefixCache));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address) };
        var random = new Random(seed);
        string system = Text(random, 400), question = Text(random, 12);
        var first = JsonSerializer.Serialize(new { model = "bench", messages = new[] { new { role = "system", content = system }, new { role = "user", content = question } }, max_tokens = 32, temperature = 0 });
        using var firstReply = await http.PostAsync("/v1/chat/completions", new StringContent(first, Encoding.UTF8, "application/json"));
        using var answer = JsonDocument.Parse(await firstReply.Content.ReadAsStringAsync());
        string said = answer.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!;
        var second = await Stream(http, [new { role = "system", content = system }, new { role = "user", content = question },
            new { role = "assistant", content = said }, new { role = "user", content = Text(random, 10) }], 8);
        var batcher = (ContinuousBatcher)server.Scheduler("bench");
        return (second.FirstTokenMs, (int)batcher.CachedPromptTokens);
    }

    static void Report(int concurrency, string engine, List<Outcome?> outcomes)
    {
        var done = outcomes.OfType<Outcome>().ToList();
        Console.WriteLine($"| {concurrency} | {engine} | {outcomes.Count - done.Count} | {done.Sum(o => o.Tokens) / Elapsed:N0} | " +
                          $"{Percentile([.. done.Select(o => o.FirstTokenMs)], 0.5):F0} / {Percentile([.. done.Select(o => o.FirstTokenMs)], 0.95):F0} | " +
                          $"{Percentile([.. done.Select(o => o.LatencyMs)], 0.5):F0} / {Percentile([.. done.Select(o => o.LatencyMs)], 0.95):F0} | " +
                          $"{Percentile([.. done.Select(o => o.QueueMs)], 0.95):F0} / {Percentile([.. done.Select(o => o.PromptMs)], 0.95):F0} |");
    }

    static double Percentile(double[] values, double q) =>
        values.Length == 0 ? double.NaN : values.Order().ElementAt((int)Math.Min(values.Length - 1, Math.Ceiling(q * values.Length) - 1));
}
