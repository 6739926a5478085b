using GptSharp.Data;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Tokenization;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Alignment;

/// <summary>PPO settings (InstructGPT / TRL defaults scaled to small models).</summary>
public sealed record PpoConfig
{
    /// <summary>Prompts sampled per rollout (one response each).</summary>
    public int RolloutPrompts { get; init; } = 16;
    /// <summary>Passes over each rollout's experience.</summary>
    public int Epochs { get; init; } = 2;
    /// <summary>Responses per optimisation minibatch.</summary>
    public int MiniBatch { get; init; } = 8;
    /// <summary>How responses are sampled (temperature 0.7 by default: InstructGPT-like answers, not the tails).</summary>
    public RolloutSettings Rollout { get; init; } = new() { Temperature = 0.7 };
    /// <summary>β of the KL penalty; with <see cref="KlTarget"/> set, its starting value.</summary>
    public double KlCoefficient { get; init; } = 0.1;
    /// <summary>Adaptive KL (Ziegler et al. 2019): after each rollout β is scaled towards keeping the mean KL per answer
    /// at this target (null: β stays fixed).</summary>
    public double? KlTarget { get; init; }
    /// <summary>The adaptive controller's horizon: β changes by at most ±20% × answers / horizon per rollout. Ziegler et
    /// al. used 10,000 over runs of ~10⁵ answers; a laptop run sees ~10³, so the default is short enough to act in it.</summary>
    public int KlHorizon { get; init; } = 160;
    /// <summary>Normalise scores by the running mean and standard deviation of every score so far, so the KL penalty
    /// weighs the same against a reward on any scale (on by default: a reward model's scale is arbitrary).</summary>
    public bool NormalizeRewards { get; init; } = true;
    public KlEstimator RewardKl { get; init; } = KlEstimator.K1;
    public double Gamma { get; init; } = 1.0;
    public double Lambda { get; init; } = 0.95;
    public double Clip { get; init; } = 0.2;
    public double ValueClip { get; init; } = 0.2;
    public double ValueCoefficient { get; init; } = 0.5;
    public double EntropyCoefficient { get; init; } = 0.0;
    public bool WhitenAdvantages { get; init; } = true;
    /// <summary>Weight of the pretraining-mix (ptx) loss, InstructGPT's PPO-ptx: next-token loss on pretraining text
    /// added to every minibatch so the policy keeps its language while it chases reward. 0 turns it off.</summary>
    public double PtxCoefficient { get; init; }

    /// <summary>Optimiser steps one rollout gives: epochs × minibatches.</summary>
    public int StepsPerRollout => Epochs * ((RolloutPrompts + MiniBatch - 1) / MiniBatch);
}

/// <summary>The policy being trained and its value function, optimised together.</summary>
public sealed class ActorCritic : nn.Module<Tensor, Tensor>
{
    readonly Gpt actor;
    readonly RewardModel critic;

    public ActorCritic(Gpt actor, RewardModel critic) : base(nameof(ActorCritic))
    {
        this.actor = actor;
        this.critic = critic;
        RegisterComponents();
    }

    public Gpt Actor => actor;
    public RewardModel Critic => critic;
    public override Tensor forward(Tensor tokens) => actor.forward(tokens);
}

/// <summary>One minibatch of experience: sequences (B, T) and, over each response (B, R), the indices of the logits
/// that predict its tokens, the tokens, the mask and the rollout's old log-probabilities, values, advantages, returns.
/// With ptx on, it also carries a pretraining batch (inputs and next-token targets).</summary>
public sealed record PpoBatch(Tensor Sequences, Tensor Positions, Tensor Tokens, Tensor Mask,
    Tensor OldLogProbabilities, Tensor OldValues, Tensor Advantages, Tensor Returns, Tensor? PtxInputs = null, Tensor? PtxTargets = null);

/// <summary>What one rollout looked like.</summary>
/// <param name="MeanScore">The scorer's mean, before normalisation.</param>
/// <param name="MeanGold">The gold program's mean score of the same answers, when one is given.</param>
/// <param name="KlCoefficient">β used for this rollout's rewards.</param>
public sealed record RolloutStats(int Iteration, double MeanScore, double MeanKl, double MeanResponseLength, double? MeanGold = null, double KlCoefficient = 0);

