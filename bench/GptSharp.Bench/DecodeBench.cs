using System.Diagnostics;
using System.Runtime.Intrinsics;
using GptSharp.Inference;
using GptSharp.Inference.Cpu;
using GptSharp.Interop;
using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Tokenization;
using GptSharp.Training;
using LLama;
using LLama.Common;
using LLama.Native;
using static TorchSharp.torch;

namespace GptSharp.Bench;

/// <summary>
/// Batch-1 greedy decode speed, prefill excluded, of the same random weights through libtorch, GptSharp's CPU engine
/// (F32, F16, BF16, Q8_0, Q4_0) and llama.cpp (LLamaSharp) on GGUF exports (F32, F16, Q8_0, Q4_0), interleaved round by round;
/// medians of the rounds. Each figure is also shown as a share of this machine's bound: the read bandwidth measured in
/// the same round ÷ bytes of weights one token reads. Then batched decode (4, 8, 16 rows) of the engine against libtorch's batch path.
/// Usage: bench -- decode [rounds] [presets, comma-separated].
/// </summary>
static class DecodeBench
{
    const int PromptTokens = 16, NewTokens = 100;   // within tiny's context of 128

    public static void Run(string[] args)
    {
        int rounds = args.Length > 1 ? int.Parse(args[1]) : 3;
        string[] presets = args.Length > 2 ? args[2].Split(',') : ["gpt2-124m", "tiny"];
        var bandwidth = new ReadBandwidth();
        double copy = ModelBench.CopyBandwidthGBs(), read = bandwidth.Measure();
        Console.WriteLine($"\n## Decode, batch 1, greedy, {NewTokens} tokens after a {PromptTokens}-token prompt (prefill excluded); medians of {rounds} interleaved rounds");
        Console.WriteLine($"Read bandwidth {read:F1} GB/s (all cores summing 1 GB; measured again each round for the bound below), copy bandwidth {copy:F1} GB/s; " +
                          $"SIMD: Vector512 {Vector512.IsHardwareAccelerated}, Vector256 {Vector256.IsHardwareAccelerated}; threads {Environment.ProcessorCount}.");
        Kernels();
        FixedCost();
        foreach (string preset in presets) Preset(preset, rounds, bandwidth);
    }

    /// <summary>Per-token cost with (almost) no weights: one layer of width 16, 64 tokens — what the engine and the decoder cost by themselves.</summary>
    static void FixedCost()
    {
        var config = GptConfig.Gpt2(64, 128, layers: 1, heads: 1, width: 16);
        manual_seed(1);
        using var model = new Gpt(config);
        model.eval();
        using var engine = CpuModel.From(model);
        int[] prompt = [.. Enumerable.Range(0, PromptTokens).Select(i => i % 64)];
        double Best(Func<double> measure) => Enumerable.Range(0, 5).Max(_ => measure());
        double forward = Best(() => ForwardOnly(engine, prompt)), decoder = Best(() => TokensPerSecond(new TokenDecoder(engine), prompt)),
               torch = Best(() => TokensPerSecond(new TokenDecoder(model), prompt));
        Console.WriteLine($"\nFixed cost per token (1 layer, width 16, vocabulary 64; best of 5): CPU engine forward {1e6 / forward:F1} µs, " +
                          $"through TokenDecoder {1e6 / decoder:F1} µs; libtorch through TokenDecoder {1e6 / torch:F1} µs.");
    }

    /// <summary>
    /// What decoding needs: every core streaming its share of a large array (1 GB), reading only; the best of 3 passes.
    /// This machine's bandwidth drifts by ±20% over minutes, so each round of the decode comparison measures it again and
    /// a figure's share of the bound is taken against its own round's bandwidth.
    /// </summary>
    sealed class ReadBandwidth
    {
        readonly float[] _data = new float[256L * 1024 * 1024];

        public ReadBandwidth() => Array.Fill(_data, 1f);

        public double Measure() => Enumerable.Range(0, 3).Max(_ => Pass());

