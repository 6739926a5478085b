using System.Text.Json;
using GptSharp.Data;
using GptSharp.Models;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

/// <summary>
/// `mpirun -np 2 gptsharp pretrain` against one process with the same global batch: the same losses, and ranks that never
/// diverge (the trainer checks parameter checksums). Needs Open MPI's mpirun (apt-get install openmpi-bin; .ci/run does).
/// </summary>
public class DataParallelTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    static string Cli() => CliProcess.Dll;

    static (int Code, string Output) Run(string file, params string[] args) => CliProcess.Run(file, args);

    static List<(int Step, double Loss)> Losses(string run) => [.. File.ReadLines(Path.Combine(run, "metrics.jsonl"))
        .Select(l => JsonDocument.Parse(l).RootElement).Select(e => (e.GetProperty("step").GetInt32(), e.GetProperty("loss").GetDouble()))];

    [Theory]
    [InlineData("adamw")]
    [InlineData("muon")]
    public void TwoProcessesMatchOneWithTheSameGlobalBatch(string optimizer)
    {
        string mpirun = "/usr/bin/mpirun";
        Assert.True(File.Exists(mpirun), $"{mpirun} is missing: install Open MPI (apt-get install openmpi-bin), as .ci/run does.");
        using var dir = new TempDirectory();
        var tokenizer = fixture.Tokenizer;
        ShardBuilder.Build(tokenizer, fixture.Directory, new ShardOptions(["tang"], MaxDocuments: 400), dir.File("data"));
        string cli = Cli();
        string[] common = ["pretrain", "--data", dir.File("data"), "--layers", "2", "--width", "64", "--heads", "2", "--context", "32",
            "--steps", "12", "--batch-size", "8", "--warmup", "2", "--eval-every", "6", "--eval-batches", "2", "--threads", "1", "--quiet", "--optimizer", optimizer];

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

    /// <summary>The architecture options the recipe bench compares reach the model from the command line.</summary>
    [Fact]
    public void PretrainTakesTheActivationAndQkNormFromTheCommandLine()
    {
        using var dir = new TempDirectory();
        ShardBuilder.Build(fixture.Tokenizer, fixture.Directory, new ShardOptions(["tang"], MaxDocuments: 100), dir.File("data"));
        var run = Run("dotnet", [Cli(), "pretrain", "--data", dir.File("data"), "--preset", "tiny-llama", "--layers", "1", "--width", "32", "--heads", "2",
            "--context", "16", "--activation", "relusquared", "--qk-norm", "--steps", "2", "--batch-size", "2", "--warmup", "1", "--quiet", "--run-dir", dir.File("run")]);
        Assert.True(run.Code == 0, run.Output);
        var config = GptSharp.Runs.Checkpoint.ReadConfig(dir.File("run"));
        Assert.Equal(ActivationKind.ReluSquared, config.Activation);
        Assert.True(config.QkNorm);
        Assert.Equal(2, config.KvHeads);   // the preset's grouping kept: 2 heads, 2 key/value heads
        var (model, _) = GptSharp.Runs.Checkpoint.LoadModel(dir.File("run"));
        using (model)
        {
            var names = model.named_parameters().Select(p => p.name).ToList();
            Assert.Contains("h.0.attn.q_norm.weight", names);
            Assert.Contains("h.0.mlp.c_fc.weight", names);
            Assert.DoesNotContain("h.0.mlp.gate_proj.weight", names);
        }
    }

    /// <summary>Each objective family beyond pretraining: conversations (SFT), pairs (DPO; reward shares its batches) and
    /// BERT's masked LM — two processes give the losses of one with the same global batch.</summary>
    [Theory]
    [InlineData("sft")]
    [InlineData("dpo")]
    [InlineData("bert")]
    public void EveryObjectiveFamilyTrainsDataParallelAsOneProcess(string family)
    {
        using var dir = new TempDirectory();
        fixture.SaveInitialRun(dir.File("init"), context: 32);
        string[] schedule = ["--steps", "6", "--batch-size", "8", "--warmup", "1", "--eval-every", "3", "--threads", "1", "--quiet"];
        string[] command = family switch
        {
            "sft" => ["sft", "--from", dir.File("init"), "--lr", "3e-3", .. schedule],
            "dpo" => ["dpo", "--from", dir.File("init"), "--lr", "3e-3", .. schedule],
            _ => ["bert", "pretrain", "--tokenizer", fixture.Directory, "--corpus", "tang", "--max-documents", "300", "--context", "32", "--held-out", "0.1", "--dropout", "0", .. schedule],   // dropout draws differ per process
        };
        var (one, two) = OneAndTwoProcesses(dir, command);
        Assert.Equal([3, 6], one.Select(x => x.Step));
        Assert.Equal(one.Select(x => x.Step), two.Select(x => x.Step));
        Assert.All(one.Zip(two), pair => Assert.Equal(pair.First.Loss, pair.Second.Loss, 3));
        Assert.NotEqual(one[0].Loss, one[1].Loss, 3);   // it trained: a loop that stood still would match trivially
    }

    [Fact]
    public void PpoUnderMpirunRefusesInOneLineAndWritesNothing()
    {
        using var dir = new TempDirectory();
        var config = fixture.SaveInitialRun(dir.File("sft"), context: 32);
        using (var reward = new GptSharp.Alignment.RewardModel(config))
            GptSharp.Runs.Checkpoint.Save(dir.File("reward"), reward, config, null, new GptSharp.Runs.TrainingState(0, "0:0", "", fixture.Directory));
        var run = Run("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-np", "2", "dotnet", Cli(), "ppo", "--sft", dir.File("sft"),
            "--reward", dir.File("reward"), "--run-dir", dir.File("ppo"), "--steps", "4", "--threads", "1", "--quiet"]);
        Assert.NotEqual(0, run.Code);
        Assert.Contains("ppo does not train data-parallel: run it as one process, without mpirun.", run.Output);
        Assert.False(Directory.Exists(dir.File("ppo")) && Directory.EnumerateFileSystemEntries(dir.File("ppo")).Any(), "a refused run wrote files");
    }

    static (List<(int Step, double Loss)> One, List<(int Step, double Loss)> Two) OneAndTwoProcesses(TempDirectory dir, string[] command)
    {
        string mpirun = "/usr/bin/mpirun";
        Assert.True(File.Exists(mpirun), $"{mpirun} is missing: install Open MPI (apt-get install openmpi-bin), as .ci/run does.");
        var single = Run("dotnet", [Cli(), .. command, "--run-dir", dir.File("one")]);
        Assert.True(single.Code == 0, single.Output);
        var parallel = Run(mpirun, ["--allow-run-as-root", "--oversubscribe", "-np", "2", "dotnet", Cli(), .. command, "--run-dir", dir.File("two")]);
        Assert.True(parallel.Code == 0, parallel.Output);
        Assert.DoesNotContain("diverged", parallel.Output);
        return (Losses(dir.File("one")), Losses(dir.File("two")));
    }

    [Theory]
    [InlineData("adamw")]
    [InlineData("muon")]
    public void ShardedOptimizerStateTrainsAndResumesBitForBitLikeTheReplicatedOne(string optimizer)
    {
        string mpirun = "/usr/bin/mpirun";
        Assert.True(File.Exists(mpirun), $"{mpirun} is missing: install Open MPI (apt-get install openmpi-bin), as .ci/run does.");
        using var dir = new TempDirectory();
        ShardBuilder.Build(fixture.Tokenizer, fixture.Directory, new ShardOptions(["tang"], MaxDocuments: 400), dir.File("data"));
        string cli = Cli();
        string[] common = ["pretrain", "--data", dir.File("data"), "--layers", "2", "--width", "64", "--heads", "2", "--context", "32",
            "--batch-size", "8", "--warmup", "2", "--eval-every", "5", "--eval-batches", "2", "--threads", "1", "--quiet", "--optimizer", optimizer];
        string[] twoProcesses = ["--allow-run-as-root", "--oversubscribe", "-np", "2", "dotnet", cli, .. common];

        (int, string) Train(string run, bool zero1, int steps, bool resume = false) =>
            Run(mpirun, [.. twoProcesses, "--run-dir", dir.File(run), "--steps", steps.ToString(), .. zero1 ? new[] { "--zero1" } : [], .. resume ? new[] { "--resume" } : []]);

        foreach (var (run, zero1) in new[] { ("replicated", false), ("sharded", true) })
        {
            var result = Train(run, zero1, steps: 10);
            Assert.True(result.Item1 == 0, result.Item2);
            // Both processes say what share they hold; together, every parameter's state exactly once.
            var shares = System.Text.RegularExpressions.Regex.Matches(result.Item2, @"ZeRO-1: this process holds optimiser state for ([\d,]+) of ([\d,]+) parameters")
                .Select(m => (Held: long.Parse(m.Groups[1].Value.Replace(",", "")), Total: long.Parse(m.Groups[2].Value.Replace(",", "")))).ToList();
            Assert.Equal(zero1 ? 2 : 0, shares.Count);
            if (zero1)
            {
                Assert.Equal(shares[0].Total, shares.Sum(s => s.Held));
                Assert.All(shares, s => Assert.InRange(s.Held, s.Total / 4, s.Total * 3 / 4));
            }
        }
        // Each process updated half the weights and broadcast them; the root gathered the other half's moments for the checkpoint.
        Assert.Equal(Losses(dir.File("replicated")), Losses(dir.File("sharded")));
        foreach (string file in new[] { "model.safetensors", "optimizer.safetensors" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(dir.File("replicated"), "checkpoint", file)), File.ReadAllBytes(Path.Combine(dir.File("sharded"), "checkpoint", file)));

        // Resuming: each sharded process reads its own share of the moments back.
        foreach (var (run, zero1) in new[] { ("replicated", false), ("sharded", true) })
        {
            var result = Train(run, zero1, steps: 15, resume: true);
            Assert.True(result.Item1 == 0, result.Item2);
        }
        var replicated = Losses(dir.File("replicated"));
        Assert.Contains(replicated, x => x.Step == 15);
        Assert.Equal(replicated, Losses(dir.File("sharded")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir.File("replicated"), "checkpoint", "optimizer.safetensors")),
                     File.ReadAllBytes(Path.Combine(dir.File("sharded"), "checkpoint", "optimizer.safetensors")));

        var single = Run("dotnet", [cli, .. common, "--run-dir", dir.File("single"), "--steps", "4", "--zero1"]);
        Assert.NotEqual(0, single.Code);
        Assert.Contains("mpirun -np N, or drop --zero1", single.Output);
    }

    [Fact]
    public void ShardingSplitsTheOptimiserStateIntoContiguousBalancedSharesAndUpdatesOnlyItsOwn()
    {
        torch.manual_seed(3);
        using var dir = new TempDirectory();
        using var model = new Gpt(GptConfig.Gpt2(fixture.Tokenizer.VocabSize, 32, layers: 2, heads: 2, width: 64));
        var shares = new List<int[]>();
        for (int rank = 0; rank < 2; rank++)
        {
            using var optimizer = new AdamW(model.named_parameters(), new TrainingConfig());
            long full = optimizer.StateElements;
            optimizer.Shard(rank, 2);
            var owners = Enumerable.Range(0, model.parameters().Count()).Select(optimizer.OwnerOf).ToArray();
            shares.Add(owners);
            Assert.Equal(owners.Order(), owners); // one contiguous run per process
            Assert.InRange(optimizer.StateElements, full / 4, full * 3 / 4);

            var before = model.parameters().Select(p => p.detach().clone()).ToList();
            foreach (var p in model.parameters()) p.grad = ones_like(p);
            optimizer.Step(1e-2);
            var changed = model.parameters().Select((p, i) => !p.eq(before[i]).all().item<bool>()).ToArray();
            Assert.Equal(owners.Select(o => o == rank), changed); // exactly its own parameters moved
            using (no_grad()) foreach (var (p, old) in model.parameters().Zip(before)) p.copy_(old);
            optimizer.ZeroGrad();

            var e = Assert.Throws<InvalidOperationException>(() => optimizer.Save(dir.File("optimizer.safetensors")));
            Assert.Contains("on another process", e.Message);
        }
        Assert.Equal(shares[0], shares[1]); // both processes agree who owns what
        Assert.Contains(0, shares[0]);
        Assert.Contains(1, shares[0]);
    }
}