/// <summary>The adaptive KL controller of Ziegler et al. (2019): β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon).</summary>
public sealed class AdaptiveKl(double initial, double target, int horizon)
{
    public double Value { get; private set; } = initial;

    /// <summary>Updates β from the mean KL per answer of a rollout of <paramref name="answers"/> answers.</summary>
    public void Update(double meanKl, int answers)
    {
        double error = Math.Clamp(meanKl / target - 1, -0.2, 0.2);
        Value *= 1 + error * answers / horizon;
    }

    internal void Restore(double value) => Value = value;
}

/// <summary>Running mean and standard deviation (Welford) of every value seen.</summary>
public sealed class RunningMoments
{
    public long Count { get; private set; }
    public double Mean { get; private set; }
    double _m2;
    public double Std => Count < 2 ? 1 : Math.Sqrt(_m2 / (Count - 1));

    public void Update(IEnumerable<double> values)
    {
        foreach (double x in values)
        {
            Count++;
            double delta = x - Mean;
            Mean += delta / Count;
            _m2 += delta * (x - Mean);
        }
    }

    public string Format() => FormattableString.Invariant($"{Count},{Mean:R},{_m2:R}");

    public static RunningMoments Parse(string text)
    {
        var parts = text.Split(',');
        if (parts.Length != 3) throw new InvalidDataException($"Running moments '{text}': expected 'count,mean,m2'.");
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        return new RunningMoments { Count = long.Parse(parts[0], inv), Mean = double.Parse(parts[1], inv), _m2 = double.Parse(parts[2], inv) };
    }
}

/// <summary>
/// Produces PPO experience for the shared trainer: when its buffer is empty it samples responses to a rollout's prompts
/// with the current policy (KV-cache sampler), scores them with the frozen reward model, computes per-token KL to the
/// frozen reference (folded into the rewards), values, GAE advantages (whitened) and returns; then serves the
/// experience as minibatches for several epochs.
/// </summary>
public sealed class PpoExperience : RolloutExperience<PpoBatch>
{
    readonly ActorCritic _model;
    readonly Gpt _reference;
    readonly RewardFunction _score;
    readonly RewardFunction? _gold;
    readonly GptTokenizer _tokenizer;
    readonly IReadOnlyList<string> _prompts;
    readonly PpoConfig _config;
    readonly Device _device;
    readonly long _seed;
    readonly Data.TokenBatchLoader? _ptx;
    readonly AdaptiveKl? _kl;
    readonly RunningMoments _moments;
    int _iteration;

    /// <param name="score">Scores the sampled answers: a reward model (<see cref="Rewards.FromModel"/>) or a program.</param>
    /// <param name="gold">A program logged beside the score in every rollout (e.g. the form check against a learned reward).</param>
    /// <param name="position">Where a resumed run continues: a saved <see cref="Position"/> (null: the start).</param>
    public PpoExperience(ActorCritic model, Gpt reference, RewardFunction score, GptTokenizer tokenizer, IReadOnlyList<string> prompts,
        PpoConfig config, Device device, long seed, string? position = null, Data.TokenBatchLoader? ptx = null, RewardFunction? gold = null)
    {
        if (prompts.Count == 0) throw new ArgumentException("PPO needs at least one prompt.", nameof(prompts));
        if (config.PtxCoefficient > 0 && ptx is null) throw new ArgumentException("A ptx coefficient needs pretraining batches.", nameof(ptx));
        if (config.KlTarget is <= 0) throw new ArgumentOutOfRangeException(nameof(config), config.KlTarget, "The KL target must be > 0.");
        (_model, _reference, _score, _gold, _tokenizer, _prompts, _config, _device, _seed, _ptx) = (model, reference, score, gold, tokenizer, prompts, config, device, seed, ptx);
        var saved = ParsePosition(position ?? "0");
        _iteration = saved.Iteration;
        _kl = config.KlTarget is double target ? new AdaptiveKl(config.KlCoefficient, target, config.KlHorizon) : null;
        if (saved.Kl is double beta) _kl?.Restore(beta);
        _moments = saved.Moments ?? new RunningMoments();
    }

