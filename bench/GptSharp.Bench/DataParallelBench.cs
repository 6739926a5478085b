using System.Diagnostics;
using System.Text.Json;
using GptSharp.Data;
using GptSharp.Tokenization;

namespace GptSharp.Bench;

/// <summary>
/// Pretraining tokens/s of `tiny` (batch 16) as one process and as `mpirun -np 2`, with the threads split between
/// processes or not, on shards of the Tang poems with the gpt2 tokenizer. Needs Open MPI's mpirun.
/// </summary>
static class DataParallelBench
{
    public static void Run()
    {
        string dir = Path.Combine(Path.GetTempPath(), "gptsharp-dp-bench-" + Guid.NewGuid().ToString("N"));
        try
        {
            ShardBuilder.Build(GptTokenizer.Load("gpt2"), "gpt2", new ShardOptions(["tang"], MaxDocuments: 4000), Path.Combine(dir, "data"));
            string cli = Path.Combine(AppContext.BaseDirectory, "../../../../../src/GptSharp.Cli/bin",
                new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name, "net10.0", "GptSharp.Cli.dll");
            Console.WriteLine("\n## Data parallelism: tiny, global batch 16, 40 steps (tokens/s over the last 20)");
            Console.WriteLine("| processes | threads each | train tok/s |");
            Console.WriteLine("|---|---|---|");
            foreach (var (processes, threads) in new[] { (1, 2), (1, 1), (2, 1) })
            {
                string run = Path.Combine(dir, $"run-{processes}-{threads}");
                string[] args = ["pretrain", "--preset", "tiny", "--data", Path.Combine(dir, "data"), "--run-dir", run, "--steps", "40",
                    "--batch-size", "16", "--eval-every", "1000", "--threads", threads.ToString(), "--quiet"];
                var start = processes == 1
                    ? new ProcessStartInfo("dotnet", [cli, .. args])
                    : new ProcessStartInfo("mpirun", ["--allow-run-as-root", "--oversubscribe", "-np", processes.ToString(), "dotnet", cli, .. args]);
                start.RedirectStandardOutput = start.RedirectStandardError = true;
                using var process = Process.Start(start)!;
                process.StandardOutput.ReadToEnd();
                process.WaitForExit();
                if (process.ExitCode != 0) { Console.WriteLine($"| {processes} | {threads} | failed: {process.StandardError.ReadToEnd().Trim()} |"); continue; }
                var rates = File.ReadLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
                    .Where(e => e.GetProperty("step").GetInt32() > 20).Select(e => e.GetProperty("tokensPerSecond").GetDouble()).ToList();
                Console.WriteLine($"| {processes} | {threads} | {rates.Average():N0} |");
            }
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }
}
