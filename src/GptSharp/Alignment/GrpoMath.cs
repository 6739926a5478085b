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
    /// <summary>GSPO (Zheng et al. 2025, Qwen): one importance ratio per answer, the geometric mean of its tokens' ratios
    /// exp(mean(log π − log π_old)), clipped at the sequence level (ε 3e-4 / 4e-4) in the surrogate; answers averaged.</summary>
    Gspo,
    /// <summary>CISPO (MiniMax-M1, 2025): every token keeps its gradient — the loss is −sg(clip(ρ, 0, 1 + ε_high))·A·log π,
    /// the ratio clipped and detached as a weight instead of the surrogate being cut; token-level mean.</summary>
    Cispo,
}

/// <summary>How each answer's reward becomes its advantage before any scaling.</summary>
public enum AdvantageEstimator
{
    /// <summary>The reward minus its group's mean.</summary>
    Grpo,
    /// <summary>RLOO (Ahmadian et al. 2024): the reward minus the mean of the other answers to the same prompt, which is
    /// G/(G − 1) times the reward minus the group's mean — an unbiased baseline.</summary>
    Rloo,
    /// <summary>REINFORCE++ with a baseline (Hu et al. 2025): the reward minus its group's mean, scaled by the standard
    /// deviation of those values over the whole batch (not the group's, which overweights groups that barely differ).</summary>
    ReinforcePlusPlus,
}

/// <summary>How the gap between the rollout engine's log-probabilities and the trainer's is corrected.</summary>
public enum ImportanceCorrection
{
    None,
    /// <summary>Truncated importance sampling: each token's loss times min(π_trainer / π_sampler, cap).</summary>
    Tis,
    /// <summary>Masked importance sampling: tokens (or answers) whose ratio lies outside [1/cap, cap] are left out.</summary>
    Mis,
}

/// <summary>What an advantage is divided by (TRL's <c>scale_rewards</c>).</summary>
public enum RewardScaling
{
    /// <summary>The standard deviation of its group's rewards (+1e-4).</summary>
    Group,
    /// <summary>The standard deviation of the centred advantages over the whole batch (+1e-4).</summary>
    Batch,
    /// <summary>Nothing (Dr. GRPO's choice: scaling favours groups with little spread).</summary>
    None,
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
    public static double[] GroupAdvantages(IReadOnlyList<double> rewards, int groupSize, bool scaleByStd) =>
        Advantages(rewards, groupSize, AdvantageEstimator.Grpo, scaleByStd ? RewardScaling.Group : RewardScaling.None);