    /// <summary>The parts of <see cref="Position"/>: the next rollout, the ptx loader's position, β and the score moments.</summary>
    public sealed record SavedPosition(int Iteration, Data.LoaderPosition Ptx, double? Kl, RunningMoments? Moments);

    /// <summary>Parses <see cref="Position"/>: <c>iteration</c>, then optional <c>;ptx=epoch:cursor</c>, <c>;kl=β</c>,
    /// <c>;scores=count,mean,m2</c> (older runs wrote the ptx position bare).</summary>
    public static SavedPosition ParsePosition(string position)
    {
        var parts = position.Split(';');
        if (!int.TryParse(parts[0], out int iteration)) throw new InvalidDataException($"PPO position '{position}': expected 'iteration' then ';key=value' parts.");
        LoaderPosition ptx = default;
        double? kl = null;
        RunningMoments? moments = null;
        foreach (string part in parts.Skip(1))
        {
            int eq = part.IndexOf('=');
            string key = eq < 0 ? "ptx" : part[..eq], value = eq < 0 ? part : part[(eq + 1)..];
            switch (key)
            {
                case "ptx": ptx = LoaderPosition.Parse(value); break;
                case "kl": kl = double.Parse(value, System.Globalization.CultureInfo.InvariantCulture); break;
                case "scores": moments = RunningMoments.Parse(value); break;
                default: throw new InvalidDataException($"PPO position '{position}': unknown part '{key}'.");
            }
        }
        return new SavedPosition(iteration, ptx, kl, moments);
    }

    /// <summary>Statistics of every rollout so far.</summary>
    public List<RolloutStats> Rollouts { get; } = [];
    /// <summary>β for the next rollout.</summary>
    public double KlCoefficient => _kl?.Value ?? _config.KlCoefficient;

    /// <summary>
    /// The next rollout's iteration, and what else a resume needs (the ptx loader's position, adaptive β, the running
    /// score moments). Checkpoints fall on rollout boundaries (see <see cref="PpoConfig.StepsPerRollout"/>), where this
    /// resumes exactly; a run stopped mid-rollout resumes at the next one.
    /// </summary>
    public override string Position
    {
        get
        {
            var text = new System.Text.StringBuilder(_iteration.ToString());
            if (_ptx is not null) text.Append(";ptx=").Append(_ptx.Position.Format());
            if (_kl is not null) text.Append(";kl=").Append(_kl.Value.ToString("R", System.Globalization.CultureInfo.InvariantCulture));
            if (_config.NormalizeRewards) text.Append(";scores=").Append(_moments.Format());
            return text.ToString();
        }
    }

