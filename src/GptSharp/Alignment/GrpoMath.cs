using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Alignment;

/// <summary>How GRPO turns rewards into advantages and token losses into one number.</summary>
public enum GrpoLoss
{
    /// <summary>DeepSeekMath's GRPO: advantages (r − mean) / std within the group; each answer's token losses averaged,
    /// then the answers averaged (a long answer's tokens weigh less).</summary>
    Grpo,
    /// <summary>Dr. GRPO (Liu et al. 2025, "GRPO done right"): advantages r − mean (no std scaling, which favours
    /// groups with little spread); token losses summed and divided by a constant (answers × length limit), so no
    /// length bias.</summary>
    DrGrpo,
    /// <summary>DAPO (Yu et al. 2025): std-scaled advantages, every token of the batch weighs the same (token-level
    /// mean), and a higher upper clip (ε_high) so unlikely tokens can still grow.</summary>
    Dapo,
}

/// <summary>
/// The arithmetic of group-relative policy optimisation: advantages from the rewards of G answers to one prompt, and
/// the clipped surrogate with its three normalisations. Pure functions, tested against hand-computed values.
/// </summary>
public static class GrpoMath
{
    /// <summary>
    /// Group-relative advantages: rewards are consecutive groups of <paramref name="groupSize"/> answers to one prompt;
    /// each answer's advantage is its reward minus its group's mean, divided by the group's standard deviation (sample,
    /// n − 1) + 1e-4 unless <paramref name="scaleByStd"/> is false. A group whose answers all scored the same gives 0.
    /// </summary>
    public static double[] GroupAdvantages(IReadOnlyList<double> rewards, int groupSize, bool scaleByStd)
    {
        if (groupSize < 2) throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize, "A group needs at least 2 answers.");
        if (rewards.Count % groupSize != 0) throw new ArgumentException($"{rewards.Count} rewards do not split into groups of {groupSize}.", nameof(rewards));
        var advantages = new double[rewards.Count];
        for (int start = 0; start < rewards.Count; start += groupSize)
        {
            double mean = 0;
            for (int i = 0; i < groupSize; i++) mean += rewards[start + i];
            mean /= groupSize;
            double variance = 0;
            for (int i = 0; i < groupSize; i++) variance += Math.Pow(rewards[start + i] - mean, 2);
            double std = Math.Sqrt(variance / (groupSize - 1));
            for (int i = 0; i < groupSize; i++)
                advantages[start + i] = scaleByStd ? (rewards[start + i] - mean) / (std + 1e-4) : rewards[start + i] - mean;
        }
        return advantages;
    }

    /// <summary>
    /// The GRPO loss of a minibatch. Per token: −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A) with ρ = exp(log π − log π_old),
    /// plus β·k3 against the reference when <paramref name="referenceLogProbabilities"/> is given (k3 = e^(ref − log π) −
    /// (ref − log π) − 1). logProbabilities, old, reference and mask are (B, R); advantages (B). Reduced as
    /// <paramref name="loss"/> says; <paramref name="maxNewTokens"/> is Dr. GRPO's constant.
    /// </summary>
    public static Tensor Loss(GrpoLoss loss, Tensor logProbabilities, Tensor oldLogProbabilities, Tensor advantages, Tensor mask,
        double clipLow, double clipHigh, int maxNewTokens, Tensor? referenceLogProbabilities = null, double beta = 0)
    {
        using var scope = NewDisposeScope();
        var ratio = (logProbabilities - oldLogProbabilities).exp();
        var a = advantages.unsqueeze(1).to(ratio.dtype);
        var perToken = -minimum(ratio * a, ratio.clamp(1 - clipLow, 1 + clipHigh) * a);
        if (referenceLogProbabilities is not null && beta != 0)
        {
            var toReference = referenceLogProbabilities - logProbabilities;
            perToken = perToken + beta * (toReference.exp() - toReference - 1);
        }
        perToken = perToken * mask;
        var reduced = loss switch
        {
            GrpoLoss.Grpo => (perToken.sum(1) / mask.sum(1).clamp_min(1)).mean(),
            GrpoLoss.DrGrpo => perToken.sum() / (mask.shape[0] * (double)maxNewTokens),
            GrpoLoss.Dapo => perToken.sum() / mask.sum().clamp_min(1),
            _ => throw new ArgumentOutOfRangeException(nameof(loss), loss, null),
        };
        return reduced.MoveToOuterDisposeScope();
    }
}
