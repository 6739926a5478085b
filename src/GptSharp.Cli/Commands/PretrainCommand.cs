using GptSharp.Runs;
using GptSharp.Runtime;
using System.ComponentModel;
using System.Text.Json;
using GptSharp.Data;
using GptSharp.Models;
using GptSharp.Training;
using Spectre.Console;
using Spectre.Console.Cli;
using TorchSharp;

namespace GptSharp.Cli.Commands;

sealed class PretrainSettings : CommonSettings
{
    [CommandOption("--preset")] [Description("tiny, tiny-llama, small, small-llama or gpt2-124m.")]
    public string Preset { get; init; } = "tiny";
    [CommandOption("--data")] [Description("Folder with train.bin, val.bin and meta.json (from `data prepare`).")]
    public string Data { get; init; } = "runs/data";
    [CommandOption("-r|--run-dir")] [Description("Folder for checkpoints, metrics.jsonl and loss.png.")]
    public string RunDir { get; init; } = "runs/pretrain";
    [CommandOption("--resume")] [Description("Continue from the run folder's checkpoint.")]
    public bool Resume { get; init; }
    [CommandOption("--device")] [Description("cpu, cuda, cuda:N or auto.")]
    public string Device { get; init; } = "cpu";

    // Training overrides.
    [CommandOption("--steps")] public int? Steps { get; init; }
    [CommandOption("--batch-size")] public int? BatchSize { get; init; }
    [CommandOption("--grad-accum")] public int? GradAccumulation { get; init; }
    [CommandOption("--lr")] public double? LearningRate { get; init; }
    [CommandOption("--min-lr-ratio")] public double? MinLrRatio { get; init; }
    [CommandOption("--warmup")] public int? WarmupSteps { get; init; }
    [CommandOption("--weight-decay")] public double? WeightDecay { get; init; }
    [CommandOption("--grad-clip")] public double? GradClip { get; init; }
    [CommandOption("--eval-every")] public int? EvalEvery { get; init; }
    [CommandOption("--eval-batches")] public int? EvalBatches { get; init; }
    [CommandOption("--checkpoint-every")] public int? CheckpointEvery { get; init; }
    [CommandOption("--seed")] public long? Seed { get; init; }
    [CommandOption("--time-limit")] [Description("Stop (with a checkpoint) after this many seconds.")]
    public double? TimeLimit { get; init; }
    [CommandOption("--zero1")] [Description("Under mpirun: each process keeps the optimiser state of its share of the weights only (ZeRO-1).")]
    public bool Zero1 { get; init; }

    // Model overrides.
    [CommandOption("--context")] public int? ContextLength { get; init; }
    [CommandOption("--layers")] public int? Layers { get; init; }
    [CommandOption("--heads")] public int? Heads { get; init; }
    [CommandOption("--kv-heads")] public int? KvHeads { get; init; }
    [CommandOption("--width")] public int? Width { get; init; }
    [CommandOption("--mlp-ratio")] public double? MlpRatio { get; init; }
    [CommandOption("--dropout")] public double? Dropout { get; init; }
    [CommandOption("--norm")] [Description("LayerNorm or RmsNorm.")] public NormKind? Norm { get; init; }
    [CommandOption("--positions")] [Description("Learned or Rotary.")] public PositionKind? Positions { get; init; }
    [CommandOption("--activation")] [Description("GeluTanh or SwiGlu.")] public ActivationKind? Activation { get; init; }
    [CommandOption("--bias")] public bool? Bias { get; init; }
    [CommandOption("--tied-embeddings")] public bool? TiedEmbeddings { get; init; }
    [CommandOption("--parallel-block")] public bool? ParallelBlock { get; init; }
}

