using GptSharp.Models;
using GptSharp.Tokenization;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Alignment;

/// <summary>GRPO settings: G answers per prompt, advantages relative to the group, no critic.</summary>
public sealed record GrpoConfig
{
    /// <summary>Prompts per rollout; each is answered <see cref="GroupSize"/> times.</summary>
    public int PromptsPerRollout { get; init; } = 8;
    /// <summary>Answers per prompt (G).</summary>
    public int GroupSize { get; init; } = 8;
    /// <summary>Answers per optimisation minibatch.</summary>
    public int MiniBatch { get; init; } = 32;
    /// <summary>Passes over each rollout's answers.</summary>
    public int Epochs { get; init; } = 1;
    /// <summary>How answers are sampled (temperature 1 by default: the group needs answers that differ).</summary>
    public RolloutSettings Rollout { get; init; } = new();
    public GrpoLoss Loss { get; init; } = GrpoLoss.Grpo;
    /// <summary>How rewards become advantages.</summary>
    public AdvantageEstimator Advantage { get; init; } = AdvantageEstimator.Grpo;
    /// <summary>What advantages are divided by; null: the estimator's own choice (<see cref="Scaling"/>).</summary>
    public RewardScaling? ScaleRewards { get; init; }
    /// <summary>ε: the ratio is clipped to [1 − ε, 1 + ε] (the upper bound is <see cref="ClipHigh"/> for DAPO).</summary>
    public double Clip { get; init; } = 0.2;
    /// <summary>The upper clip ε_high of DAPO's ratio and of CISPO's weight; GRPO and Dr. GRPO clip symmetrically at <see cref="Clip"/>.</summary>
    public double ClipHigh { get; init; } = 0.28;
    /// <summary>GSPO's clip of the sequence ratio, below and above 1 (the GSPO paper's 3e-4 and 4e-4: a sequence ratio
    /// moves far less than a token's).</summary>
    public double SequenceClip { get; init; } = 3e-4;
    public double SequenceClipHigh { get; init; } = 4e-4;
    /// <summary>DAPO's dynamic sampling: groups whose answers all scored the same teach nothing; sample more prompts (up
    /// to <see cref="SamplingRounds"/> rounds a rollout) until the rollout holds <see cref="PromptsPerRollout"/> groups that
    /// differ, topping up with uniform ones only when the rounds run out.</summary>
    public bool DynamicSampling { get; init; }
    public int SamplingRounds { get; init; } = 3;
    /// <summary>DAPO's soft overlong punishment: the last this many tokens before the length limit cost up to
    /// <see cref="OverlongPenalty"/> of reward, linearly (0: off).</summary>
    public int OverlongBuffer { get; init; }
    public double OverlongPenalty { get; init; } = 1;
    /// <summary>How the gap between the rollout engine's log-probabilities and the trainer's is corrected (TIS, MIS, none);
    /// the gap is logged every rollout either way.</summary>
    public ImportanceCorrection IsCorrection { get; init; } = ImportanceCorrection.None;
    /// <summary>The ratio per answer (the product over its tokens) instead of per token.</summary>
    public bool IsSequenceLevel { get; init; }
    /// <summary>TIS's truncation, and MIS's bounds [1/cap, cap].</summary>
    public double IsCap { get; init; } = 2;
    /// <summary>Weight of the k3 KL penalty to the reference (the starting model); 0 needs no reference at all.</summary>
    public double Beta { get; init; }
    /// <summary>Answers cut by the length limit are scored (they count in their group's mean) but not learned from.</summary>
    public bool MaskTruncated { get; init; } = true;
    /// <summary>Built-in tools offered with every prompt and run while sampling (e.g. <c>calculator</c>); null: none.
    /// What they write is part of the answer but has no log-probability.</summary>
    public string? Tools { get; init; }
    /// <summary>Model turns an episode may take when the answers act in an environment.</summary>
    public int MaxTurns { get; init; } = Episode.DefaultMaxTurns;

    public int AnswersPerRollout => PromptsPerRollout * GroupSize;
    /// <summary>Optimiser steps one rollout gives: epochs × minibatches.</summary>
    public int StepsPerRollout => Epochs * ((AnswersPerRollout + MiniBatch - 1) / MiniBatch);
    /// <summary>ε_low as the loss uses it: GSPO's sequence clip; CISPO has no lower bound on its weight (ε_low = 1).</summary>
    public double LowerClip => Loss switch { GrpoLoss.Gspo => SequenceClip, GrpoLoss.Cispo => 1, _ => Clip };
    public double UpperClip => Loss switch { GrpoLoss.Dapo or GrpoLoss.Cispo => ClipHigh, GrpoLoss.Gspo => SequenceClipHigh, _ => Clip };
    /// <summary>The scaling used: <see cref="ScaleRewards"/>, or by default the group's std for GRPO (none under the
    /// Dr. GRPO loss), none for RLOO, the batch's for REINFORCE++.</summary>
    public RewardScaling Scaling => ScaleRewards ?? Advantage switch
    {
        AdvantageEstimator.Rloo => RewardScaling.None,
        AdvantageEstimator.ReinforcePlusPlus => RewardScaling.Batch,
        _ => Loss == GrpoLoss.DrGrpo ? RewardScaling.None : RewardScaling.Group,
    };

