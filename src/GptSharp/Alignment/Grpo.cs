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
    /// <summary>ε: the ratio is clipped to [1 − ε, 1 + ε] (the upper bound is <see cref="ClipHigh"/> for DAPO).</summary>
    public double Clip { get; init; } = 0.2;
    /// <summary>DAPO's clip-higher ε_high; other losses clip symmetrically at <see cref="Clip"/>.</summary>
    public double ClipHigh { get; init; } = 0.28;
    /// <summary>Weight of the k3 KL penalty to the reference (the starting model); 0 needs no reference at all.</summary>
    public double Beta { get; init; }
    /// <summary>Answers cut by the length limit are scored (they count in their group's mean) but not learned from.</summary>
    public bool MaskTruncated { get; init; } = true;
    /// <summary>Built-in tools offered with every prompt and run while sampling (e.g. <c>calculator</c>); null: none.
    /// What they write is part of the answer but has no log-probability.</summary>
    public string? Tools { get; init; }

    public int AnswersPerRollout => PromptsPerRollout * GroupSize;
    /// <summary>Optimiser steps one rollout gives: epochs × minibatches.</summary>
    public int StepsPerRollout => Epochs * ((AnswersPerRollout + MiniBatch - 1) / MiniBatch);
    public double UpperClip => Loss == GrpoLoss.Dapo ? ClipHigh : Clip;

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
        return this;
    }
}

/// <summary>A GRPO minibatch: sequences (B, T), over each answer (B, R) the logit positions, tokens, mask and old (and
/// reference) log-probabilities; one advantage per answer (B).</summary>
public sealed record GrpoBatch(Tensor Sequences, Tensor Positions, Tensor Tokens, Tensor Mask, Tensor OldLogProbabilities,
    Tensor? ReferenceLogProbabilities, Tensor Advantages);

/// <summary>What one GRPO rollout looked like.</summary>
/// <param name="MeanGold">The gold program's mean score of the answers, when one is given.</param>
/// <param name="SolvedGroups">Share of prompts whose answers did not all score the same (the ones that teach).</param>
/// <param name="Truncated">Share of answers cut by the length limit.</param>
public sealed record GrpoRolloutStats(int Iteration, double MeanReward, double? MeanGold, double MeanResponseLength, double SolvedGroups, double Truncated);

/// <summary>
/// Produces GRPO experience: when its buffer is empty it samples G answers to each of a rollout's prompts with the
/// current policy, scores them, turns the rewards into group-relative advantages and serves minibatches for the epochs.
/// </summary>
public sealed class GrpoExperience : IBatchSource<GrpoBatch>, IDisposable
{
    readonly Gpt _policy;
    readonly Gpt? _reference;
    readonly RewardFunction _reward;
    readonly RewardFunction? _gold;
    readonly GptTokenizer _tokenizer;
    readonly IReadOnlyList<string> _prompts;
    readonly GrpoConfig _config;
    readonly Inference.ToolBox? _tools;
    readonly long _seed;
    readonly Queue<GrpoBatch> _queue = new();
    readonly List<Tensor> _owned = [];
    int _iteration;

    /// <param name="reference">The frozen starting model, needed when <see cref="GrpoConfig.Beta"/> &gt; 0.</param>
    /// <param name="gold">A program logged beside the reward (e.g. the form check while training on a learned reward).</param>
    public GrpoExperience(Gpt policy, Gpt? reference, RewardFunction reward, GptTokenizer tokenizer, IReadOnlyList<string> prompts,
        GrpoConfig config, long seed, int iteration = 0, RewardFunction? gold = null)
    {
        if (prompts.Count == 0) throw new ArgumentException("GRPO needs at least one prompt.", nameof(prompts));
        if (config.Validate().Beta > 0 && reference is null) throw new ArgumentException("β > 0 needs the reference model.", nameof(reference));
        (_policy, _reference, _reward, _gold, _tokenizer, _prompts, _config, _seed, _iteration) = (policy, reference, reward, gold, tokenizer, prompts, config, seed, iteration);
        _tools = config.Tools is { } names ? Inference.ToolBox.Named(names) : null;
        if (_tools is not null && !new ChatTemplate(tokenizer).SupportsTools)
            throw new ArgumentException($"GRPO offers tools ({config.Tools}), but tokenizer '{tokenizer.Spec.Name}' has no tool-call tokens: train a new tokenizer and model.", nameof(config));
    }