/// <summary><c>gptsharp pretrain</c>: next-token training on prepared shards.</summary>
sealed class PretrainCommand : Command<PretrainSettings>
{
    public override int Execute(CommandContext context, PretrainSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var preset = GptConfig.Preset(s.Preset, ShardSummary.Load(s.Data).VocabSize);
        var config = (preset with
        {
            ContextLength = s.ContextLength ?? preset.ContextLength, Layers = s.Layers ?? preset.Layers, Heads = s.Heads ?? preset.Heads,
            KvHeads = s.KvHeads ?? (s.Heads is int h && preset.KvHeads == preset.Heads ? h : preset.KvHeads), Width = s.Width ?? preset.Width,
            MlpRatio = s.MlpRatio ?? preset.MlpRatio, Dropout = s.Dropout ?? preset.Dropout, Norm = s.Norm ?? preset.Norm,
            Positions = s.Positions ?? preset.Positions, Activation = s.Activation ?? preset.Activation, Bias = s.Bias ?? preset.Bias,
            TiedEmbeddings = s.TiedEmbeddings ?? preset.TiedEmbeddings, ParallelBlock = s.ParallelBlock ?? preset.ParallelBlock,
        }).Validate();
        var defaults = new TrainingConfig();
        var training = new TrainingConfig
        {
            Steps = s.Steps ?? defaults.Steps, BatchSize = s.BatchSize ?? defaults.BatchSize, GradAccumulation = s.GradAccumulation ?? defaults.GradAccumulation,
            LearningRate = s.LearningRate ?? defaults.LearningRate, MinLrRatio = s.MinLrRatio ?? defaults.MinLrRatio, WarmupSteps = s.WarmupSteps ?? defaults.WarmupSteps,
            WeightDecay = s.WeightDecay ?? defaults.WeightDecay, GradClip = s.GradClip ?? defaults.GradClip, EvalEvery = s.EvalEvery ?? defaults.EvalEvery,
            EvalBatches = s.EvalBatches ?? defaults.EvalBatches, CheckpointEvery = s.CheckpointEvery ?? defaults.CheckpointEvery, Seed = s.Seed ?? defaults.Seed,
            TimeLimitSeconds = s.TimeLimit ?? defaults.TimeLimitSeconds, ShardOptimizerState = s.Zero1,
        }.Validate();

        TrainingResult result = null!;
        ProgressDisplay.Run("pretrain", training.Steps, "steps", s.Quiet, (Action<double, string?> report) =>
        {
            result = PretrainRun.Execute(config, training, s.Data, s.RunDir, s.Resume, runtime.Device,
                onStart: (model, start, optimizer) =>
                {
                    report(start, null);
                    if (optimizer.IsSharded)
                        Console.WriteLine($"ZeRO-1: this process holds optimiser state for {optimizer.StateElements / 2:N0} of {model.ParameterCount:N0} parameters " +
                                          $"({optimizer.StateElements * 4 / 1e6:F1} MB).");
                    long tokensPerStep = (long)training.BatchSize * training.GradAccumulation * config.ContextLength;
                    Console.WriteLine($"{(start > 0 ? $"Resumed at step {start}. " : "")}Model: {model.ParameterCount / 1e6:F2}M parameters ({s.Preset}: {config.Layers} layers, " +
                                      $"width {config.Width}, {config.Heads} heads, context {config.ContextLength}); {tokensPerStep:N0} tokens/step; {runtime.Threads} threads on {runtime.Device}.");
                },
                onStep: m =>
                {
                    report(m.Step, $"loss {m.Loss:F3} lr {m.LearningRate:E1} {m.TokensPerSecond:N0} tok/s");
                    if (s.Quiet && (m.Step % training.LogEvery == 0 || m.ValLoss is not null)) Log(m);
                },
                cancellation: cancellation);
            return result;
        });
        AnsiConsole.MarkupLine($"Done: {result.StepsDone} steps in {result.Seconds:F0} s; train loss {result.FinalLoss:F3}, val loss {result.FinalValLoss:F3}. " +
                               $"Checkpoint in {Markup.Escape(Path.Combine(s.RunDir, Checkpoint.Folder))}, plot {Markup.Escape(Path.Combine(s.RunDir, LossPlot.FileName))}.");
        return 0;
    }

    static void Log(StepMetrics m) => Console.WriteLine(
        $"step {m.Step}: loss {m.Loss:F4}, lr {m.LearningRate:E2}, grad norm {m.GradNorm:F2}, {m.TokensPerSecond:N0} tok/s" + (m.ValLoss is double v ? $", val loss {v:F4}" : ""));

}
