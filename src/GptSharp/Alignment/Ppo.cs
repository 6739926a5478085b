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
    public int MaxNewTokens { get; init; } = 64;
    /// <summary>Sampling temperature of the rollouts; log-probabilities (policy and reference) are taken at the same
    /// temperature, so the policy is optimised as it will be sampled.</summary>
    public double Temperature { get; init; } = 0.7;
    public double KlCoefficient { get; init; } = 0.1;
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
public sealed record RolloutStats(int Iteration, double MeanScore, double MeanKl, double MeanResponseLength);

/// <summary>
/// Produces PPO experience for the shared trainer: when its buffer is empty it samples responses to a rollout's prompts
/// with the current policy (KV-cache sampler), scores them with the frozen reward model, computes per-token KL to the
/// frozen reference (folded into the rewards), values, GAE advantages (whitened) and returns; then serves the
/// experience as minibatches for several epochs.
/// </summary>
public sealed class PpoExperience : IBatchSource<PpoBatch>, IDisposable
{
    readonly ActorCritic _model;
    readonly Gpt _reference;
    readonly Func<Tensor, Tensor, Tensor> _score;
    readonly GptTokenizer _tokenizer;
    readonly IReadOnlyList<string> _prompts;
    readonly PpoConfig _config;
    readonly Device _device;
    readonly long _seed;
    readonly Queue<PpoBatch> _queue = new();
    readonly List<Tensor> _owned = [];
    readonly Data.TokenBatchLoader? _ptx;
    int _iteration;

    /// <param name="score">Scores whole sequences (B, T) at their last token index (B) → (B): a reward model's
    /// <see cref="RewardModel.Score"/>, or a program that checks the answer.</param>
    public PpoExperience(ActorCritic model, Gpt reference, Func<Tensor, Tensor, Tensor> score, GptTokenizer tokenizer, IReadOnlyList<string> prompts,
        PpoConfig config, Device device, long seed, int iteration = 0, Data.TokenBatchLoader? ptx = null)
    {
        if (prompts.Count == 0) throw new ArgumentException("PPO needs at least one prompt.", nameof(prompts));
        if (config.PtxCoefficient > 0 && ptx is null) throw new ArgumentException("A ptx coefficient needs pretraining batches.", nameof(ptx));
        (_model, _reference, _score, _tokenizer, _prompts, _config, _device, _seed, _iteration, _ptx) = (model, reference, score, tokenizer, prompts, config, device, seed, iteration, ptx);
    }

    /// <summary>Parses <see cref="Position"/>: the next rollout's iteration and, with ptx, the pretraining loader's position.</summary>
    public static (int Iteration, Data.LoaderPosition Ptx) ParsePosition(string position)
    {
        var parts = position.Split(';');
        if (!int.TryParse(parts[0], out int iteration)) throw new InvalidDataException($"PPO position '{position}': expected 'iteration' or 'iteration;epoch:cursor'.");
        return (iteration, parts.Length > 1 ? LoaderPosition.Parse(parts[1]) : default);
    }

    /// <summary>Statistics of every rollout so far.</summary>
    public List<RolloutStats> Rollouts { get; } = [];
    /// <summary>
    /// The next rollout's iteration (and the ptx loader's position). Checkpoints fall on rollout boundaries (see
    /// <see cref="PpoConfig.StepsPerRollout"/>), where this resumes exactly; a run stopped mid-rollout resumes at the next one.
    /// </summary>
    public string Position => _ptx is null ? _iteration.ToString() : $"{_iteration};{_ptx.Position.Format()}";

    public PpoBatch Next()
    {
        if (_queue.Count == 0) Rollout();
        return _queue.Dequeue();
    }

