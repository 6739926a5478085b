using System.Diagnostics;
using GptSharp.Interop;
using GptSharp.Models;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;
namespace GptSharp.Bench;
/// <summary>Where one gpt2-124m training step (B=8, T=256) spends its time: forward, loss, backward, clipping, AdamW.</summary>
static class StepBreakdownBench
{
    public static void Run()
    {
        torch.manual_seed(0);
        var config = GptConfig.Preset("gpt2-124m", 50257);
        using var model = new Gpt(config);
        using var optimizer = new AdamW(model.named_parameters(), new TrainingConfig());
        var inputs = randint(0, 50257, [8, 256], dtype: ScalarType.Int64);
        var targets = randint(0, 50257, [8, 256], dtype: ScalarType.Int64);
        for (int i = 0; i < 3; i++)
        {
            using var scope = NewDisposeScope();
            var w = Stopwatch.StartNew();
            optimizer.ZeroGrad();
            var logits = model.forward(inputs);
            double fwd = w.Elapsed.TotalSeconds;
            var loss = Gpt.Loss(logits, targets);
            double ce = w.Elapsed.TotalSeconds;
            loss.backward();
            double bwd = w.Elapsed.TotalSeconds;
            nn.utils.clip_grad_norm_(optimizer.Parameters, 1.0);
            double clip = w.Elapsed.TotalSeconds;
            optimizer.Step(1e-4);
            double step = w.Elapsed.TotalSeconds;
            Console.WriteLine($"forward {fwd:F2} ce {ce - fwd:F2} backward {bwd - ce:F2} clip {clip - bwd:F2} adamw {step - clip:F2} total {step:F2}");
            TorchRuntime.ReleaseStepGarbage();
        }
    }
}
