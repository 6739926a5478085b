using System.Diagnostics;
using GptSharp.Inference;
using GptSharp.Inference.Cpu;
using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Tokenization;
using static TorchSharp.torch;

namespace GptSharp.Bench;

/// <summary>
/// <c>speculative [rounds] [RUN]</c>: batch-1 tokens/s of the CPU engine decoding one token a pass against speculative
/// decoding with prompt lookup (4 drafted tokens a pass at first, doubling while all are taken), interleaved round by
/// round, prefill included (one prompt per generation, as <c>generate</c> runs it; a measurement repeats it for half a
/// second); medians and per-round ratios, and the share of drafts taken. Workloads: a
/// trained run (default the main job's pretrained model) continuing a poem it was shown twice (copying: drafts right)
/// and opening a new poem sampled at 0.8 (free text: drafts mostly wrong); and a random-weight GPT-2-124M-shaped model,
/// greedy (its output falls into a loop, which drafts find) and sampled at 1.0.
/// </summary>
static class SpeculativeBench
{
    public static void Run(string[] args)
    {
        int rounds = args.Length > 1 ? int.Parse(args[1]) : 3;
        string run = args.Length > 2 ? args[2] : "runs/speedrun/pretrain";
        Console.WriteLine($"\n## Speculative decoding (prompt lookup, 4 tokens a pass at first, doubling to 16 while all are taken) against one token a pass, batch 1, CPU engine; {rounds} interleaved rounds");
        Console.WriteLine("| model | workload | tokens | one a pass tok/s | speculative tok/s | ratio by round | drafts taken | passes per token |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");

        var (trained, state) = Checkpoint.LoadModel(run);
        using (trained)
        {
            var tokenizer = GptTokenizer.Load(state.Tokenizer);
            string poem = "床前明月光，疑是地上霜。举头望明月，低头思故乡。";
            using var engine = CpuModel.From(trained);
            int room = trained.Config.ContextLength;
            int[] copying = [tokenizer.BosId, .. tokenizer.Encode(poem + "\n" + poem + "\n床前")];
            int[] opening = [tokenizer.BosId, .. tokenizer.Encode("春")];
            Compare($"{Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(run + "/")))} ({trained.Config.Layers} layers, width {trained.Config.Width})", engine, rounds, [
                ("a poem shown twice, continued greedy", copying, new SamplingOptions { Temperature = 0, MaxNewTokens = room - copying.Length }),
                ("a new poem sampled at 0.8", opening, new SamplingOptions { Temperature = 0.8, TopK = 0, TopP = 1, MaxNewTokens = room - opening.Length, Seed = 7 }),
            ]);
        }

        var config = GptConfig.Preset("gpt2-124m", 50257);
        manual_seed(1);
        using var random = new Gpt(config);
        random.eval();
        using var gpt2 = CpuModel.From(random);
        int[] prompt = [.. Enumerable.Range(0, 64).Select(i => (i * 977 + 13) % config.VocabSize)];
        PassCost(gpt2, rounds);
        Compare("random-weight gpt2-124m", gpt2, rounds, [
            ("greedy (falls into a loop)", prompt, new SamplingOptions { Temperature = 0, MaxNewTokens = 200 }),
            ("sampled at 1.0", prompt, new SamplingOptions { Temperature = 1, TopK = 0, TopP = 1, MaxNewTokens = 200, Seed = 7 }),
        ]);
    }

    /// <summary>What a checking pass costs against one token a pass: ms per forward pass feeding n positions after a
    /// 64-token context and taking every position's logits (median of rounds × 8 passes).</summary>
    static void PassCost(CpuModel engine, int rounds)
    {
        int vocab = engine.Config.VocabSize;
        var cache = engine.CreateCache(1);
        int[] context = [.. Enumerable.Range(0, 64).Select(i => (i * 977 + 13) % vocab)];
        var logits = new float[17 * vocab];
        engine.Forward(cache, 64, context, new int[64], [.. Enumerable.Range(0, 64)], [63], logits);
        int[] counts = [1, 2, 3, 5, 9, 17];
        var ms = counts.ToDictionary(n => n, _ => new List<double>());
        for (int round = 0; round < rounds * 8; round++)
            foreach (int n in counts)
            {
                long start = Stopwatch.GetTimestamp();
                engine.Forward(cache, n, context[..n], new int[n], [.. Enumerable.Range(64, n)], [.. Enumerable.Range(0, n)], logits);
                ms[n].Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
            }
        double one = Stats.Median(ms[1]);
        Console.WriteLine($"\nA pass's cost by positions fed ({engine.Config.Layers} layers, width {engine.Config.Width}, vocab {vocab}; every position's logits): " +
                          string.Join(", ", counts.Select(n => $"{n}: {Stats.Median(ms[n]):F1} ms ({Stats.Median(ms[n]) / one:F2}×)")) + "\n");
    }

    static void Compare(string model, CpuModel engine, int rounds, (string Name, int[] Prompt, SamplingOptions Options)[] workloads)
    {
        var decoder = new TokenDecoder(engine);
        foreach (var (name, prompt, options) in workloads)
        {
            var plain = new List<double>();
            var speculative = new List<double>();
            SpeculationStats? stats = null;
            int tokens = 0;
            decoder.Generate(prompt, options with { MaxNewTokens = 8 });   // warm-up: the first call compiles
            decoder.Generate(prompt, options with { MaxNewTokens = 8 }, new NgramDrafter(), 4);
            // A measurement repeats the generation for at least half a second: a small model's answer takes tens of ms.
            var first = Stopwatch.StartNew();
            decoder.Generate(prompt, options);
            int repeats = (int)Math.Ceiling(0.5 / first.Elapsed.TotalSeconds);
            for (int round = 0; round < rounds; round++)
                foreach (bool draft in round % 2 == 0 ? new[] { false, true } : [true, false])
                {
                    var watch = Stopwatch.StartNew();
                    int produced = 0;
                    for (int r = 0; r < repeats; r++)
                        if (draft)
                        {
                            (var generation, stats) = decoder.Generate(prompt, options, new NgramDrafter(), 4);
                            produced += tokens = generation.Tokens.Length;
                        }
                        else produced += decoder.Generate(prompt, options).Tokens.Length;
                    (draft ? speculative : plain).Add(produced / watch.Elapsed.TotalSeconds);
                }
            var ratios = plain.Zip(speculative, (p, s) => s / p).ToList();
            Console.WriteLine($"| {model} | {name} | {tokens} | {Stats.Median(plain):F1} | {Stats.Median(speculative):F1} | {string.Join(", ", ratios.Select(r => r.ToString("F2")))} | " +
                              $"{stats!.Accepted} of {stats.Drafted} ({100 * stats.AcceptanceRate:F0}%) | {(double)stats.Passes / tokens:F2} |");
        }
    }
}
