using System.Diagnostics;
using System.Text.Json;
using GptSharp.Data;

namespace GptSharp.Tests;

/// <summary>
/// `mpirun -np 2 gptsharp pretrain` against one process with the same global batch: the same losses, and ranks that never
/// diverge (the trainer checks parameter checksums). Needs Open MPI's mpirun (apt-get install openmpi-bin; .ci/run does).
/// </summary>
public class DataParallelTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    static string Cli()
    {
        // The test runs from tests/GptSharp.Tests/bin/<Configuration>/net10.0; the CLI is built beside it by the same solution build.
        var here = new DirectoryInfo(AppContext.BaseDirectory);
        string configuration = here.Parent!.Name;
        var root = here;
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "GptSharp.slnx"))) root = root.Parent;
        Assert.NotNull(root);
        string cli = Path.Combine(root!.FullName, "src", "GptSharp.Cli", "bin", configuration, "net10.0", "GptSharp.Cli.dll");
        Assert.True(File.Exists(cli), $"{cli} is missing: build the solution (dotnet test GptSharp.slnx builds it).");
        return cli;
    }

    static (int Code, string Output) Run(string file, params string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        Assert.True(process.WaitForExit(300_000), "the run did not finish in 5 minutes");
        return (process.ExitCode, stdout + stderr.Result);
    }

    static List<(int Step, double Loss)> Losses(string run) => [.. File.ReadLines(Path.Combine(run, "metrics.jsonl"))
        .Select(l => JsonDocument.Parse(l).RootElement).Select(e => (e.GetProperty("step").GetInt32(), e.GetProperty("loss").GetDouble()))];

    [Fact]
    public void TwoProcessesMatchOneWithTheSameGlobalBatch()
    {
        string mpirun = "/usr/bin/mpirun";
        Assert.True(File.Exists(mpirun), $"{mpirun} is missing: install Open MPI (apt-get install openmpi-bin), as .ci/run does.");
        using var dir = new TempDirectory();
        var tokenizer = fixture.Tokenizer;
        ShardBuilder.Build(tokenizer, fixture.Directory, new ShardOptions(["tang"], MaxDocuments: 400), dir.File("data"));
        string cli = Cli();
        string[] common = ["pretrain", "--data", dir.File("data"), "--layers", "2", "--width", "64", "--heads", "2", "--context", "32",
            "--steps", "12", "--batch-size", "8", "--warmup", "2", "--eval-every", "6", "--eval-batches", "2", "--threads", "1", "--quiet"];

        var single = Run("dotnet", [cli, .. common, "--run-dir", dir.File("one")]);
        Assert.True(single.Code == 0, single.Output);
        var parallel = Run(mpirun, ["--allow-run-as-root", "--oversubscribe", "-np", "2", "dotnet", cli, .. common, "--run-dir", dir.File("two")]);
        Assert.True(parallel.Code == 0, parallel.Output);
        Assert.DoesNotContain("diverged", parallel.Output);

        var one = Losses(dir.File("one"));
        var two = Losses(dir.File("two"));
        Assert.Equal(one.Select(x => x.Step), two.Select(x => x.Step)); // rank 0 alone wrote the metrics, each step once
        Assert.Equal([6, 10, 12], two.Select(x => x.Step));
        Assert.All(one.Zip(two), pair => Assert.Equal(pair.First.Loss, pair.Second.Loss, 3));
        Assert.True(Directory.Exists(Path.Combine(dir.File("two"), "checkpoint")));
    }
}