    protected override void RolloutOnce()
    {
        var random = RolloutRandom(_seed, _iteration);
        var prompts = Enumerable.Range(0, _config.RolloutPrompts).Select(_ => _prompts[random.Next(_prompts.Count)]).ToList();

        using var noGrad = no_grad();
        _model.eval();
        using var rollout = Rollout.Sample(_model.Actor, _tokenizer, prompts, _config.Rollout.Temperature, _config.Rollout.MaxNewTokens,
            _seed * 1000 + _iteration * _config.RolloutPrompts, engine: _config.Rollout.Engine);
        var (seq, pos, tok, m) = (rollout.Sequences, rollout.Positions, rollout.Tokens, rollout.Mask);
        int b = rollout.Rows;
        var rawScores = _score(rollout.Completions);
        double[]? gold = _gold?.Invoke(rollout.Completions);
        _moments.Update(rawScores);
        var scoreValues = _config.NormalizeRewards ? rawScores.Select(x => (x - _moments.Mean) / Math.Max(_moments.Std, 1e-6)) : rawScores;
        var scores = tensor(scoreValues.Select(x => (float)x).ToArray(), device: _device);
        var oldLogp = ResponseLogProbabilities(_model.Actor, seq, pos, tok, _config.Rollout.Temperature);
        var refLogp = ResponseLogProbabilities(_reference, seq, pos, tok, _config.Rollout.Temperature);
        var values = _model.Critic.forward(seq).gather(1, pos) * m;
        var kl = PpoMath.Kl(oldLogp, refLogp, _config.RewardKl) * m;
        double beta = KlCoefficient;
        var rewards = PpoMath.TokenRewards(kl, scores, m, beta);
        var (advantages, returns) = PpoMath.Gae(rewards, values, m, _config.Gamma, _config.Lambda);
        if (_config.WhitenAdvantages) advantages = PpoMath.Whiten(advantages, m);
        _model.train();

        double meanKl = (kl.sum() / b).item<float>();
        Rollouts.Add(new RolloutStats(_iteration, rawScores.Average(), meanKl, m.sum().item<float>() / b, gold?.Average(), beta));
        _kl?.Update(meanKl, b);
        _iteration++;

        var order = Enumerable.Range(0, b).ToArray();
        for (int epoch = 0; epoch < _config.Epochs; epoch++)
        {
            random.Shuffle(order);
            foreach (var chunk in order.Chunk(_config.MiniBatch))
            {
                var index = tensor(chunk.Select(i => (long)i).ToArray(), device: _device);
                Tensor? ptxInputs = null, ptxTargets = null;
                if (_ptx is not null)
                {
                    var text = _ptx.Next();
                    ptxInputs = Own(tensor(text.Inputs, [text.BatchSize, text.SequenceLength], device: _device));
                    ptxTargets = Own(tensor(text.Targets, [text.BatchSize, text.SequenceLength], device: _device));
                }
                var batch = new PpoBatch(Own(seq.index_select(0, index)), Own(pos.index_select(0, index)), Own(tok.index_select(0, index)), Own(m.index_select(0, index)),
                    Own(oldLogp.index_select(0, index)), Own(values.index_select(0, index)), Own(advantages.index_select(0, index)), Own(returns.index_select(0, index)),
                    ptxInputs, ptxTargets);
                Enqueue(batch);
            }
        }
    }

    /// <summary>Log-probabilities of the response tokens at a sampling temperature: logits at <paramref name="positions"/>
    /// predict <paramref name="tokens"/>.</summary>
    public static Tensor ResponseLogProbabilities(Gpt model, Tensor sequences, Tensor positions, Tensor tokens, double temperature = 1.0)
    {
        using var scope = NewDisposeScope();
        var atPositions = ResponseLogits(model, sequences, positions, temperature);
        return atPositions.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1).MoveToOuterDisposeScope();
    }

    /// <summary>The logits (B, R, V) that predict each response token, divided by the temperature.</summary>
    public static Tensor ResponseLogits(Gpt model, Tensor sequences, Tensor positions, double temperature = 1.0)
    {
        // The vocabulary projection only where a response token is predicted: the prompt's positions would cost as much again.
        var hidden = model.Hidden(sequences);                                                              // (B, T, W)
        var atPositions = model.Project(hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[2])));  // (B, R, V)
        return temperature == 1.0 ? atPositions : atPositions / temperature;
    }

    /// <summary>PPO's loss for one minibatch: clipped policy loss + c_v · clipped value loss − c_e · entropy (+ c_ptx · pretraining loss).</summary>
    public static Func<PpoBatch, ObjectiveOutput> Objective(ActorCritic model, PpoConfig config) => batch =>
    {
        var atPositions = ResponseLogits(model.Actor, batch.Sequences, batch.Positions, config.Rollout.Temperature);
        var logp = atPositions.log_softmax(-1).gather(-1, batch.Tokens.unsqueeze(-1)).squeeze(-1);
        var (policyLoss, _) = PpoMath.PolicyLoss(logp, batch.OldLogProbabilities, batch.Advantages, batch.Mask, config.Clip);
        var values = model.Critic.forward(batch.Sequences).gather(1, batch.Positions);
        var valueLoss = PpoMath.ValueLoss(values, batch.OldValues, batch.Returns, batch.Mask, config.ValueClip);
        var loss = policyLoss + config.ValueCoefficient * valueLoss;
        if (config.EntropyCoefficient > 0) loss = loss - config.EntropyCoefficient * PpoMath.Entropy(atPositions, batch.Mask);
        if (config.PtxCoefficient > 0 && batch.PtxInputs is not null)
            loss = loss + config.PtxCoefficient * Gpt.Loss(model.Actor.forward(batch.PtxInputs), batch.PtxTargets!);
        return new ObjectiveOutput(loss, (long)batch.Mask.sum().item<float>());
    };
}
