using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Alignment;

/// <summary>KL estimators between the policy and the reference, per token, from log-probabilities of the sampled tokens.</summary>
public enum KlEstimator
{
    /// <summary>k1 = log π − log π_ref: unbiased, can be negative per token.</summary>
    K1,
    /// <summary>k3 = (r − 1) − log r with r = π_ref / π: unbiased, never negative, lower variance.</summary>
    K3,
}

/// <summary>
/// The arithmetic of PPO for language models (InstructGPT, ColossalChat, TRL), on (B, T) tensors over response
/// tokens with a 0/1 mask: KL estimators, rewards with the KL penalty folded in, GAE, whitening, clipped policy and
/// value losses, entropy. Pure functions, so each is tested against hand-computed values.
/// </summary>
public static class PpoMath
{
    /// <summary>Per-token KL estimate from the sampled tokens' log-probabilities under the policy and the reference.</summary>
    public static Tensor Kl(Tensor logProbabilities, Tensor referenceLogProbabilities, KlEstimator estimator)
    {
        using var scope = NewDisposeScope();
        var logRatio = logProbabilities - referenceLogProbabilities;
        var kl = estimator == KlEstimator.K1 ? logRatio : (-logRatio).exp() - 1 + logRatio;
        return kl.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Per-token rewards: −β·KL at every response token, plus the reward model's score at the last response token.
    /// mask (B, T) marks response tokens; scores (B).
    /// </summary>
    public static Tensor TokenRewards(Tensor kl, Tensor scores, Tensor mask, double klCoefficient)
    {
        using var scope = NewDisposeScope();
        var rewards = -klCoefficient * kl * mask;
        var lastIndex = (mask.sum(1) - 1).clamp_min(0).to(ScalarType.Int64); // responses start at position 0 of the (B, T) response window
        rewards = rewards.scatter_add(1, lastIndex.unsqueeze(1), scores.unsqueeze(1).to(rewards.dtype));
        return rewards.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Generalised advantage estimation, backwards over time: δ_t = r_t + γ·V_{t+1} − V_t and A_t = δ_t + γλ·A_{t+1},
    /// with V and A taken as 0 past the end of each response. Returns (advantages, returns = advantages + values).
    /// </summary>
    public static (Tensor Advantages, Tensor Returns) Gae(Tensor rewards, Tensor values, Tensor mask, double gamma, double lambda)
    {
        using var scope = NewDisposeScope();
        long t = rewards.shape[1];
        var advantages = zeros_like(rewards);
        var nextValue = zeros(rewards.shape[0], dtype: rewards.dtype, device: rewards.device);
        var nextAdvantage = zeros_like(nextValue);
        for (long i = t - 1; i >= 0; i--)
        {
            var m = mask[.., i];
            var delta = rewards[.., i] + gamma * nextValue - values[.., i];
            var advantage = (delta + gamma * lambda * nextAdvantage) * m;
            advantages[.., i] = advantage;
            nextValue = values[.., i] * m;
            nextAdvantage = advantage;
        }
        var returns = advantages + values * mask;
        return (advantages.MoveToOuterDisposeScope(), returns.MoveToOuterDisposeScope());
    }

    /// <summary>Mean of x over the masked entries.</summary>
    public static Tensor MaskedMean(Tensor x, Tensor mask) => (x * mask).sum() / mask.sum().clamp_min(1);

    /// <summary>Advantage whitening: zero mean, unit variance over the masked entries (masked-out entries stay 0).</summary>
    public static Tensor Whiten(Tensor x, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var mean = MaskedMean(x, mask);
        var variance = MaskedMean((x - mean).pow(2), mask);
        return ((x - mean) * rsqrt(variance + 1e-8) * mask).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// PPO's clipped surrogate: −min(ρ·A, clip(ρ, 1−ε, 1+ε)·A) with ρ = exp(log π − log π_old), averaged over the mask;
    /// also the share of tokens where the clip was active.
    /// </summary>
    public static (Tensor Loss, Tensor ClipFraction) PolicyLoss(Tensor logProbabilities, Tensor oldLogProbabilities, Tensor advantages, Tensor mask, double clip)
    {
        using var scope = NewDisposeScope();
        var ratio = (logProbabilities - oldLogProbabilities).exp();
        var unclipped = ratio * advantages;
        var clipped = ratio.clamp(1 - clip, 1 + clip) * advantages;
        var loss = MaskedMean(-minimum(unclipped, clipped), mask);
        var clipFraction = MaskedMean((clipped < unclipped).to(ScalarType.Float32), mask);
        return (loss.MoveToOuterDisposeScope(), clipFraction.MoveToOuterDisposeScope());
    }

    /// <summary>Clipped value loss: ½·max((V − R)², (V_old + clip(V − V_old, −ε, ε) − R)²), averaged over the mask.</summary>
    public static Tensor ValueLoss(Tensor values, Tensor oldValues, Tensor returns, Tensor mask, double clip)
    {
        using var scope = NewDisposeScope();
        var clipped = oldValues + (values - oldValues).clamp(-clip, clip);
        var loss = 0.5 * MaskedMean(maximum((values - returns).pow(2), (clipped - returns).pow(2)), mask);
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>Mean entropy of the next-token distributions: logits (B, T, V), mask (B, T).</summary>
    public static Tensor Entropy(Tensor logits, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var logP = logits.log_softmax(-1);
        var entropy = -(logP.exp() * logP).sum(-1);
        return MaskedMean(entropy, mask).MoveToOuterDisposeScope();
    }
}
