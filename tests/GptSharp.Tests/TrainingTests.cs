using GptSharp.Runs;
using GptSharp.Runtime;
using GptSharp.Data;
using GptSharp.Models;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

public class TrainingTests
{
    static readonly GptConfig TinyConfig = GptConfig.Gpt2(vocab: 64, context: 16, layers: 2, heads: 2, width: 32);

    /// <summary>A shard of a repeating pattern with noise: learnable, so the loss must fall.</summary>
    static string MakeShard(TempDirectory dir, string name, int seed)
    {
        var random = new Random(seed);
        var tokens = Enumerable.Range(0, 6000).Select(i => i % 7 == 0 ? random.Next(64) : (i * 5) % 64).ToArray();
        string path = dir.File(name);
        TokenShard.Write(path, 64, [tokens]);
        return path;
    }

    static (List<double> Losses, TrainingResult Result) Train(string runDir, MappedTokenShard train, MappedTokenShard val, TrainingConfig config, bool resume, int? untilStep = null)
    {
        torch.manual_seed(1);
        using var model = new Gpt(TinyConfig);
        var loader = new TokenBatchLoader(train, config.BatchSize, 16, config.Seed);
        var losses = new List<double>();
        var source = new ShardBatchSource(loader);
        var trainer = new Trainer<TokenBatch>(model, config, runDir, "test", Pretraining.Objective(model, CPU), source,
            Pretraining.ValidationLoss(model, val, 4, 16, 2, CPU)) { OnStep = m => losses.Add(m.Loss) };
        int start = 0;
        if (resume)
        {
            var state = trainer.Resume();
            start = state.Step;
            loader = new TokenBatchLoader(train, config.BatchSize, 16, config.Seed, LoaderPosition.Parse(state.DataPosition));
            source = new ShardBatchSource(loader);
            trainer = new Trainer<TokenBatch>(model, config, runDir, "test", Pretraining.Objective(model, CPU), source,
                Pretraining.ValidationLoss(model, val, 4, 16, 2, CPU)) { OnStep = m => losses.Add(m.Loss) };
            trainer.Resume();
        }
        var result = trainer.Run(start, untilStep);
        return (losses, result);
    }

    static TrainingConfig Config(int steps) => new()
    {
        Steps = steps, BatchSize = 4, GradAccumulation = 2, LearningRate = 1e-2, WarmupSteps = 3, EvalEvery = 5, CheckpointEvery = 1000, LogEvery = 1,
    };

    [Fact]
    public void LossFallsAndMetricsAndCheckpointAreWritten()
    {
        using var dir = new TempDirectory();
        using var train = new MappedTokenShard(MakeShard(dir, "train.bin", 1));
        using var val = new MappedTokenShard(MakeShard(dir, "val.bin", 2));
        string run = dir.File("run");
        var (losses, result) = Train(run, train, val, Config(30), resume: false);
        Assert.Equal(30, losses.Count);
        Assert.True(losses.TakeLast(5).Average() < losses.Take(5).Average() - 1.0, $"loss did not fall: {losses.First():F2} -> {losses.Last():F2}");
        Assert.NotNull(result.FinalValLoss);
        Assert.True(result.FinalValLoss < Math.Log(64), $"val loss {result.FinalValLoss} is no better than chance");
        var records = MetricsLog.Read(Path.Combine(run, MetricsLog.FileName)).ToList();
        Assert.Equal(30, records.Count);
        Assert.Equal(6, records.Count(r => r["valLoss"] is not null)); // every 5 steps
        var (model, state) = Checkpoint.LoadModel(run);
        Assert.Equal(30, state.Step);
        Assert.Equal(TinyConfig, model.Config);
    }