    public List<GrpoRolloutStats> Rollouts { get; } = [];
    /// <summary>The next rollout's iteration: checkpoints fall on rollout boundaries, where a resume continues exactly.</summary>
    public string Position => _iteration.ToString();

    public GrpoBatch Next()
    {
        if (_queue.Count == 0) RolloutOnce();
        return _queue.Dequeue();
    }

    void RolloutOnce()
    {
        foreach (var old in _owned) old.Dispose();
        _owned.Clear();
        var random = new Random((int)((_seed * 31 + _iteration) & 0x7fffffff));
        var chosen = Enumerable.Range(0, _config.PromptsPerRollout).Select(_ => _prompts[random.Next(_prompts.Count)]).ToList();
        var prompts = chosen.SelectMany(p => Enumerable.Repeat(p, _config.GroupSize)).ToList();

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        _policy.eval();
        using var rollout = Rollout.Sample(_policy, _tokenizer, prompts, _config.Rollout.Temperature, _config.Rollout.MaxNewTokens,
            _seed * 1000 + (long)_iteration * prompts.Count, keepTruncated: !_config.MaskTruncated, tools: _tools, engine: _config.Rollout.Engine);
        var rewards = _reward(rollout.Completions);
        double[]? gold = _gold?.Invoke(rollout.Completions);
        var advantages = GrpoMath.GroupAdvantages(rewards, _config.GroupSize, scaleByStd: _config.Loss != GrpoLoss.DrGrpo);
        var oldLogp = PpoExperience.ResponseLogProbabilities(_policy, rollout.Sequences, rollout.Positions, rollout.Tokens, _config.Rollout.Temperature);
        var refLogp = _config.Beta > 0 ? PpoExperience.ResponseLogProbabilities(_reference!, rollout.Sequences, rollout.Positions, rollout.Tokens, _config.Rollout.Temperature) : null;
        _policy.train();

        int groups = _config.PromptsPerRollout, solved = 0;
        for (int g = 0; g < groups; g++)
            if (rewards.Skip(g * _config.GroupSize).Take(_config.GroupSize).Distinct().Count() > 1) solved++;
        Rollouts.Add(new GrpoRolloutStats(_iteration, rewards.Average(), gold?.Average(), rollout.MeanLength, solved / (double)groups,
            rollout.Completions.Count(c => c.Truncated) / (double)rollout.Rows));
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
                _queue.Enqueue(new GrpoBatch(Own(seq), Own(pos), Own(tok), Own(mask), Own(oldLogp.index_select(0, index)),
                    refLogp is null ? null : Own(refLogp.index_select(0, index)), Own(advantageTensor.index_select(0, index))));
            }
        }
    }

    Tensor Own(Tensor t)
    {
        var kept = t.DetachFromDisposeScope();
        _owned.Add(kept);
        return kept;
    }

    /// <summary>GRPO's loss for one minibatch (see <see cref="GrpoMath.Loss"/>).</summary>
    public static Func<GrpoBatch, ObjectiveOutput> Objective(Gpt policy, GrpoConfig config) => batch =>
    {
        var logp = PpoExperience.ResponseLogProbabilities(policy, batch.Sequences, batch.Positions, batch.Tokens, config.Rollout.Temperature);
        var loss = GrpoMath.Loss(config.Loss, logp, batch.OldLogProbabilities, batch.Advantages, batch.Mask, config.Clip, config.UpperClip,
            config.Rollout.MaxNewTokens, batch.ReferenceLogProbabilities, config.Beta);
        return new ObjectiveOutput(loss, Math.Max(1, (long)batch.Mask.sum().item<float>()));
    };

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }
}
