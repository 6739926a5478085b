using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Serving;

namespace GptSharp.Bench;

/// <summary>
/// Whether one client's grammar slows the others: <c>grammar [rounds]</c> serves a <c>tiny-llama</c>-shaped model
/// (random weights, the gpt2 vocabulary of 50,257 tokens) and times a plain greedy 30-token request alone, then beside
/// 1 and 4 requests whose answer must follow a ~1 MB enum schema (20,000 values), and prints the medians.
/// </summary>
static class GrammarBench
{
    public static void Run(string[] args)
    {
        int at = Array.IndexOf(args, "grammar");
        int rounds = at >= 0 && args.Length > at + 1 ? int.Parse(args[at + 1]) : 5;
        string dir = Path.Combine(Path.GetTempPath(), "gptsharp-grammar-bench-" + Guid.NewGuid().ToString("N"));
        try
        {
            TorchSharp.torch.manual_seed(0);
            var tokenizer = Tokenization.GptTokenizer.Load("gpt2");
            using (var model = new Gpt(GptConfig.Preset("tiny-llama", tokenizer.VocabSize)))
                Checkpoint.Save(Path.Combine(dir, "run"), model, null, new TrainingState(0, "0:0", "", "gpt2"));
            using var served = ServedModel.Load($"m={Path.Combine(dir, "run")}");
            Measure(rounds).GetAwaiter().GetResult();

            async Task Measure(int count)
            {
                await using var server = new GptServer([served], new ServerOptions(Port: 0, MaxConcurrent: 8, MaxBodyBytes: 4 << 20));
                await server.StartAsync();
                using var http = new HttpClient { BaseAddress = new Uri(server.Address), Timeout = TimeSpan.FromMinutes(10) };
                var values = new JsonArray([.. Enumerable.Range(0, 20_000).Select(i => (JsonNode)$"value-{i:D5}-{new string('x', 30)}")]);
                var schema = new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["pick"] = new JsonObject { ["enum"] = values } }, ["required"] = new JsonArray("pick") };
                string Body(bool heavy) => new JsonObject
                {
                    ["model"] = "m", ["max_tokens"] = heavy ? 100 : 30, ["temperature"] = 0,
                    ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hello" }),
                    ["response_format"] = heavy ? new JsonObject { ["type"] = "json_schema", ["json_schema"] = new JsonObject { ["name"] = "pick", ["schema"] = schema.DeepClone() } } : null,
                }.ToJsonString();
                string plain = Body(false), heavyBody = Body(true);
                Console.WriteLine($"\n## One client's grammar and the others' latency ({count} rounds; heavy body {Encoding.UTF8.GetByteCount(heavyBody) / 1e6:F2} MB, 20,000-value enum)");
                async Task<double> Time(string body)
                {
                    var clock = Stopwatch.StartNew();
                    using var reply = await http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
                    string text = await reply.Content.ReadAsStringAsync();
                    if (!reply.IsSuccessStatusCode) throw new InvalidOperationException($"status {(int)reply.StatusCode}: {text}");
                    return clock.Elapsed.TotalSeconds;
                }
                await Time(plain);
                foreach (int heavyCount in new[] { 0, 1, 4 })
                {
                    var plainTimes = new List<double>();
                    var heavyTimes = new List<double>();
                    for (int r = 0; r < count; r++)
                    {
                        var heavy = Enumerable.Range(0, heavyCount).Select(_ => Time(heavyBody)).ToList();
                        if (heavyCount > 0) await Task.Delay(10);   // the heavy requests are sent first
                        plainTimes.Add(await Time(plain));
                        heavyTimes.AddRange(await Task.WhenAll(heavy));
                    }
                    Console.WriteLine($"plain 30-token request beside {heavyCount} grammar request(s): median {Median(plainTimes):F3} s (min {plainTimes.Min():F3}, max {plainTimes.Max():F3})" +
                                      (heavyCount > 0 ? $"; the grammar requests took median {Median(heavyTimes):F2} s" : ""));
                }
            }
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted[sorted.Count / 2];
    }
}
