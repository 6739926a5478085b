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
    /// <summary>
    /// ZeRO-1 against replicated optimiser state: `gpt2-124m` (context 64) under `mpirun -np 2`, each process's peak
    /// resident memory (GNU time's %M) and tokens/s. AdamW's moments are 1 GB here, so sharding them should save 0.5 GB.
    /// </summary>
    static void Zero1(string cli, string data, string dir)
    {
        Console.WriteLine("\n## ZeRO-1: gpt2-124m (context 64), mpirun -np 2 with 1 thread each, global batch 4, 6 steps");
        Console.WriteLine("| optimiser state | peak RSS, rank 0 / rank 1 (MB) | train tok/s (last step) |");
        Console.WriteLine("|---|---|---|");
        foreach (bool zero1 in new[] { false, true })
        {
            string run = Path.Combine(dir, $"zero-{zero1}");
            string[] args = ["pretrain", "--preset", "gpt2-124m", "--context", "64", "--data", data, "--run-dir", run, "--steps", "6",
                "--batch-size", "4", "--eval-every", "1000", "--threads", "1", "--quiet", .. zero1 ? new[] { "--zero1" } : []];
            // Each rank under GNU time, writing its own peak to a file named by its rank.
            string command = $"/usr/bin/time -f %M -o {dir}/peak-{zero1}.$OMPI_COMM_WORLD_RANK dotnet {cli} {string.Join(' ', args)}";
            var start = new ProcessStartInfo("mpirun", ["--allow-run-as-root", "--oversubscribe", "-np", "2", "sh", "-c", command])
            {
                RedirectStandardOutput = true, RedirectStandardError = true,
            };
            using var process = Process.Start(start)!;
            var stderr = process.StandardError.ReadToEndAsync();
            process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0) { Console.WriteLine($"| {(zero1 ? "sharded" : "replicated")} | failed: {stderr.Result.Trim()} | |"); continue; }
            var peaks = Enumerable.Range(0, 2).Select(rank => long.Parse(File.ReadAllText(Path.Combine(dir, $"peak-{zero1}.{rank}")).Trim()) / 1024);
            var rates = File.ReadLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
                .Where(e => e.GetProperty("step").GetInt32() == 6).Select(e => e.GetProperty("tokensPerSecond").GetDouble()).ToList();
            Console.WriteLine($"| {(zero1 ? "sharded (--zero1)" : "replicated")} | {string.Join(" / ", peaks)} | {rates.Average():N0} |");
        }
    }

    /// <summary>Tokens/s at one and two processes, then ZeRO-1's memory and speed.</summary>
    public static void Run() => WithData((cli, data, dir) =>
    {
        Throughput(cli, data, dir);
        Zero1(cli, data, dir);
    });

    /// <summary>ZeRO-1 alone.</summary>
    public static void RunZero1() => WithData(Zero1);

    /// <summary>Shards of the Tang poems with the gpt2 tokenizer in a temporary folder, and the built CLI.</summary>
    static void WithData(Action<string, string, string> bench)
    {
        string dir = Path.Combine(Path.GetTempPath(), "gptsharp-dp-bench-" + Guid.NewGuid().ToString("N"));
        try
        {
            ShardBuilder.Build(GptTokenizer.Load("gpt2"), "gpt2", new ShardOptions(["tang"], MaxDocuments: 4000), Path.Combine(dir, "data"));
            string cli = Path.Combine(AppContext.BaseDirectory, "../../../../../src/GptSharp.Cli/bin",
                new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name, "net10.0", "GptSharp.Cli.dll");
            bench(cli, Path.Combine(dir, "data"), dir);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    static void Throughput(string cli, string data, string dir)
    {
        Console.WriteLine("\n## Data parallelism: tiny, global batch 16, 40 steps (tokens/s over the last 20)");
        Console.WriteLine("| processes | threads each | train tok/s |");
        Console.WriteLine("|---|---|---|");
        foreach (var (processes, threads) in new[] { (1, 2), (1, 1), (2, 1) })
        {
            string run = Path.Combine(dir, $"run-{processes}-{threads}");
            string[] args = ["pretrain", "--preset", "tiny", "--data", data, "--run-dir", run, "--steps", "40",
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
}
