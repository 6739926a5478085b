using GptSharp.Data;
using GptSharp.Inference.Cpu;
using GptSharp.Models;
using GptSharp.Runs;
using static TorchSharp.torch;

namespace GptSharp.Bench;

/// <summary>
/// Held-out perplexity of a trained run through the CPU engine in each weight format, beside libtorch's: the same
/// windows of the validation shard, every position scored; then F32 weights with each cache format (F32, F16, Q8_0).
/// Usage: bench -- decode-quality RUN_DIR VAL_SHARD [windows].
/// </summary>
static class DecodeQualityBench
{
    public static void Run(string[] args)
    {
        if (args.Length < 3) throw new ArgumentException("usage: decode-quality RUN_DIR VAL_SHARD [windows]");
        int windows = args.Length > 3 ? int.Parse(args[3]) : 64;
        var (model, _) = Checkpoint.LoadModel(args[1]);
        using var _m = model;
        model.eval();
        using var shard = new MappedTokenShard(args[2]);
        int length = Math.Min(128, model.Config.ContextLength);
        long stride = (shard.Count - length - 1) / windows;
        var starts = Enumerable.Range(0, windows).Select(w => w * stride).ToList();

        double Torch()
        {
            double total = 0;
            using var noGrad = no_grad();
            foreach (long start in starts)
            {
                using var scope = NewDisposeScope();
                var ids = new long[length + 1];
                shard.CopyTo(start, ids);
                var logits = model.forward(tensor(ids[..length]).unsqueeze(0));
                total += Gpt.Loss(logits, tensor(ids[1..]).unsqueeze(0)).item<float>() * length;
            }
            return total / (windows * length);
        }

        double Engine(CpuModel engine)
        {
            double total = 0;
            int vocab = model.Config.VocabSize;
            var logits = new float[length * vocab];
            int[] all = [.. Enumerable.Range(0, length)];
            foreach (long start in starts)
            {
                var ids = new long[length + 1];
                shard.CopyTo(start, ids);
                int[] tokens = [.. ids[..length].Select(t => (int)t)];
                engine.Forward(engine.CreateCache(1, length), length, tokens, new int[length], all, all, logits);
                for (int i = 0; i < length; i++)
                {
                    var row = logits.AsSpan(i * vocab, vocab);
                    float max = float.NegativeInfinity;
                    foreach (float v in row) max = Math.Max(max, v);
                    double sum = 0;
                    foreach (float v in row) sum += Math.Exp(v - max);
                    total += max + Math.Log(sum) - row[(int)ids[i + 1]];
                }
            }
            return total / (windows * length);
        }

        static string Signed(double value) => (value >= 0 ? "+" : "−") + Math.Abs(value).ToString("F3");
        Console.WriteLine($"\n## Held-out loss by weight format: {args[1]}, {windows} windows of {length} tokens from {args[2]}");
        Console.WriteLine("| engine | nats/token | perplexity | vs libtorch F32 |");
        Console.WriteLine("|---|---|---|---|");
        double reference = Torch();
        Console.WriteLine($"| libtorch F32 | {reference:F4} | {Math.Exp(reference):F3} | — |");
        foreach (var format in Enum.GetValues<WeightFormat>())
        {
            CpuModel engine;
            try { engine = CpuModel.From(model, format); }
            catch (NotSupportedException e)
            {
                Console.WriteLine($"| CPU {format} | — | — | not this model's shapes: {e.Message} |");
                continue;
            }
            using var _e = engine;
            double loss = Engine(engine);
            Console.WriteLine($"| CPU {format} | {loss:F4} | {Math.Exp(loss):F3} | {Signed(100 * (Math.Exp(loss) / Math.Exp(reference) - 1))}% perplexity |");
        }
        // The cache formats beside F32 weights, against the F32 cache: what --kv costs.
        double? f32Cache = null;
        foreach (var kv in Enum.GetValues<KvFormat>())
        {
            if (kv == KvFormat.Q8_0 && model.Config.HeadDim % 32 != 0) continue;
            using var engine = CpuModel.From(model, WeightFormat.F32, kvFormat: kv);
            double loss = Engine(engine);
            f32Cache ??= loss;
            long bytes = new CpuKvCache(model.Config, 1, format: kv).BytesPerToken;
            Console.WriteLine($"| CPU F32, {kv} cache ({bytes:N0} bytes a token) | {loss:F4} | {Math.Exp(loss):F3} | {Signed(100 * (Math.Exp(loss) / Math.Exp(f32Cache.Value) - 1))}% perplexity against the F32 cache |");
        }
    }
}
