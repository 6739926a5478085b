using GptSharp.Models;
using System.ComponentModel;
using GptSharp.Training;
using Spectre.Console.Cli;

namespace GptSharp.Cli;

/// <summary>Options shared by the commands that fine-tune a run on conversations or preference pairs (sft, reward, dpo).</summary>
public class FineTuneSettings : CommonSettings
{
    [CommandOption("--data")] [Description("`builtin` (tasks from the embedded corpora) or a .jsonl file.")]
    public string Data { get; init; } = "builtin";
    [CommandOption("--val")] [Description("Held-out .jsonl (default with a file: 5% of it, chosen by seed).")]
    public string? Val { get; init; }
    [CommandOption("--resume")] public bool Resume { get; init; }
    [CommandOption("--device")] public string Device { get; init; } = "cpu";
    [CommandOption("--eval-every")] public int EvalEvery { get; init; } = 100;
    [CommandOption("--seed")] public long Seed { get; init; } = 1337;
    [CommandOption("--time-limit")] public double TimeLimit { get; init; }
    [CommandOption("--zero1")] [Description("Under mpirun: each process keeps the optimiser state of its share of the weights only (ZeRO-1).")]
    public bool Zero1 { get; init; }
    [CommandOption("--lora-rank")] [Description("Train LoRA adapters of this rank instead of every weight (0: full fine-tuning).")]
    public int LoraRank { get; init; }
    [CommandOption("--lora-alpha")] [Description("LoRA scale numerator (scale = alpha / rank).")]
    public double LoraAlpha { get; init; } = 16;
    [CommandOption("--lora-targets")] [Description("Layers that get adapters: c_attn, c_proj, c_fc, gate_proj, up_proj, down_proj.")]
    public string LoraTargets { get; init; } = "c_attn,c_proj,c_fc,gate_proj,up_proj,down_proj";

    /// <summary>The LoRA settings, or null for full fine-tuning.</summary>
    public GptSharp.Models.LoraConfig? Lora() => LoraRank > 0 ? new GptSharp.Models.LoraConfig(LoraRank, LoraAlpha, LoraTargets).Validate() : null;

    /// <summary>The training configuration from these options and the command's own step, batch and rate settings.</summary>
    public TrainingConfig Training(int steps, int batchSize, double learningRate, int warmupSteps, double weightDecay) => new()
    {
        Steps = steps, BatchSize = batchSize, LearningRate = learningRate, WarmupSteps = warmupSteps, EvalEvery = EvalEvery,
        CheckpointEvery = Math.Max(EvalEvery, 100), Seed = Seed, TimeLimitSeconds = TimeLimit, WeightDecay = weightDecay,
        ShardOptimizerState = Zero1,
    };

    /// <summary>Reports each step to the progress display, and held-out losses as plain lines with --quiet.</summary>
    public Action<StepMetrics> StepReporter(Action<double, string?> progress) => m =>
    {
        progress(m.Step, $"loss {m.Loss:F3}" + (m.ValLoss is double v ? $" val {v:F3}" : ""));
        if (Quiet && m.ValLoss is double val) Console.WriteLine($"step {m.Step}: loss {m.Loss:F4}, held-out loss {val:F4}");
    };
}