    /// <summary>
    /// Advantages of consecutive groups of <paramref name="groupSize"/> answers to one prompt: centred as
    /// <paramref name="estimator"/> says, then divided as <paramref name="scaling"/> says. Standard deviations are
    /// sample ones (n − 1). A group whose answers all scored the same gives 0 under every estimator.
    /// </summary>
    public static double[] Advantages(IReadOnlyList<double> rewards, int groupSize, AdvantageEstimator estimator, RewardScaling scaling)
    {
        if (groupSize < 2) throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize, "A group needs at least 2 answers.");
        if (rewards.Count % groupSize != 0) throw new ArgumentException($"{rewards.Count} rewards do not split into groups of {groupSize}.", nameof(rewards));
        var advantages = new double[rewards.Count];
        var groupStd = new double[rewards.Count];
        double leaveOneOut = estimator == AdvantageEstimator.Rloo ? groupSize / (groupSize - 1.0) : 1;
        for (int start = 0; start < rewards.Count; start += groupSize)
        {
            double mean = 0;
            for (int i = 0; i < groupSize; i++) mean += rewards[start + i];
            mean /= groupSize;
            double variance = 0;
            for (int i = 0; i < groupSize; i++) variance += Math.Pow(rewards[start + i] - mean, 2);
            double std = Math.Sqrt(variance / (groupSize - 1));
            for (int i = 0; i < groupSize; i++)
            {
                advantages[start + i] = leaveOneOut * (rewards[start + i] - mean);
                groupStd[start + i] = std;
            }
        }
        switch (scaling)
        {
            case RewardScaling.Group:
                for (int i = 0; i < advantages.Length; i++) advantages[i] /= groupStd[i] + 1e-4;
                break;
            case RewardScaling.Batch:
                double batchMean = advantages.Average();
                double batchStd = advantages.Length < 2 ? 0 : Math.Sqrt(advantages.Sum(a => (a - batchMean) * (a - batchMean)) / (advantages.Length - 1));
                for (int i = 0; i < advantages.Length; i++) advantages[i] /= batchStd + 1e-4;
                break;
        }
        return advantages;
    }

    /// <summary>
    /// DAPO's soft overlong punishment, added to the reward: 0 up to <paramref name="maxTokens"/> − <paramref name="buffer"/>
    /// tokens, then falling linearly to −<paramref name="factor"/> at <paramref name="maxTokens"/> (and beyond: a cut answer).
    /// </summary>
    public static double OverlongPenalty(int answerTokens, int maxTokens, int buffer, double factor)
    {
        if (buffer <= 0) return 0;
        int free = maxTokens - buffer;
        if (answerTokens <= free) return 0;
        return -factor * Math.Min(1, (answerTokens - free) / (double)buffer);
    }

    /// <summary>
    /// Per-token weights (B, R) that correct for sampling with another engine: the ratio ρ = exp(log π_trainer − log π_sampler)
    /// per token, or per answer as the product over its tokens (<paramref name="sequence"/>); truncated at
    /// <paramref name="cap"/> (TIS) or turned into a 0/1 mask of ratios within [1/cap, cap] (MIS). Constant: no gradient.
    /// </summary>
    public static Tensor ImportanceWeights(Tensor trainerLogProbabilities, Tensor samplerLogProbabilities, Tensor mask,
        ImportanceCorrection correction, bool sequence, double cap)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var logRatio = (trainerLogProbabilities - samplerLogProbabilities) * mask;
        if (sequence) logRatio = logRatio.sum(1, keepdim: true).expand_as(mask);
        var weights = correction switch
        {
            ImportanceCorrection.None => ones_like(mask),
            ImportanceCorrection.Tis => logRatio.exp().clamp_max(cap),
            ImportanceCorrection.Mis => (logRatio.abs() <= Math.Log(cap)).to(mask.dtype),
            _ => throw new ArgumentOutOfRangeException(nameof(correction), correction, null),
        };
        return (weights * mask).MoveToOuterDisposeScope();
    }

    /// <summary>How far the rollout engine's log-probabilities are from the trainer's over the tokens of <paramref name="mask"/>:
    /// KL(sampler ‖ trainer) by the k3 estimator (samples from the sampler), and the largest ratio π_trainer / π_sampler
    /// either way (max of ρ and 1/ρ).</summary>
    public static (double Kl, double MaxRatio) Mismatch(Tensor trainerLogProbabilities, Tensor samplerLogProbabilities, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var logRatio = ((trainerLogProbabilities - samplerLogProbabilities) * mask).to(ScalarType.Float64);   // k3 of tiny gaps needs float64
        double tokens = Math.Max(1, mask.sum().item<float>());
        double kl = ((logRatio.exp() - logRatio - 1) * mask).sum().item<double>() / tokens;
        return (kl, Math.Exp(logRatio.abs().max().item<double>()));
    }

    /// <summary>PPO's clipped surrogate per token: −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A).</summary>
    static Tensor Surrogate(Tensor ratio, Tensor advantages, double clipLow, double clipHigh) =>
        -minimum(ratio * advantages, ratio.clamp(1 - clipLow, 1 + clipHigh) * advantages);

    /// <summary>
    /// The GRPO loss of a minibatch. Per token: −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A) with ρ = exp(log π − log π_old),
    /// (GSPO: ρ is the answer's sequence ratio; CISPO: −sg(clip(ρ))·A·log π), plus β·k3 against the reference when <paramref name="referenceLogProbabilities"/> is given (k3 = e^(ref − log π) −
    /// (ref − log π) − 1). The policy term is multiplied by <paramref name="importanceWeights"/> (B, R) when given (rollout
    /// and trainer engines differ: <see cref="ImportanceWeights"/>). logProbabilities, old, reference and mask are (B, R); advantages (B). Reduced as
    /// <paramref name="loss"/> says; <paramref name="maxNewTokens"/> is Dr. GRPO's constant.
    /// </summary>
    public static Tensor Loss(GrpoLoss loss, Tensor logProbabilities, Tensor oldLogProbabilities, Tensor advantages, Tensor mask,
        double clipLow, double clipHigh, int maxNewTokens, Tensor? referenceLogProbabilities = null, double beta = 0, Tensor? importanceWeights = null)
    {
        using var scope = NewDisposeScope();
        var logRatio = logProbabilities - oldLogProbabilities;
        var a = advantages.unsqueeze(1).to(logRatio.dtype);
        var tokens = mask.sum(1).clamp_min(1);   // (B)
        Tensor perToken = loss switch
        {
            // One ratio per answer, the same at each of its tokens: the geometric mean of the tokens' ratios.
            GrpoLoss.Gspo => Surrogate(((logRatio * mask).sum(1) / tokens).exp().unsqueeze(1).expand_as(logRatio), a, clipLow, clipHigh),
            GrpoLoss.Cispo => -(logRatio.exp().clamp(1 - clipLow, 1 + clipHigh).detach() * a * logProbabilities),
            _ => Surrogate(logRatio.exp(), a, clipLow, clipHigh),
        };
        if (importanceWeights is not null) perToken = perToken * importanceWeights;
        if (referenceLogProbabilities is not null && beta != 0)
        {
            var toReference = referenceLogProbabilities - logProbabilities;
            perToken = perToken + beta * (toReference.exp() - toReference - 1);
        }
        perToken = perToken * mask;
        var reduced = loss switch
        {
            GrpoLoss.Grpo or GrpoLoss.Gspo => (perToken.sum(1) / tokens).mean(),
            GrpoLoss.DrGrpo => perToken.sum() / (mask.shape[0] * (double)maxNewTokens),
            GrpoLoss.Dapo or GrpoLoss.Cispo => perToken.sum() / mask.sum().clamp_min(1),
            _ => throw new ArgumentOutOfRangeException(nameof(loss), loss, null),
        };
        return reduced.MoveToOuterDisposeScope();
    }
}
