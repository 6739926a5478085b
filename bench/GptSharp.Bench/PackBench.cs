using System.Diagnostics;
using GptSharp.Inference.Cpu;
using GptSharp.Models;
using static TorchSharp.torch;

namespace GptSharp.Bench;

/// <summary><c>pack [rounds]</c>: seconds to pack a GPT-2-124M-shaped model for the CPU engine in each format — what
/// <c>generate</c> pays before its first token, where llama.cpp maps an already quantised file.</summary>
static class PackBench
{
    public static void Run(string[] args)
    {
        int rounds = args.Length > 1 ? int.Parse(args[1]) : 3;
        manual_seed(1);
        using var model = new Gpt(GptConfig.Preset("gpt2-124m", 50304));
        model.eval();
        {
            var watch = Stopwatch.StartNew();
            using (no_grad())
            using (var scope = NewDisposeScope())
                foreach (var (name, tensor) in model.state_dict()) _ = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(tensor.detach().cpu().to(ScalarType.Float32).contiguous().bytes).ToArray();
            Console.WriteLine($"reading the weights out of libtorch: {watch.Elapsed.TotalSeconds:F2} s");
        }
        Console.WriteLine($"\n## Packing gpt2-124m for the CPU engine, seconds (median of {rounds})");
        Console.WriteLine("| format | seconds |");
        Console.WriteLine("|---|---|");
        foreach (var format in Enum.GetValues<WeightFormat>())
        {
            var seconds = new List<double>();
            for (int round = 0; round < rounds; round++)
            {
                var watch = Stopwatch.StartNew();
                using (CpuModel.From(model, format)) seconds.Add(watch.Elapsed.TotalSeconds);
            }
            Console.WriteLine($"| {format} | {Stats.Median(seconds):F2} |");
        }
    }
}