    public GrpoConfig Validate()
    {
        if (PromptsPerRollout < 1) throw new ArgumentOutOfRangeException(nameof(PromptsPerRollout), PromptsPerRollout, "Need at least one prompt per rollout.");
        if (GroupSize < 2) throw new ArgumentOutOfRangeException(nameof(GroupSize), GroupSize, "A group needs at least 2 answers: its advantages are relative to each other.");
        if (MiniBatch < 1) throw new ArgumentOutOfRangeException(nameof(MiniBatch), MiniBatch, "The minibatch must hold at least one answer.");
        if (Epochs < 1) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "Need at least one epoch.");
        Rollout.Validate();
        if (Clip is <= 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Clip), Clip, "The clip ε must be in (0, 1).");
        if (ClipHigh <= 0) throw new ArgumentOutOfRangeException(nameof(ClipHigh), ClipHigh, "ε_high must be > 0.");
        if (Beta < 0) throw new ArgumentOutOfRangeException(nameof(Beta), Beta, "β must be >= 0.");
        if (SequenceClip is <= 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(SequenceClip), SequenceClip, "GSPO's sequence clip must be in (0, 1).");
        if (SequenceClipHigh <= 0) throw new ArgumentOutOfRangeException(nameof(SequenceClipHigh), SequenceClipHigh, "GSPO's upper sequence clip must be > 0.");
        if (SamplingRounds < 1) throw new ArgumentOutOfRangeException(nameof(SamplingRounds), SamplingRounds, "Dynamic sampling needs at least one round.");
        if (OverlongBuffer < 0 || OverlongBuffer >= Rollout.MaxNewTokens)
            throw new ArgumentOutOfRangeException(nameof(OverlongBuffer), OverlongBuffer, $"The overlong buffer must be 0 (off) to {Rollout.MaxNewTokens - 1} tokens (below the length limit).");
        if (IsCap <= 1 || double.IsNaN(IsCap)) throw new ArgumentOutOfRangeException(nameof(IsCap), IsCap, "The importance-sampling cap must be > 1.");
        if (MaxTurns < 1) throw new ArgumentOutOfRangeException(nameof(MaxTurns), MaxTurns, "An episode needs at least one turn.");
        if (OverlongPenalty < 0 || double.IsNaN(OverlongPenalty)) throw new ArgumentOutOfRangeException(nameof(OverlongPenalty), OverlongPenalty, "The overlong penalty must be >= 0.");
        return this;
    }
}

/// <summary>A GRPO minibatch: sequences (B, T), over each answer (B, R) the logit positions, tokens, mask and old (and
/// reference) log-probabilities; one advantage per answer (B).</summary>
public sealed record GrpoBatch(Tensor Sequences, Tensor Positions, Tensor Tokens, Tensor Mask, Tensor OldLogProbabilities,
    Tensor? ReferenceLogProbabilities, Tensor Advantages, Tensor? ImportanceWeights = null);

/// <summary>What one GRPO rollout looked like.</summary>
/// <param name="MeanGold">The gold program's mean score of the answers, when one is given.</param>
/// <param name="MeanReward">The mean reward of the rollout's first round of answers (what the policy does; the
/// overlong penalty included).</param>
/// <param name="SolvedGroups">Share of the first round's prompts whose answers did not all score the same (the ones that teach).</param>
/// <param name="Truncated">Share of answers cut by the length limit.</param>
/// <param name="SampledGroups">Groups sampled for the rollout (more than the prompts per rollout under dynamic sampling).</param>
/// <param name="TeachingShare">Share of the groups learnt from whose answers scored differently.</param>
/// <param name="MismatchKl">KL(rollout engine ‖ trainer) per token (k3), from the log-probabilities each gave the sampled tokens.</param>
/// <param name="MismatchMaxRatio">The largest ratio between the two probabilities of one token, either way.</param>
public sealed record GrpoRolloutStats(int Iteration, double MeanReward, double? MeanGold, double MeanResponseLength, double SolvedGroups, double Truncated,
    int SampledGroups = 0, double TeachingShare = 0, double? MismatchKl = null, double? MismatchMaxRatio = null);

