using GptSharp.Models;

namespace GptSharp.Training;

/// <summary>
/// Where and how a training run runs, the same for every trainer (pretraining, SFT, reward, DPO, PPO, GRPO, BERT): its
/// folder, whether it continues the checkpoint there, the device, LoRA adapters instead of every weight, a report
/// after each step, and cancellation.
/// </summary>
/// <param name="Directory">The run folder: checkpoints, <c>config.json</c>, metrics, the plot.</param>
public sealed record RunOptions(string Directory)
{
    /// <summary>Continue the checkpoint in <see cref="Directory"/> (the same model and objective) instead of starting afresh.</summary>
    public bool Resume { get; init; }
    /// <summary>cpu, cuda, cuda:N or auto.</summary>
    public string Device { get; init; } = "cpu";
    /// <summary>Train adapters of this shape instead of every weight (null: every weight; pretraining and BERT train every weight).</summary>
    public LoraConfig? Lora { get; init; }
    public Action<StepMetrics>? OnStep { get; init; }
    public CancellationToken Cancellation { get; init; }
    /// <summary>Stop after this step with a checkpoint, as a killed run would (RL and BERT runs; for tests of resuming).</summary>
    public int? UntilStep { get; init; }

    /// <summary>What every trainer reads of the options, in one line: <c>var (runDirectory, resume, device, onStep, cancellation) = options;</c>.</summary>
    public void Deconstruct(out string directory, out bool resume, out string device, out Action<StepMetrics>? onStep, out CancellationToken cancellation) =>
        (directory, resume, device, onStep, cancellation) = (Directory, Resume, Device, OnStep, Cancellation);

    /// <summary>Refuses LoRA for a trainer that trains every weight, naming it.</summary>
    public void RejectLora(string trainer)
    {
        if (Lora is not null) throw new ArgumentException($"{trainer} trains every weight; LoRA adapters are for fine-tuning (sft, reward, dpo, ppo, grpo).", nameof(Lora));
    }
}
