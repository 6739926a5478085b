using GptSharp.Runtime;
using System.Diagnostics;
using GptSharp.Models;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;
namespace GptSharp.Bench;
/// <summary>
/// Where one gpt2-124m training step (B=8, T=256) spends its time: forward, loss, backward, clipping, AdamW; and the
/// time the same step's matrix products alone take at their real shapes — the ceiling MFU can reach on this CPU.
/// </summary>
static class StepBreakdownBench
{
    public static void Run()
    {
        Measure(8, 256);
        Measure(4, 64);
    }

    static void Measure(int batch, int time)
    {
        torch.manual_seed(0);
        var config = GptConfig.Preset("gpt2-124m", 50257);
        using var model = new Gpt(config);
        using var optimizer = new AdamW(model.named_parameters(), new TrainingConfig());
        var inputs = randint(0, 50257, [batch, time], dtype: ScalarType.Int64);
        var targets = randint(0, 50257, [batch, time], dtype: ScalarType.Int64);
        Console.WriteLine($"\n## gpt2-124m step breakdown (B={batch}, T={time}), seconds");
        double best = double.MaxValue;
        var process = Process.GetCurrentProcess();
        for (int i = 0; i < 6; i++)
        {
            using var scope = NewDisposeScope();
            process.Refresh();
            var system0 = process.PrivilegedProcessorTime;
            var w = Stopwatch.StartNew();
            optimizer.ZeroGrad();
            var logits = model.forward(inputs);
            double fwd = w.Elapsed.TotalSeconds;
            var loss = Gpt.Loss(logits, targets);
            double ce = w.Elapsed.TotalSeconds;
            loss.backward();
            double bwd = w.Elapsed.TotalSeconds;
            double norm = optimizer.GradNorm();
            double clip = w.Elapsed.TotalSeconds;
            optimizer.Step(1e-4, Math.Min(1, 1 / norm));
            double step = w.Elapsed.TotalSeconds;
            process.Refresh();
            best = Math.Min(best, step);
            Console.WriteLine($"forward {fwd:F2} ce {ce - fwd:F2} backward {bwd - ce:F2} clip {clip - bwd:F2} adamw {step - clip:F2} total {step:F2} (system time {(process.PrivilegedProcessorTime - system0).TotalSeconds:F2})");
            TorchRuntime.ReleaseStepGarbage();
        }
        double peak = Math.Max(SystemReport.MatmulGflops(1024, 2), SystemReport.MatmulGflops(2048, 2));
        var (gemmSeconds, gemmFlops) = StepGemms(config, batch * time, batch, time);
        double modelFlops = (6.0 * model.ParameterCount + 12.0 * config.Layers * config.Width * time) * batch * time;
        Console.WriteLine($"matrix products alone at the step's shapes: {gemmSeconds:F2} s for {gemmFlops / 1e12:F2} TFLOP " +
                          $"({gemmFlops / gemmSeconds / 1e9:F0} GFLOP/s); square peak {peak:F0} GFLOP/s");
        Console.WriteLine($"MFU of the step {100 * modelFlops / best / (peak * 1e9):F0}%; ceiling if everything but the products were free " +
                          $"{100 * modelFlops / gemmSeconds / (peak * 1e9):F0}%");
    }

    /// <summary>Runs the forward and backward matrix products of one step (linear layers, attention, LM head) at their shapes.</summary>
    static (double Seconds, double Flops) StepGemms(GptConfig config, int rows, int batch, int time)
    {
        int c = config.Width, hidden = config.MlpHidden, heads = config.Heads, d = c / heads;
        var linears = new List<(int In, int Out, int Count)>
        {
            (c, 3 * c, config.Layers), (c, c, config.Layers), (c, hidden, config.Layers), (hidden, c, config.Layers),
            (c, config.VocabSize, 1),
        };
        double seconds = 0, flops = 0;
        foreach (var (inF, outF, count) in linears)
        {
            using var scope = NewDisposeScope();
            var x = randn(rows, inF); var weight = randn(outF, inF); var dy = randn(rows, outF);
            // forward y = x·Wᵀ; backward dx = dy·W, dW = dyᵀ·x
            double t = Time(() => { nn.functional.linear(x, weight).Dispose(); mm(dy, weight).Dispose(); mm(dy.t(), x).Dispose(); });
            seconds += t * count;
            flops += 3 * 2.0 * rows * inF * outF * count;
            Console.WriteLine($"  linear {inF}→{outF} at {rows} rows: {3 * 2.0 * rows * inF * outF / t / 1e9:F0} GFLOP/s (forward + backward)");
        }
        {
            using var scope = NewDisposeScope();
            var q = randn(batch * heads, time, d); var k = randn(batch * heads, time, d); var scores = randn(batch * heads, time, time);
            // forward QKᵀ and P·V; backward twice each
            double t = Time(() => { for (int i = 0; i < 3; i++) { bmm(q, k.transpose(1, 2)).Dispose(); bmm(scores, q).Dispose(); } });
            seconds += t * config.Layers;
            Console.WriteLine($"  attention products: {6 * 2.0 * batch * heads * time * time * d / t / 1e9:F0} GFLOP/s");
            flops += 6 * 2.0 * batch * heads * time * time * d * config.Layers;
        }
        return (seconds, flops);
    }

    static double Time(Action action)
    {
        action();
        var watch = Stopwatch.StartNew();
        int runs = 0;
        while (watch.Elapsed.TotalSeconds < 0.5 || runs < 2) { action(); runs++; }
        return watch.Elapsed.TotalSeconds / runs;
    }
}
