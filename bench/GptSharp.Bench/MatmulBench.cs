using GptSharp.Runtime;
using static TorchSharp.torch;

namespace GptSharp.Bench;

/// <summary>Square matmul throughput for fp32 and bf16: whether bf16 would pay on this CPU.</summary>
static class MatmulBench
{
    public static void Run()
    {
        Console.WriteLine("\n## Matmul GFLOP/s");
        Console.WriteLine("| size | fp32 | bf16 |");
        Console.WriteLine("|---|---|---|");
        foreach (int size in new[] { 768, 1024, 2048 })
            Console.WriteLine($"| {size} | {SystemReport.MatmulGflops(size, 2):F0} | {SystemReport.MatmulGflops(size, 2, ScalarType.BFloat16):F0} |");
    }
}
