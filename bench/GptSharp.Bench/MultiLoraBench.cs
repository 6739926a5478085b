using System.Diagnostics;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Serving;
using GptSharp.Tokenization;
using static TorchSharp.torch;

namespace GptSharp.Bench;

/// <summary>
/// <c>multi-lora</c>: one base with 1, 4 and 8 LoRA adapters (rank 8 on every product) served as <c>base:name</c>, beside
/// the same adapters merged into 1, 4 and 8 separate models; under 8 concurrent greedy requests that cycle through the
/// adapters (64 tokens each), the process memory the loaded models add (working set after a full GC, before and after
/// loading) and the decode throughput. The model has random weights (GPT-2 shaped, 8 layers, width 512, the gpt2
/// vocabulary size), so no trained run is needed.
/// </summary>
static class MultiLoraBench
{
    const int Concurrent = 8, Tokens = 64;

    public static void Run()
    {
        string dir = Path.Combine(Path.GetTempPath(), "gptsharp-lora-bench-" + Guid.NewGuid().ToString("N"));
        try
        {
            var tokenizer = GptTokenizer.Load("gpt2");
            var config = GptConfig.Gpt2(tokenizer.VocabSize, 256, 8, 8, 512);
            manual_seed(0);
            using (var model = new Gpt(config))
            {
                Checkpoint.Save(Path.Combine(dir, "base"), model, null, new TrainingState(0, "0:0", "", "gpt2"));
                long adapterValues = Lora.Attach(model, new LoraConfig(Rank: 8));
                for (int a = 0; a < 8; a++)
                {
                    using (no_grad())
                        foreach (var (name, p) in model.named_parameters().Where(p => p.name.EndsWith("lora_B")).ToList()) p.copy_(randn_like(p) * 0.02);
                    Checkpoint.Save(Path.Combine(dir, $"a{a}"), model, null, new TrainingState(0, "0:0", "", "gpt2"));
                }
                Console.WriteLine($"# base {config.Layers} layers × width {config.Width}, vocab {config.VocabSize}: {model.parameters().Where(p => !p.requires_grad).Sum(p => p.numel()) / 1e6:F1}M weights; " +
                                  $"an adapter {adapterValues / 1e3:F0}K values (rank 8 on every product)");
            }
            Console.WriteLine($"\n## {Concurrent} concurrent greedy requests of {Tokens} tokens, cycling through the adapters");
            Console.WriteLine("| adapters | served as | memory added (MB) | tok/s |");
            Console.WriteLine("|---|---|---|---|");
            // Each configuration in a fresh process, so memory one freed is not counted against the next.
            foreach (int count in new[] { 1, 4, 8 })
                foreach (bool merged in count % 2 == 0 ? new[] { false, true } : new[] { true, false })
                {
                    var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true };
                    foreach (string arg in new[] { "multi-lora-one", dir, count.ToString(), merged.ToString() }) start.ArgumentList.Add(arg);
                    using var child = Process.Start(start)!;
                    string line = child.StandardOutput.ReadToEnd().Split('\n').LastOrDefault(l => l.StartsWith('|')) ?? "(failed)";
                    child.WaitForExit();
                    Console.WriteLine(line);
                }
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
    }

    /// <summary>One configuration, in its own process: <c>multi-lora-one DIR COUNT MERGED</c> prints its table row.</summary>
    public static void RunOne(string[] args)
    {
        string dir = args[1];
        int count = int.Parse(args[2]);
        bool merged = bool.Parse(args[3]);
        long before = WorkingSet();
        var models = merged
            ? Enumerable.Range(0, count).Select(a => ServedModel.Load($"m{a}={Path.Combine(dir, $"a{a}")}", engine: "cpu")).ToList()
            : [ServedModel.Load($"base={Path.Combine(dir, "base")}", engine: "cpu")];
        if (!merged) for (int a = 0; a < count; a++) models[0].LoadAdapter($"a{a}", Path.Combine(dir, $"a{a}"));
        string[] names = merged ? [.. models.Select(m => m.Name)] : [.. Enumerable.Range(0, count).Select(a => $"base:a{a}")];
        var schedulers = models.ToDictionary(m => m.Name, m => ContinuousBatcher.For(m.Model, m.Decoder, new BatcherOptions(Slots: Concurrent)));
        Serve(models, schedulers, names, names.Length).GetAwaiter().GetResult();   // warm each once: packing and first use are not timed
        long added = WorkingSet() - before;
        var clock = Stopwatch.StartNew();
        int generated = Serve(models, schedulers, names, 3 * Concurrent).GetAwaiter().GetResult();
        Console.WriteLine($"| {count} | {(merged ? $"{count} merged model(s)" : "one base + adapters")} | {added / 1e6:F0} | {generated / clock.Elapsed.TotalSeconds:F0} |");
        foreach (var s in schedulers.Values) s.DisposeAsync().AsTask().GetAwaiter().GetResult();
        foreach (var m in models) m.Dispose();
    }

    /// <summary>Sends <paramref name="requests"/> greedy requests, <see cref="Concurrent"/> at a time, cycling through the names; the tokens generated.</summary>
    static async Task<int> Serve(List<ServedModel> models, Dictionary<string, ContinuousBatcher> schedulers, string[] names, int requests)
    {
        int generated = 0;
        var gate = new SemaphoreSlim(Concurrent);
        await Task.WhenAll(Enumerable.Range(0, requests).Select(async i =>
        {
            await gate.WaitAsync();
            try
            {
                string name = names[i % names.Length];
                int colon = name.IndexOf(':');
                var model = colon > 0 ? models[0] : models.Single(m => m.Name == name);
                var adapter = colon > 0 ? model.Adapters[name[(colon + 1)..]] : null;
                int[] prompt = model.Template.RenderPrompt([new ChatMessage(ChatRoles.User, $"Tell me about request {i}.")]);
                var row = new BatchRow(prompt, new SamplingOptions(Temperature: 0, MaxNewTokens: Tokens, StopTokens: []), Adapter: adapter);
                var result = await schedulers[model.Name].Enqueue(row);
                if (result.Error is { } error) throw new InvalidOperationException($"request {i} ({name}) failed: {error.Message}", error);
                Interlocked.Add(ref generated, result.Generation.Tokens.Length);
            }
            finally { gate.Release(); }
        }));
        return generated;
    }

    static long WorkingSet()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        using var process = Process.GetCurrentProcess();
        return process.WorkingSet64;
    }
}
