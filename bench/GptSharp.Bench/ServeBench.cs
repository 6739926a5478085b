using GptSharp.Runs;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using GptSharp.Models;
using GptSharp.Serving;
using GptSharp.Tokenization;

namespace GptSharp.Bench;

/// <summary>
/// N concurrent streaming clients against the server (a `tiny`-shaped model with random weights and the gpt2
/// tokenizer, so no trained run is needed): aggregate tokens/s, p50/p99 time to first token and total latency, failures.
/// </summary>
static class ServeBench
{
    public static void Run()
    {
        string dir = Path.Combine(Path.GetTempPath(), "gptsharp-serve-bench-" + Guid.NewGuid().ToString("N"));
        try
        {
            TorchSharp.torch.manual_seed(0);
            var tokenizer = GptTokenizer.Load("gpt2");
            using (var model = new Gpt(GptConfig.Preset("tiny", tokenizer.VocabSize)))
                Checkpoint.Save(dir, model, null, new TrainingState(0, "0:0", "", "gpt2"));
            using var served = ServedModel.Load($"tiny={dir}");
            Console.WriteLine("\n## Serving: concurrent streaming clients (tiny, 64 new tokens each)");
            Console.WriteLine("| clients | batch size | requests | failed | aggregate tok/s | first token p50 / p99 ms | total p50 / p99 ms |");
            Console.WriteLine("|---|---|---|---|---|---|---|");
            foreach (var (clients, batch) in new[] { (1, 1), (4, 1), (4, 4), (16, 1), (16, 8), (16, 16) })
                Measure(served, clients, batch, requests: Math.Max(8, clients * 2)).GetAwaiter().GetResult();
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    static async Task Measure(ServedModel served, int clients, int batch, int requests)
    {
        await using var server = new GptServer([served], new ServerOptions(Port: 0, MaxConcurrent: batch));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address), Timeout = TimeSpan.FromMinutes(5) };
        var firstToken = new List<double>();
        var total = new List<double>();
        int failed = 0, tokens = 0, next = 0;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, clients).Select(async _ =>
        {
            while (Interlocked.Increment(ref next) <= requests)
            {
                var start = Stopwatch.StartNew();
                double? first = null;
                try
                {
                    var body = JsonSerializer.Serialize(new { model = "tiny", messages = new[] { new { role = "user", content = "Tell me a story." } }, stream = true, max_tokens = 64, temperature = 1.0, stream_options = new { include_usage = true } });
                    using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
                    using var reply = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                    reply.EnsureSuccessStatusCode();
                    using var reader = new StreamReader(await reply.Content.ReadAsStreamAsync());
                    int count = 0;
                    while (await reader.ReadLineAsync() is { } line)
                    {
                        if (!line.StartsWith("data: {", StringComparison.Ordinal)) continue;
                        using var chunk = JsonDocument.Parse(line[6..]);
                        if (chunk.RootElement.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                            count = usage.GetProperty("completion_tokens").GetInt32();
                        else if (first is null && chunk.RootElement.GetProperty("choices")[0].GetProperty("delta").TryGetProperty("content", out var c) && c.GetString()!.Length > 0)
                            first = start.Elapsed.TotalMilliseconds;
                    }
                    lock (total)
                    {
                        tokens += count;
                        total.Add(start.Elapsed.TotalMilliseconds);
                        if (first is double f) firstToken.Add(f);
                    }
                }
                catch (Exception)
                {
                    Interlocked.Increment(ref failed);
                }
            }
        }));
        double seconds = watch.Elapsed.TotalSeconds;
        static double P(List<double> values, double q) => values.Count == 0 ? double.NaN : values.Order().ElementAt((int)Math.Min(values.Count - 1, Math.Ceiling(q * values.Count) - 1));
        Console.WriteLine($"| {clients} | {batch} | {requests} | {failed} | {tokens / seconds:N0} | {P(firstToken, 0.5):F0} / {P(firstToken, 0.99):F0} | {P(total, 0.5):F0} / {P(total, 0.99):F0} |");
    }
}
