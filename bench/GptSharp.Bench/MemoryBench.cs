using GptSharp.Runtime;
using System.Diagnostics;
using GptSharp.Models;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Bench;

/// <summary>Resident memory across hundreds of training steps of the tiny preset: it must stay flat.</summary>
static class MemoryBench
{
    public static void Run()
    {
        torch.manual_seed(0);
        var config = GptConfig.Preset("tiny", 8192);
        using var model = new Gpt(config);
        using var optimizer = new AdamW(model.named_parameters(), new TrainingConfig());
        Console.WriteLine("\n## Resident memory over 400 training steps (tiny, B=16, T=128)");
        Console.WriteLine("| step | RSS MB | s/step (last 50) |");
        Console.WriteLine("|---|---|---|");
        var watch = Stopwatch.StartNew();
        for (int step = 1; step <= 400; step++)
        {
            using (var scope = NewDisposeScope())
            {
                var inputs = randint(0, 8192, [16, 128], dtype: ScalarType.Int64);
                var targets = randint(0, 8192, [16, 128], dtype: ScalarType.Int64);
                optimizer.ZeroGrad();
                Gpt.Loss(model.forward(inputs), targets).backward();
                double norm = optimizer.GradNorm();
                optimizer.Step(1e-3);
            }
            TorchRuntime.ReleaseStepGarbage(); // as the trainer does after every step
            if (step % 50 == 0)
            {
                Console.WriteLine($"| {step} | {Process.GetCurrentProcess().WorkingSet64 / 1e6:F0} | {watch.Elapsed.TotalSeconds / 50:F3} |");
                watch.Restart();
            }
        }
    }
}
