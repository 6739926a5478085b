using GptSharp.Runtime;
using System.Diagnostics;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Bench;

/// <summary>
/// Training throughput and model FLOPs utilisation, prefill and decode speed with the KV cache, memory bandwidth and
/// peak memory, for the presets at a few (B, T). MFU = (6·N + 12·L·C·T) FLOPs per token × tokens/s ÷ the fp32 matmul
/// peak measured in this same run; decode is compared with (copy bandwidth ÷ bytes of weights read per token).
/// </summary>
static class ModelBench
{
    public static void Run()
    {
        // This machine's speed drifts (shared host), so the peak is the best of measurements before and after the rows.
        double peak = Math.Max(SystemReport.MatmulGflops(1024, 2), SystemReport.MatmulGflops(2048, 2));
        double bandwidth = CopyBandwidthGBs();
        var rows = new List<Func<double, string>>();
        foreach (var (preset, vocab, b, t) in new[]
                 {
                     ("tiny", 8192, 16, 128), ("tiny", 8192, 4, 64),
                     ("small", 8192, 8, 256), ("small", 8192, 4, 64),
                     ("gpt2-124m", 50257, 8, 256), ("gpt2-124m", 50257, 4, 64),
                 })
            rows.Add(Measure(preset, vocab, b, t, bandwidth));
        peak = Math.Max(peak, SystemReport.MatmulGflops(2048, 2));
        Console.WriteLine($"\n## Model throughput (peak fp32 matmul {peak:F0} GFLOP/s, copy bandwidth {bandwidth:F1} GB/s, malloc tuning {(Environment.GetEnvironmentVariable("GPTSHARP_MALLOC_TUNING") == "0" ? "off" : "on")})");
        Console.WriteLine("| preset | params | B | T | train tok/s | step s | MFU | prefill tok/s | decode tok/s (B=1) | decode / bandwidth bound | peak RSS GB |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var row in rows) Console.WriteLine(row(peak));
    }

    static Func<double, string> Measure(string preset, int vocab, int b, int t, double bandwidth)
    {
        torch.manual_seed(0);
        var config = GptConfig.Preset(preset, vocab);
        using var model = new Gpt(config);
        var training = new TrainingConfig { Steps = 1000, BatchSize = b, WarmupSteps = 0 };
        using var optimizer = new AdamW(model.named_parameters(), training);
        var inputs = randint(0, vocab, [b, t], dtype: ScalarType.Int64);
        var targets = randint(0, vocab, [b, t], dtype: ScalarType.Int64);
        int steps = preset == "gpt2-124m" ? 3 : 10;
        void Step()
        {
            using var scope = NewDisposeScope();
            optimizer.ZeroGrad();
            Gpt.Loss(model.forward(inputs), targets).backward();
            double norm = optimizer.GradNorm();
            optimizer.Step(1e-4, Math.Min(1, 1 / norm));
        }
        // Warm-up: the heap grows to its working size over the first steps, which pay page faults (kernel time). Measure
        // once a step runs with under 5% of its time in the kernel (at most 10 warm-up steps).
        var process = Process.GetCurrentProcess();
        for (int i = 0; i < 10; i++)
        {
            process.Refresh();
            var kernel = process.PrivilegedProcessorTime;
            var stepWatch = Stopwatch.StartNew();
            Step();
            process.Refresh();
            if (i >= 2 && (process.PrivilegedProcessorTime - kernel).TotalSeconds < 0.05 * stepWatch.Elapsed.TotalSeconds) break;
        }
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < steps; i++) Step();
        double stepSeconds = watch.Elapsed.TotalSeconds / steps;
        double tokensPerSecond = b * t / stepSeconds;
        double flopsPerToken = 6.0 * model.NonEmbeddingParameterCount + 12.0 * config.Layers * config.Width * t;

        // Prefill: one forward over B×T; decode: batch 1, one token at a time through the cache.
        model.eval();
        double prefill, decode;
        using (no_grad())
        {
            model.forward(inputs).Dispose();
            watch.Restart();
            for (int i = 0; i < 3; i++) model.forward(inputs).Dispose();
            prefill = 3.0 * b * t / watch.Elapsed.TotalSeconds;
            var generator = new TokenDecoder(model);
            int newTokens = Math.Min(64, config.ContextLength - 8);
            generator.Generate([[1, 2, 3, 4, 5, 6, 7, 8]], new SamplingOptions(Temperature: 0, MaxNewTokens: 8));
            watch.Restart();
            var produced = generator.Generate([[1, 2, 3, 4, 5, 6, 7, 8]], new SamplingOptions(Temperature: 0, MaxNewTokens: newTokens))[0].Tokens.Length;
            decode = produced / watch.Elapsed.TotalSeconds;
        }
        // Each decoded token reads every weight once (fp32); the token embedding's lookup reads one row unless tied.
        double bytesPerToken = 4.0 * (model.ParameterCount - (config.Positions == PositionKind.Learned ? config.ContextLength * config.Width : 0)
                                      - (config.TiedEmbeddings ? 0 : (long)vocab * config.Width));
        double bound = bandwidth * 1e9 / bytesPerToken;
        double rss = PeakRssGb(), parameters = model.ParameterCount / 1e6;
        Console.Error.WriteLine($"measured {preset} B={b} T={t}");
        return peak => $"| {preset} | {parameters:F1}M | {b} | {t} | {tokensPerSecond:N0} | {stepSeconds:F3} | {100 * flopsPerToken * tokensPerSecond / (peak * 1e9):F0}% | {prefill:N0} | {decode:N1} | {100 * decode / bound:F0}% of {bound:N0} | {rss:F2} |";
    }

    internal static double CopyBandwidthGBs()
    {
        using var scope = NewDisposeScope();
        var source = randn(64L * 1024 * 1024); // 256 MB
        var destination = empty_like(source);
        destination.copy_(source);
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < 10; i++) destination.copy_(source);
        return 10 * 2.0 * source.numel() * 4 / watch.Elapsed.TotalSeconds / 1e9; // read + write
    }

    static double PeakRssGb()
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:")) return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024.0 / 1024.0;
        return double.NaN;
    }
}