    [Theory]
    [InlineData(OptimizerKind.AdamW)]
    [InlineData(OptimizerKind.Muon)]
    public void ResumingGivesExactlyTheSameLossesAsTrainingStraight(OptimizerKind optimizer)
    {
        using var dir = new TempDirectory();
        using var train = new MappedTokenShard(MakeShard(dir, "train.bin", 1));
        using var val = new MappedTokenShard(MakeShard(dir, "val.bin", 2));
        var config = Config(12) with { Optimizer = optimizer };
        var (straight, _) = Train(dir.File("straight"), train, val, config, resume: false);

        string split = dir.File("split");
        var (firstHalf, _) = Train(split, train, val, config, resume: false, untilStep: 6);
        var (secondHalf, _) = Train(split, train, val, config, resume: true);
        Assert.Equal(straight, firstHalf.Concat(secondHalf));
        if (optimizer == OptimizerKind.Muon)
        {
            Assert.True(straight.TakeLast(3).Average() < straight.Take(3).Average() - 0.5, $"Muon did not train: {straight[0]:F2} -> {straight[^1]:F2}");
            // A Muon checkpoint does not resume under AdamW, whose first moment means something else.
            var e = Assert.Throws<InvalidDataException>(() => Train(split, train, val, Config(14), resume: true));
            Assert.Contains("--optimizer muon", e.Message);
        }
        // metrics.jsonl holds each step once, in order
        Assert.Equal(Enumerable.Range(1, 12), MetricsLog.Read(Path.Combine(split, MetricsLog.FileName)).Select(r => r["step"]!.GetValue<int>()));
    }

    [Fact]
    public void AnInterruptedCheckpointSwapFallsBackToThePreviousOne()
    {
        using var dir = new TempDirectory();
        torch.manual_seed(0);
        using var model = new Gpt(TinyConfig);
        Checkpoint.Save(dir.Path, model, null, new TrainingState(7, "0:0", "", "t"));
        // Simulate a kill between the two renames: only checkpoint.old remains, plus a half-written temp folder.
        Directory.Move(dir.File(Checkpoint.Folder), dir.File(Checkpoint.Folder + ".old"));
        Directory.CreateDirectory(dir.File(Checkpoint.Folder + ".tmp"));
        var (_, state) = Checkpoint.LoadModel(dir.Path);
        Assert.Equal(7, state.Step);
        Assert.Throws<FileNotFoundException>(() => Checkpoint.LoadModel(dir.File("nowhere")));
    }

    [Fact]
    public void SafeTensorsRoundTripsAndRejectsBadFiles()
    {
        using var dir = new TempDirectory();
        using var scope = NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>
        {
            ["a.weight"] = randn(3, 5), ["b"] = arange(10, dtype: ScalarType.Int64), ["c"] = randn(4).to(ScalarType.BFloat16),
        };
        string path = dir.File("x.safetensors");
        SafeTensors.Save(path, tensors, new Dictionary<string, string> { ["k"] = "v" });
        var (loaded, metadata) = SafeTensors.Load(path);
        Assert.Equal("v", metadata["k"]);
        foreach (var (name, t) in tensors) Assert.True(t.equal(loaded[name]).all().item<bool>(), name);
        long headerLength = BitConverter.ToInt64(File.ReadAllBytes(path), 0);
        Assert.Equal(0, headerLength % 8);

        File.WriteAllBytes(dir.File("short.safetensors"), File.ReadAllBytes(path)[..^4]);
        var error = Assert.Throws<InvalidDataException>(() => SafeTensors.Load(dir.File("short.safetensors")));
        Assert.Contains("short.safetensors", error.Message);

        using var model = new Gpt(TinyConfig);
        SafeTensors.Save(dir.File("partial.safetensors"), new Dictionary<string, Tensor> { ["wte.weight"] = randn(64, 32) });
        error = Assert.Throws<InvalidDataException>(() => Checkpoint.LoadWeights(model, dir.File("partial.safetensors")));
        Assert.Contains("is missing", error.Message);
    }

    [Fact]
    public void ScheduleWarmsUpThenDecaysToTheFloor()
    {
        var config = new TrainingConfig { Steps = 100, LearningRate = 1.0, WarmupSteps = 10, MinLrRatio = 0.1 };
        Assert.Equal(0.1, config.LearningRateAt(0), 6);
        Assert.Equal(1.0, config.LearningRateAt(9), 6);
        Assert.Equal(0.1, config.LearningRateAt(99), 6);
        Assert.True(config.LearningRateAt(50) is < 1.0 and > 0.1);
        Assert.Equal("Steps", Assert.Throws<ArgumentOutOfRangeException>(() => new TrainingConfig { Steps = 0 }.Validate()).ParamName);
    }