    void Rollout()
    {
        foreach (var old in _owned) old.Dispose();
        _owned.Clear();
        var template = new ChatTemplate(_tokenizer);
        var random = new Random((int)((_seed * 31 + _iteration) & 0x7fffffff));
        var prompts = Enumerable.Range(0, _config.RolloutPrompts).Select(_ => _prompts[random.Next(_prompts.Count)]).ToList();
        var rendered = prompts.Select(p => template.RenderPrompt([new ChatMessage(ChatRoles.User, p)])).ToList();
        var generator = new TokenDecoder(_model.Actor);
        int context = _model.Actor.Config.ContextLength;
        var responses = generator.Generate(rendered, new SamplingOptions(Temperature: _config.Temperature, TopK: 0, TopP: 1.0,
            MaxNewTokens: Math.Min(_config.MaxNewTokens, context - rendered.Max(r => r.Length)), Seed: _seed * 1000 + _iteration * _config.RolloutPrompts,
            StopTokens: [_tokenizer.EndId, _tokenizer.BosId])).Select(g => g.Tokens).ToList();

        int b = rendered.Count, r = Math.Max(1, responses.Max(x => x.Length)), t = rendered.Zip(responses, (p, x) => p.Length + x.Length).Max();
        var sequences = new long[b * t];
        var positions = new long[b * r];
        var tokens = new long[b * r];
        var mask = new float[b * r];
        var last = new long[b];
        Array.Fill(sequences, _tokenizer.PadId);
        for (int row = 0; row < b; row++)
        {
            int[] full = [.. rendered[row], .. responses[row]];
            for (int j = 0; j < full.Length; j++) sequences[row * t + j] = full[j];
            for (int k = 0; k < r; k++)
            {
                bool real = k < responses[row].Length;
                positions[row * r + k] = real ? rendered[row].Length - 1 + k : 0;
                tokens[row * r + k] = real ? responses[row][k] : 0;
                mask[row * r + k] = real ? 1 : 0;
            }
            last[row] = full.Length - 1;
        }

        using var noGrad = no_grad();
        _model.eval();
        var seq = tensor(sequences, [b, t], device: _device);
        var pos = tensor(positions, [b, r], device: _device);
        var tok = tensor(tokens, [b, r], device: _device);
        var m = tensor(mask, [b, r], device: _device);
        var oldLogp = ResponseLogProbabilities(_model.Actor, seq, pos, tok, _config.Temperature);
        var refLogp = ResponseLogProbabilities(_reference, seq, pos, tok, _config.Temperature);
        var values = _model.Critic.forward(seq).gather(1, pos) * m;
        var scores = _score(seq, tensor(last, device: _device)).to(ScalarType.Float32);
        var kl = PpoMath.Kl(oldLogp, refLogp, _config.RewardKl) * m;
        var rewards = PpoMath.TokenRewards(kl, scores, m, _config.KlCoefficient);
        var (advantages, returns) = PpoMath.Gae(rewards, values, m, _config.Gamma, _config.Lambda);
        if (_config.WhitenAdvantages) advantages = PpoMath.Whiten(advantages, m);
        _model.train();

        Rollouts.Add(new RolloutStats(_iteration, scores.mean().item<float>(),
            (kl.sum() / b).item<float>(), m.sum().item<float>() / b));
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
                _queue.Enqueue(batch);
            }
        }
    }

    Tensor Own(Tensor t)
    {
        var kept = t.DetachFromDisposeScope();
        _owned.Add(kept);
        return kept;
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
    static Tensor ResponseLogits(Gpt model, Tensor sequences, Tensor positions, double temperature)
    {
        var logits = model.forward(sequences);                                                       // (B, T, V)
        var atPositions = logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, logits.shape[2])); // (B, R, V)
        return temperature == 1.0 ? atPositions : atPositions / temperature;
    }

    /// <summary>PPO's loss for one minibatch: clipped policy loss + c_v · clipped value loss − c_e · entropy (+ c_ptx · pretraining loss).</summary>
    public static Func<PpoBatch, ObjectiveOutput> Objective(ActorCritic model, PpoConfig config) => batch =>
    {
        var atPositions = ResponseLogits(model.Actor, batch.Sequences, batch.Positions, config.Temperature);
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

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }
}