/// <summary>
/// Produces GRPO experience: when its buffer is empty it samples G answers to each of a rollout's prompts with the
/// current policy, scores them, turns the rewards into group-relative advantages and serves minibatches for the epochs.
/// </summary>
public sealed class GrpoExperience : RolloutExperience<GrpoBatch>
{
    readonly Gpt _policy;
    readonly Gpt? _reference;
    readonly RewardFunction _reward;
    readonly RewardFunction? _gold;
    readonly GptTokenizer _tokenizer;
    readonly IReadOnlyList<string> _prompts;
    readonly GrpoConfig _config;
    readonly Inference.ToolBox? _tools;
    readonly EnvironmentFactory? _environment;
    readonly long _seed;
    int _iteration;

    /// <param name="reference">The frozen starting model, needed when <see cref="GrpoConfig.Beta"/> &gt; 0.</param>
    /// <param name="gold">A program logged beside the reward (e.g. the form check while training on a learned reward).</param>
    /// <param name="environment">An environment every answer acts in, up to <see cref="GrpoConfig.MaxTurns"/> turns (its
    /// turns are masked from the loss; <see cref="Rewards.Episodes"/> rewards the episodes).</param>
    public GrpoExperience(Gpt policy, Gpt? reference, RewardFunction reward, GptTokenizer tokenizer, IReadOnlyList<string> prompts,
        GrpoConfig config, long seed, int iteration = 0, RewardFunction? gold = null, EnvironmentFactory? environment = null)
    {
        if (prompts.Count == 0) throw new ArgumentException("GRPO needs at least one prompt.", nameof(prompts));
        if (config.Validate().Beta > 0 && reference is null) throw new ArgumentException("β > 0 needs the reference model.", nameof(reference));
        if (environment is not null && config.Tools is not null)
            throw new ArgumentException($"GRPO offers tools ({config.Tools}) and the environment '{environment.Name}': an environment offers its own tools.", nameof(config));
        (_policy, _reference, _reward, _gold, _tokenizer, _prompts, _config, _seed, _iteration, _environment) =
            (policy, reference, reward, gold, tokenizer, prompts, config, seed, iteration, environment);
        _tools = config.Tools is { } names ? Inference.ToolBox.Named(names) : null;
        // Refused here rather than at the first rollout, after the run folder is made.
        if ((_tools is not null || environment is not null) && !new ChatTemplate(tokenizer).SupportsTools)
            throw new ArgumentException($"GRPO offers {(environment is null ? $"tools ({config.Tools})" : $"the environment '{environment.Name}'")}, " +
                                        $"but tokenizer '{tokenizer.Spec.Name}' has no tool-call tokens: train a new tokenizer and model.", nameof(config));
    }

    public List<GrpoRolloutStats> Rollouts { get; } = [];
    /// <summary>The next rollout's iteration: checkpoints fall on rollout boundaries, where a resume continues exactly.</summary>
    public override string Position => _iteration.ToString();