    [Fact]
    public void WarmdownHoldsThePeakThenFallsLinearlyToTheFloor()
    {
        // 101 steps, 40% warmdown: the last 40 steps (60 → 100) fall in a straight line from 1.0 to 0.1.
        var config = new TrainingConfig { Steps = 101, LearningRate = 1.0, WarmupSteps = 10, MinLrRatio = 0.1, WarmdownRatio = 0.4 };
        Assert.Equal(0.1, config.LearningRateAt(0), 6);
        Assert.Equal(1.0, config.LearningRateAt(10), 6);
        Assert.Equal(1.0, config.LearningRateAt(60), 6);
        Assert.Equal(0.55, config.LearningRateAt(80), 6);
        Assert.Equal(0.1, config.LearningRateAt(100), 6);
        Assert.Equal(config.LearningRateAt(70) - config.LearningRateAt(71), config.LearningRateAt(90) - config.LearningRateAt(91), 9);
        Assert.Equal("WarmdownRatio", Assert.Throws<ArgumentOutOfRangeException>(() => (config with { WarmdownRatio = 1.5 }).Validate()).ParamName);
    }

    [Fact]
    public void AdamWMatchesTheTextbookUpdate()
    {
        using var scope = NewDisposeScope();
        var p = new TorchSharp.Modules.Parameter(tensor(new float[] { 1f, -2f, 3f, 0.5f }).reshape(2, 2));
        var optimizer = new AdamW([("p", p)], new TrainingConfig { WeightDecay = 0.1, Beta1 = 0.9, Beta2 = 0.95, Epsilon = 1e-8 });
        float[] gradient = [0.5f, -1f, 0.25f, 2f];
        p.grad = tensor(gradient).reshape(2, 2);
        optimizer.Step(lr: 0.01);
        float[] expected = new float[4];
        float[] start = [1f, -2f, 3f, 0.5f];
        for (int i = 0; i < 4; i++)
        {
            double m = 0.1 * gradient[i] / (1 - 0.9), v = 0.05 * gradient[i] * gradient[i] / (1 - 0.95);
            expected[i] = (float)(start[i] * (1 - 0.01 * 0.1) - 0.01 * m / (Math.Sqrt(v) + 1e-8));
        }
        Assert.Equal(expected, p.data<float>().ToArray(), new FloatTolerance(1e-6f));
    }

    [Fact]
    public void FusedAdamWMatchesTheTensorOpUpdateOverManySteps()
    {
        // fp32 CPU parameters take the one-pass kernel (vector body, scalar tail, several parallel chunks); fp64 ones
        // take the tensor-op path, which serves here as the reference.
        using var scope = NewDisposeScope();
        manual_seed(3);
        var config = new TrainingConfig { WeightDecay = 0.1, Beta1 = 0.9, Beta2 = 0.95, Epsilon = 1e-8 };
        var start = randn(1000, 203);
        var bias = randn(1003);
        var fused = (W: new TorchSharp.Modules.Parameter(start.clone()), B: new TorchSharp.Modules.Parameter(bias.clone()));
        var reference = (W: new TorchSharp.Modules.Parameter(start.to(ScalarType.Float64)), B: new TorchSharp.Modules.Parameter(bias.to(ScalarType.Float64)));
        var fusedOptimizer = new AdamW([("w", fused.W), ("b", fused.B)], config);
        var referenceOptimizer = new AdamW([("w", reference.W), ("b", reference.B)], config);
        for (int step = 0; step < 5; step++)
        {
            var gradW = randn(1000, 203); var gradB = randn(1003);
            fused.W.grad = gradW; fused.B.grad = gradB;
            reference.W.grad = gradW.to(ScalarType.Float64); reference.B.grad = gradB.to(ScalarType.Float64);
            fusedOptimizer.Step(lr: 0.01);
            referenceOptimizer.Step(lr: 0.01);
        }
        Assert.True(fused.W.to(ScalarType.Float64).allclose(reference.W, rtol: 1e-5, atol: 1e-6));
        Assert.True(fused.B.to(ScalarType.Float64).allclose(reference.B, rtol: 1e-5, atol: 1e-6));
        Assert.False(fused.W.allclose(start, rtol: 1e-3, atol: 1e-3)); // it did move
    }

    [Fact]
    public void DevicesResolveOrSayWhyNot()
    {
        // This build carries the CPU natives: auto picks the CPU, cuda names the problem, a typo is refused.
        Assert.Equal(cuda.is_available() ? "cuda" : "cpu", TorchRuntime.ResolveDevice("auto"));
        Assert.Equal("cpu", TorchRuntime.ResolveDevice("cpu"));
        if (!cuda.is_available())
            Assert.Contains("no CUDA device", Assert.Throws<InvalidOperationException>(() => TorchRuntime.ResolveDevice("cuda:0")).Message);
        Assert.Contains("expected cpu, cuda", Assert.Throws<ArgumentException>(() => TorchRuntime.ResolveDevice("gpu")).Message);
    }
}
