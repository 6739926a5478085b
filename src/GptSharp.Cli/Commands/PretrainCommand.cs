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

sealed class PretrainSettings : TrainingSettings
{
    [CommandOption("--preset")] [Description("tiny, tiny-llama, small, small-llama or gpt2-124m.")]
    public string Preset { get; init; } = "tiny";
    [CommandOption("--data")] [Description("Folder with train.bin, val.bin and meta.json (from `data prepare`).")]
    public string Data { get; init; } = "runs/data";
    [CommandOption("-r|--run-dir")] [Description("Folder for checkpoints, metrics.jsonl and loss.png.")]
    public string RunDir { get; init; } = "runs/pretrain";
    protected override TrainingConfig StageDefaults => PretrainRun.Defaults;

    // Model overrides: named as GptConfig's properties, applied over the preset.
    [CommandOption("--context")] [Description("Context length in tokens (default: the preset's).")]
    public int? ContextLength { get; init; }
    [CommandOption("--layers")] [Description("Transformer blocks (default: the preset's).")]
    public int? Layers { get; init; }
    [CommandOption("--heads")] [Description("Attention heads (default: the preset's).")]
    public int? Heads { get; init; }
    [CommandOption("--kv-heads")] [Description("Key/value heads for grouped-query attention (default: the preset's, or --heads).")]
    public int? KvHeads { get; init; }
    [CommandOption("--width")] [Description("Embedding width (default: the preset's).")]
    public int? Width { get; init; }
    [CommandOption("--mlp-ratio")] [Description("MLP hidden width ÷ width (default: the preset's).")]
    public double? MlpRatio { get; init; }
    [CommandOption("--dropout")] [Description("Dropout rate (default: the preset's).")]
    public double? Dropout { get; init; }
    [CommandOption("--norm")] [Description("LayerNorm or RmsNorm (default: the preset's).")]
    public NormKind? Norm { get; init; }
    [CommandOption("--positions")] [Description("Learned or Rotary (default: the preset's).")]
    public PositionKind? Positions { get; init; }
    [CommandOption("--activation")] [Description("GeluTanh, SwiGlu or ReluSquared (relu(x)², ungated) (default: the preset's).")]
    public ActivationKind? Activation { get; init; }
    [CommandOption("--bias")] [Description("Biases in linear layers and norms (default: the preset's).")]
    public bool? Bias { get; init; }
    [CommandOption("--tied-embeddings")] [Description("Share the token embedding with the output head (default: the preset's).")]
    public bool? TiedEmbeddings { get; init; }
    [CommandOption("--qk-norm")] [Description("RMSNorm over each head's queries and keys before attention, as Qwen3 and the speedruns (default: the preset's).")]
    public bool? QkNorm { get; init; }
    [CommandOption("--parallel-block")] [Description("Attention and MLP side by side, as PaLM (default: the preset's).")]
    public bool? ParallelBlock { get; init; }
}

/// <summary><c>gptsharp pretrain</c>: next-token training on prepared shards.</summary>
sealed class PretrainCommand : Command<PretrainSettings>
{
    public override int Execute(CommandContext context, PretrainSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var preset = GptConfig.Preset(s.Preset, ShardSummary.Load(s.Data).VocabSize);
        // Fewer heads keep multi-head attention unless the preset groups its keys and values.
        var config = OptionDefaults.Apply(s, preset with { KvHeads = s.Heads is int h && preset.KvHeads == preset.Heads ? h : preset.KvHeads }).Validate();
        var training = s.Training().Validate();

        TrainingResult result = null!;
        ProgressDisplay.Run("pretrain", training.Steps, "steps", s.Quiet, (Action<double, string?> report) =>
        {
            result = PretrainRun.Execute(config, training, s.Data, s.Run(s.RunDir, runtime.Device, m =>
                {
                    report(m.Step, $"loss {m.Loss:F3} lr {m.LearningRate:E1} {m.TokensPerSecond:N0} tok/s");
                    if (s.Quiet && (m.Step % training.LogEvery == 0 || m.ValLoss is not null)) Log(m);
                }, cancellation),
                onStart: (model, start, optimizer) =>
                {
                    report(start, null);
                    if (optimizer.IsSharded)
                        Console.WriteLine($"ZeRO-1: this process holds optimiser state for {optimizer.StateElements / 2:N0} of {model.ParameterCount:N0} parameters " +
                                          $"({optimizer.StateElements * 4 / 1e6:F1} MB).");
                    long tokensPerStep = (long)training.BatchSize * training.GradAccumulation * config.ContextLength;
                    Console.WriteLine($"{(start > 0 ? $"Resumed at step {start}. " : "")}Model: {model.ParameterCount / 1e6:F2}M parameters ({s.Preset}: {config.Layers} layers, " +
                                      $"width {config.Width}, {config.Heads} heads, context {config.ContextLength}); {tokensPerStep:N0} tokens/step; {runtime.Threads} threads on {runtime.Device}.");
                });
            return result;
        });
        AnsiConsole.MarkupLine($"Done: {result.StepsDone} steps in {result.Seconds:F0} s; train loss {result.FinalLoss:F3}, val loss {result.FinalValLoss:F3}. " +
                               $"Checkpoint in {Markup.Escape(Path.Combine(s.RunDir, Checkpoint.Folder))}, plot {Markup.Escape(Path.Combine(s.RunDir, LossPlot.FileName))}.");
        return 0;
    }

    static void Log(StepMetrics m) => Console.WriteLine(
        $"step {m.Step}: loss {m.Loss:F4}, lr {m.LearningRate:E2}, grad norm {m.GradNorm:F2}, {m.TokensPerSecond:N0} tok/s" + (m.ValLoss is double v ? $", val loss {v:F4}" : ""));

}
