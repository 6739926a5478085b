namespace GptSharp.Alignment;

/// <summary>
/// How the policy samples its answers in an RL rollout, the same for PPO and GRPO: the longest answer, the temperature
/// (log-probabilities are taken at it too, so the policy is optimised as it is sampled) and what samples.
/// </summary>
public sealed record RolloutSettings
{
    /// <summary>The longest answer, in tokens.</summary>
    public int MaxNewTokens { get; init; } = 64;
    public double Temperature { get; init; } = 1.0;
    /// <summary>What samples the rollouts (<see cref="Inference.Cpu.DecodeEngine"/>): <c>auto</c> is the CPU engine on a
    /// CPU for rollouts of up to <see cref="Inference.Cpu.DecodeEngine.AutoRowLimit"/> answers (the policy's weights
    /// packed afresh for each), libtorch for larger ones.</summary>
    public string Engine { get; init; } = Inference.Cpu.DecodeEngine.Auto;

    public RolloutSettings Validate()
    {
        if (MaxNewTokens < 1) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "Answers need at least one token.");
        if (Temperature <= 0) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Rollouts sample: the temperature must be > 0.");
        if (Inference.Cpu.DecodeEngine.Problem(Engine, nameof(Engine)) is { } problem) throw new ArgumentException(problem, nameof(Engine));
        return this;
    }
}