        double Pass()
        {
            int threads = Environment.ProcessorCount;
            var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
            {
                ref float start = ref _data[_data.Length / threads * t];
                Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
                for (nuint k = 0; k + 64 <= (nuint)(_data.Length / threads); k += 64)
                {
                    s0 += Vector512.LoadUnsafe(ref start, k);
                    s1 += Vector512.LoadUnsafe(ref start, k + 16);
                    s2 += Vector512.LoadUnsafe(ref start, k + 32);
                    s3 += Vector512.LoadUnsafe(ref start, k + 48);
                }
                if (Vector512.Sum(s0 + s1 + s2 + s3) < 0) Console.Write("");
            })).ToList();
            var watch = Stopwatch.StartNew();
            workers.ForEach(w => w.Start());
            workers.ForEach(w => w.Join());
            return _data.Length * 4.0 / watch.Elapsed.TotalSeconds / 1e9;
        }
    }

    /// <summary>One thread's matrix–vector product of a 2304 × 768 matrix (GPT-2's q/k/v), per format: GB/s of weights read.</summary>
    static void Kernels()
    {
        var random = new Random(1);
        float[] data = [.. Enumerable.Range(0, 2304 * 768).Select(_ => (float)(random.NextDouble() - 0.5) * 0.04f)];
        float[] x = [.. Enumerable.Range(0, 768).Select(_ => (float)random.NextDouble())];
        var y = new float[2304];
        int big = 50257;
        float[] head = [.. Enumerable.Range(0, big * 768).Select(_ => (float)(random.NextDouble() - 0.5) * 0.04f)];
        var yBig = new float[big];
        Console.WriteLine("\n| format | one thread, 2304 × 768 (in cache): GB/s | µs | one thread, 50257 × 768 (from memory): GB/s | ms |");
        Console.WriteLine("|---|---|---|---|---|");
        foreach (var format in Enum.GetValues<WeightFormat>())
        {
            var w = WeightMatrix.Pack(data, 2304, 768, format, "bench");
            for (int i = 0; i < 50; i++) w.Multiply(x, 1, y, 0, 2304);
            var watch = Stopwatch.StartNew();
            for (int i = 0; i < 500; i++) w.Multiply(x, 1, y, 0, 2304);
            double seconds = watch.Elapsed.TotalSeconds / 500;
            var h = WeightMatrix.Pack(head, big, 768, format, "bench");
            h.Multiply(x, 1, yBig, 0, big);
            watch.Restart();
            for (int i = 0; i < 10; i++) h.Multiply(x, 1, yBig, 0, big);
            double headSeconds = watch.Elapsed.TotalSeconds / 10;
            Console.WriteLine($"| {format} | {w.Bytes / seconds / 1e9:F1} | {seconds * 1e6:F0} | {h.Bytes / headSeconds / 1e9:F1} | {headSeconds * 1e3:F2} |");
        }
    }

    static void Preset(string preset, int rounds, ReadBandwidth bandwidth)
    {
        using var dir = new TempFolder();
        var (tokenizerDir, vocab) = Tokenizer(dir.Path, preset == "gpt2-124m" ? null : 8192);
        var config = GptConfig.Preset(preset, vocab);
        manual_seed(1);
        using var model = new Gpt(config);
        model.eval();
        Checkpoint.Save(Path.Combine(dir.Path, "run"), model, null, new TrainingState(0, "0:0", "", tokenizerDir));
        int[] prompt = [.. Enumerable.Range(0, PromptTokens).Select(i => (i * 977 + 13) % vocab)];

        var candidates = new List<(string Name, long Bytes, Func<double> Measure, IDisposable? Owner)>();
        foreach (var format in new[] { WeightFormat.F32, WeightFormat.F16, WeightFormat.BF16, WeightFormat.Q8_0, WeightFormat.Q4_0 })
        {
            var engine = CpuModel.From(model, format);
            candidates.Add(($"GptSharp CPU {format}", engine.BytesPerToken, () => TokensPerSecond(new TokenDecoder(engine), prompt), engine));
        }
        long f32Bytes = candidates[0].Bytes;   // what every F32 engine reads per token
        candidates.Insert(0, ("libtorch F32", f32Bytes, () => TokensPerSecond(new TokenDecoder(model), prompt), null));
        var forwardOnly = CpuModel.From(model);
        candidates.Add(("GptSharp CPU F32, Forward alone", forwardOnly.BytesPerToken, () => ForwardOnly(forwardOnly, prompt), forwardOnly));
        foreach (var type in new[] { GgmlType.F32, GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0 })
        {
            string file = Path.Combine(dir.Path, $"model-{type}.gguf");
            Gguf.Export(Path.Combine(dir.Path, "run"), file, type);
            var llama = new LlamaCpp(file, config.ContextLength);
            long bytes = type switch { GgmlType.F32 => f32Bytes, GgmlType.F16 => f32Bytes / 2, GgmlType.Q4_0 => f32Bytes * 18 / 128, _ => f32Bytes * 34 / 128 };
            candidates.Add(($"llama.cpp {type}", bytes, () => llama.TokensPerSecond(prompt), llama));
        }

        // Per round: the bandwidth, then every candidate (order reversed every other round); a figure's share of the
        // bound is against its own round's bandwidth.
        var figures = candidates.ToDictionary(c => c.Name, _ => new List<(double TokensPerSecond, double Share)>());
        var bandwidths = new List<double>();
        for (int round = 0; round < rounds; round++)
        {
            double read = bandwidth.Measure();
            bandwidths.Add(read);
            foreach (var candidate in round % 2 == 0 ? candidates : Enumerable.Reverse(candidates))
            {
                double tokensPerSecond = candidate.Measure();
                figures[candidate.Name].Add((tokensPerSecond, tokensPerSecond * candidate.Bytes / (read * 1e9)));
            }
        }

        Console.WriteLine($"\n### {preset} ({config.Layers} layers, width {config.Width}, vocab {vocab}); read bandwidth by round {string.Join(", ", bandwidths.Select(b => b.ToString("F1")))} GB/s");
        Console.WriteLine("| engine | weights MB read per token | tok/s (median) | ms/token | of the round's bandwidth bound (median) |");
        Console.WriteLine("|---|---|---|---|---|");
        foreach (var (name, bytes, _, _) in candidates)
        {
            double median = Stats.Median(figures[name].Select(f => f.TokensPerSecond));
            Console.WriteLine($"| {name} | {bytes / 1e6:F1} | {median:N1} | {1000 / median:F2} | {100 * Stats.Median(figures[name].Select(f => f.Share)):F0}% |");
        }

        // The same comparison as ratios within each round: this host's bandwidth has slow and fast phases of tens of
        // seconds, which move both engines' medians; a round's pair is measured close together.
        Console.WriteLine("\n| GptSharp CPU against llama.cpp, same round | median ratio | range over rounds |");
        Console.WriteLine("|---|---|---|");
        foreach (var (ours, theirs) in new[] { ("F32", "F32"), ("F16", "F16"), ("BF16", "F16"), ("Q8_0", "Q8_0"), ("Q4_0", "Q4_0") })
        {
            var ratios = figures[$"GptSharp CPU {ours}"].Zip(figures[$"llama.cpp {theirs}"], (a, b) => a.TokensPerSecond / b.TokensPerSecond).ToList();
            Console.WriteLine($"| {ours} / llama.cpp {theirs} | {Stats.Median(ratios):F2} | {ratios.Min():F2}–{ratios.Max():F2} |");
        }

        Console.WriteLine("\n| rows | libtorch batch tok/s | CPU engine F32 tok/s | CPU engine Q8_0 tok/s |");
        Console.WriteLine("|---|---|---|---|");
        var f32 = (CpuModel)candidates.First(c => c.Name == "GptSharp CPU F32").Owner!;
        var q8 = (CpuModel)candidates.First(c => c.Name == "GptSharp CPU Q8_0").Owner!;
        foreach (int rows in new[] { 4, 8, 16 })
        {
            int[][] prompts = [.. Enumerable.Range(0, rows).Select(r => prompt.Select(t => (t + r) % vocab).ToArray())];
            double Batched(TokenDecoder decoder)
            {
                var options = new SamplingOptions(Temperature: 0.8, MaxNewTokens: 32, Seed: 3);
                decoder.Generate(prompts, options with { MaxNewTokens = 2 });   // warm up
                var watch = Stopwatch.StartNew();
                int produced = decoder.Generate(prompts, options).Sum(g => g.Tokens.Length);
                return produced / watch.Elapsed.TotalSeconds;
            }
            var (t, e, q) = (new List<double>(), new List<double>(), new List<double>());
            for (int round = 0; round < rounds; round++)
            {
                t.Add(Batched(new TokenDecoder(model)));
                e.Add(Batched(new TokenDecoder(f32)));
                q.Add(Batched(new TokenDecoder(q8)));
            }
            Console.WriteLine($"| {rows} | {Stats.Median(t):N0} | {Stats.Median(e):N0} | {Stats.Median(q):N0} |");
        }
        foreach (var candidate in candidates) candidate.Owner?.Dispose();
    }

    /// <summary>Tokens per second after the first (which comes with the prefill).</summary>
    static double TokensPerSecond(TokenDecoder decoder, int[] prompt)
    {
        var stamps = new List<long>();
        decoder.Generate(prompt, new SamplingOptions(Temperature: 0, MaxNewTokens: NewTokens, StopTokens: []), _ => stamps.Add(Stopwatch.GetTimestamp()));
        return (stamps.Count - 1) / Stopwatch.GetElapsedTime(stamps[0], stamps[^1]).TotalSeconds;
    }

    /// <summary>The engine's forward pass with a greedy choice in C#, as the llama.cpp loop does: what TokenDecoder adds shows against it.</summary>
    static double ForwardOnly(CpuModel engine, int[] prompt)
    {
        var cache = engine.CreateCache(1);
        var logits = new float[engine.Config.VocabSize];
        engine.Forward(cache, prompt.Length, prompt, new int[prompt.Length], [.. Enumerable.Range(0, prompt.Length)], [prompt.Length - 1], logits);
        int[] token = [0], slot = [0], position = [0], output = [0];
        long first = Stopwatch.GetTimestamp();
        for (int step = 1; step < NewTokens; step++)
        {
            int next = 0;
            for (int j = 1; j < logits.Length; j++) if (logits[j] > logits[next]) next = j;
            (token[0], position[0]) = (next, prompt.Length + step - 1);
            engine.Forward(cache, 1, token, slot, position, output, logits);
        }
        return (NewTokens - 1) / Stopwatch.GetElapsedTime(first).TotalSeconds;
    }

    /// <summary>GPT-2's tokenizer, or its first ranks as a smaller vocabulary (every merge of a rank uses lower ranks).</summary>
    internal static (string Directory, int Vocab) Tokenizer(string root, int? vocab)
    {
        var gpt2 = GptTokenizer.Load("gpt2");
        string directory = Path.Combine(root, "tokenizer");
        if (vocab is null)
        {
            GptTokenizer.Save(gpt2.Spec with { RankFile = GptTokenizer.RankFileName }, gpt2.OrdinaryTokens, directory);
            return (directory, gpt2.VocabSize);
        }
        int ordinary = vocab.Value - SpecialTokens.All.Count;
        var ranks = gpt2.OrdinaryTokens.Where(kv => kv.Key < ordinary).ToDictionary(kv => kv.Key, kv => kv.Value);
        var special = SpecialTokens.All.Select((t, i) => (t, i)).ToDictionary(p => p.t, p => ordinary + p.i);
        GptTokenizer.Save(new TokenizerSpec("gpt2-8k", PreTokenizerPatterns.Gpt2, vocab.Value, special), ranks, directory);
        return (directory, vocab.Value);
    }

    /// <summary>llama.cpp through LLamaSharp: the same prompt, greedy over its logits, one token per decode call.</summary>
    internal sealed class LlamaCpp : IDisposable
    {
        readonly LLamaWeights _weights;
        readonly ModelParams _parameters;

        public LlamaCpp(string file, int context)
        {
            _parameters = new ModelParams(file) { ContextSize = (uint)context, GpuLayerCount = 0, Threads = Environment.ProcessorCount, BatchSize = 64 };
            _weights = LLamaWeights.LoadFromFile(_parameters);
        }

        public double TokensPerSecond(int[] prompt)
        {
            using var context = _weights.CreateContext(_parameters);
            long first = Greedy(context, prompt, NewTokens);
            return (NewTokens - 1) / Stopwatch.GetElapsedTime(first).TotalSeconds;
        }

        /// <summary>Reads the prompt in one batch, then <paramref name="tokens"/> greedy tokens one decode call each;
        /// returns when the first token was chosen (a <see cref="Stopwatch"/> timestamp).</summary>
        public static long Greedy(LLamaContext context, int[] prompt, int tokens)
        {
            var batch = new LLamaBatch();
            for (int i = 0; i < prompt.Length; i++) batch.Add((LLamaToken)prompt[i], i, LLamaSeqId.Zero, i == prompt.Length - 1);
            long first = 0;
            for (int step = 0; step < tokens; step++)
            {
                if (context.Decode(batch) != DecodeResult.Ok) throw new InvalidOperationException("llama.cpp failed to decode.");
                var logits = context.NativeHandle.GetLogitsIth(batch.TokenCount - 1);
                int next = 0;
                for (int j = 1; j < logits.Length; j++) if (logits[j] > logits[next]) next = j;
                if (step == 0) first = Stopwatch.GetTimestamp();
                batch.Clear();
                batch.Add((LLamaToken)next, prompt.Length + step, LLamaSeqId.Zero, true);
            }
            return first;
        }

        public void Dispose() => _weights.Dispose();
    }

    sealed class TempFolder : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("gptsharp-decode-").FullName;
        public void Dispose() => Directory.Delete(Path, recursive: true);
    }
}