    protected override void RolloutOnce()
    {
        var random = RolloutRandom(_seed, _iteration);
        int groupSize = _config.GroupSize, wanted = _config.PromptsPerRollout;

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        _policy.eval();
        // Groups as sampled: those whose answers scored differently teach; the others are kept to top up with.
        var teaching = new List<(List<Completion> Answers, double[] Rewards, double[]? Gold)>();
        var uniform = new List<(List<Completion> Answers, double[] Rewards, double[]? Gold)>();
        double firstMeanReward = 0, firstSolved = 0;
        double? firstMeanGold = null;
        int sampledGroups = 0;
        for (int round = 0; round < (_config.DynamicSampling ? _config.SamplingRounds : 1) && teaching.Count < wanted; round++)
        {
            int count = round == 0 ? wanted : wanted - teaching.Count;
            var chosen = Enumerable.Range(0, count).Select(_ => _prompts[random.Next(_prompts.Count)]).ToList();
            var prompts = chosen.SelectMany(p => Enumerable.Repeat(p, groupSize)).ToList();
            using var sampled = Rollout.Sample(_policy, _tokenizer, prompts, _config.Rollout.Temperature, _config.Rollout.MaxNewTokens,
                _seed * 1000 + (long)_iteration * prompts.Count + round * 1_000_003L, keepTruncated: !_config.MaskTruncated, tools: _tools, engine: _config.Rollout.Engine,
                environment: _environment, maxTurns: _config.MaxTurns);
            var rewards = _reward(sampled.Completions);
            for (int i = 0; i < rewards.Length; i++)
                rewards[i] += GrpoMath.OverlongPenalty(sampled.Completions[i].AnswerTokens.Length, _config.Rollout.MaxNewTokens, _config.OverlongBuffer, _config.OverlongPenalty);
            double[]? gold = _gold?.Invoke(sampled.Completions);
            int solved = 0;
            for (int g = 0; g < count; g++)
            {
                var group = (sampled.Completions.Skip(g * groupSize).Take(groupSize).ToList(), rewards[(g * groupSize)..((g + 1) * groupSize)],
                    gold?[(g * groupSize)..((g + 1) * groupSize)]);
                bool teaches = group.Item2.Distinct().Count() > 1;
                solved += teaches ? 1 : 0;
                (teaches || !_config.DynamicSampling ? teaching : uniform).Add(group);
            }
            sampledGroups += count;
            if (round == 0) (firstMeanReward, firstMeanGold, firstSolved) = (rewards.Average(), gold?.Average(), solved / (double)count);
        }
        var groups = teaching.Concat(uniform).Take(wanted).ToList();
        var completions = groups.SelectMany(g => g.Answers).ToList();
        using var rollout = Rollout.Layout(completions, _tokenizer.PadId, _policy.parameters().First().device, keepTruncated: !_config.MaskTruncated);
        var advantages = GrpoMath.Advantages([.. groups.SelectMany(g => g.Rewards)], groupSize, _config.Advantage, _config.Scaling);
        var oldLogp = PpoExperience.ResponseLogProbabilities(_policy, rollout.Sequences, rollout.Positions, rollout.Tokens, _config.Rollout.Temperature);
        var refLogp = _config.Beta > 0 ? PpoExperience.ResponseLogProbabilities(_reference!, rollout.Sequences, rollout.Positions, rollout.Tokens, _config.Rollout.Temperature) : null;
        _policy.train();
        // The rollout engine (the CPU engine, maybe in 16 or 4 bits) and the trainer (libtorch) give the same tokens
        // slightly different probabilities: measured every rollout, corrected when asked.
        (double Kl, double MaxRatio)? mismatch = rollout.SamplerLogProbabilities is { } sampler ? GrpoMath.Mismatch(oldLogp, sampler, rollout.Mask) : null;
        Tensor? weights = _config.IsCorrection == ImportanceCorrection.None ? null
            : GrpoMath.ImportanceWeights(oldLogp, rollout.SamplerLogProbabilities ?? throw new InvalidOperationException("Importance correction needs the rollout engine's log-probabilities."),
                rollout.Mask, _config.IsCorrection, _config.IsSequenceLevel, _config.IsCap);

        // The first round is what the policy does; later rounds only pick what it learns from.
        Rollouts.Add(new GrpoRolloutStats(_iteration, firstMeanReward, firstMeanGold, rollout.MeanLength, firstSolved,
            rollout.Completions.Count(c => c.Truncated) / (double)rollout.Rows, sampledGroups,
            groups.Count(g => g.Rewards.Distinct().Count() > 1) / (double)wanted, mismatch?.Kl, mismatch?.MaxRatio));
        _iteration++;

        var advantageTensor = tensor(advantages.Select(a => (float)a).ToArray(), device: rollout.Sequences.device);
        var order = Enumerable.Range(0, rollout.Rows).ToArray();
        for (int epoch = 0; epoch < _config.Epochs; epoch++)
        {
            random.Shuffle(order);
            foreach (var chunk in order.Chunk(_config.MiniBatch))
            {
                var index = tensor(chunk.Select(i => (long)i).ToArray(), device: rollout.Sequences.device);
                var (seq, pos, tok, mask) = rollout.Select(index);
                Enqueue(new GrpoBatch(Own(seq), Own(pos), Own(tok), Own(mask), Own(oldLogp.index_select(0, index)),
                    refLogp is null ? null : Own(refLogp.index_select(0, index)), Own(advantageTensor.index_select(0, index)),
                    weights is null ? null : Own(weights.index_select(0, index))));
            }
        }
    }

    /// <summary>GRPO's loss for one minibatch (see <see cref="GrpoMath.Loss"/>).</summary>
    public static Func<GrpoBatch, ObjectiveOutput> Objective(Gpt policy, GrpoConfig config) => batch =>
    {
        var logp = PpoExperience.ResponseLogProbabilities(policy, batch.Sequences, batch.Positions, batch.Tokens, config.Rollout.Temperature);
        var loss = GrpoMath.Loss(config.Loss, logp, batch.OldLogProbabilities, batch.Advantages, batch.Mask, config.LowerClip, config.UpperClip,
            config.Rollout.MaxNewTokens, batch.ReferenceLogProbabilities, config.Beta, batch.ImportanceWeights);
        return new ObjectiveOutput(loss, Math.Max(1, (long)batch.Mask.sum().item<float>()));
    };
}
