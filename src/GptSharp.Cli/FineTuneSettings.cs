using System.ComponentModel;
using GptSharp.Models;
using GptSharp.Training;
using Spectre.Console.Cli;

namespace GptSharp.Cli;

/// <summary>The training options of the commands that may train LoRA adapters instead of every weight (sft, reward,
/// dpo, ppo, grpo).</summary>
public abstract class AdaptableSettings : TrainingSettings
{
    [CommandOption("--lora-rank")] [Description("Train LoRA adapters of this rank instead of every weight (0: every weight; on ppo: the actor and the critic's backbone).")]
    public int LoraRank { get; init; }
    [CommandOption("--lora-alpha")] [Description("LoRA scale numerator (scale = alpha / rank).")]
    public double? Alpha { get; init; }
    [CommandOption("--lora-targets")] [Description("Layers that get adapters, comma-separated, of c_attn, c_proj, c_fc, gate_proj, up_proj, down_proj.")]
    public string? Targets { get; init; }

    public override IEnumerable<object> Defaults => [.. base.Defaults, new LoraConfig()];

    /// <summary>The LoRA settings, or null for full fine-tuning.</summary>
    public override LoraConfig? Lora() => LoraRank > 0 ? OptionDefaults.Apply(this, new LoraConfig() with { Rank = LoraRank }).Validate() : null;
}

/// <summary>Options shared by the commands that fine-tune a run on conversations or preference pairs (sft, reward, dpo).</summary>
public abstract class FineTuneSettings : AdaptableSettings
{
    [CommandOption("--data")] [Description("`builtin` (tasks from the embedded corpora), `arithmetic` (sft: multi-digit + − × with the calculator offered, and without), `verse-rhyme` (sft: poem requests worked with the rhyme dictionary, and answered without it), `calculator-steps` (sft: (a × b) ± c worked in two calculator calls) or a .jsonl file.")]
    public string Data { get; init; } = "builtin";
    [CommandOption("--val")] [Description("Held-out .jsonl (default with a file: 5% of it, chosen by seed).")]
    public string? Val { get; init; }

    /// <summary>Reports each step to the progress display, and held-out losses as plain lines with --quiet.</summary>
    public Action<StepMetrics> StepReporter(Action<double, string?> progress) => m =>
    {
        progress(m.Step, $"loss {m.Loss:F3}" + (m.ValLoss is double v ? $" val {v:F3}" : ""));
        if (Quiet && m.ValLoss is double val) Console.WriteLine($"step {m.Step}: loss {m.Loss:F4}, held-out loss {val:F4}");
    };
}
