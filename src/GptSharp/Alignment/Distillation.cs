using GptSharp.Models;
using GptSharp.Tokenization;
using GptSharp.Training;
using static TorchSharp.torch;

namespace GptSharp.Alignment;

/// <summary>What the student's next-token distribution is pulled toward the teacher's by.</summary>
public enum Divergence
{
    /// <summary>KL(student ‖ teacher): mode-seeking — the student puts its mass where the teacher is sure (on-policy distillation's default).</summary>
    ReverseKl,
    /// <summary>KL(teacher ‖ student): mass-covering — the student spreads over everything the teacher allows.</summary>
    ForwardKl,
    /// <summary>The generalised Jensen–Shannon divergence of GKD with β = 0.5: both KLs to the mixture, averaged.</summary>
    Jsd,
}

/// <summary>On-policy distillation settings: the student answers, the teacher grades every token.</summary>
public sealed record DistillConfig
{
    /// <summary>Prompts per rollout (one answer each).</summary>
    public int PromptsPerRollout { get; init; } = 32;
    /// <summary>Answers per optimisation minibatch.</summary>
    public int MiniBatch { get; init; } = 16;
    /// <summary>How the student samples (temperature 1: its own distribution).</summary>
    public RolloutSettings Rollout { get; init; } = new() { Temperature = 1.0 };
    public Divergence Divergence { get; init; } = Divergence.ReverseKl;

    public int StepsPerRollout => (PromptsPerRollout + MiniBatch - 1) / MiniBatch;

    public DistillConfig Validate()
    {
        if (PromptsPerRollout < 1) throw new ArgumentOutOfRangeException(nameof(PromptsPerRollout), PromptsPerRollout, "Need at least one prompt per rollout.");
        if (MiniBatch < 1) throw new ArgumentOutOfRangeException(nameof(MiniBatch), MiniBatch, "The minibatch must hold at least one answer.");
        Rollout.Validate();
        return this;
    }
}

/// <summary>A distillation minibatch: sequences (B, T), over each answer (B, R) the logit positions, tokens and mask,
/// and the teacher's log-probabilities over the vocabulary at each answer position (B, R, V).</summary>
public sealed record DistillBatch(Tensor Sequences, Tensor Positions, Tensor Tokens, Tensor Mask, Tensor TeacherLogProbabilities);

/// <summary>One distillation rollout: the student's answers scored by the teacher.</summary>
/// <param name="ReverseKl">KL(student ‖ teacher) per answer token over the vocabulary, before the rollout's steps.</param>
public sealed record DistillRolloutStats(int Iteration, double ReverseKl, double MeanResponseLength);

/// <summary>The divergences between two next-token distributions given as log-probabilities over the vocabulary.</summary>
public static class DistillMath
{
    /// <summary>Per position (…, V) → (…): the divergence of the student from the teacher.</summary>
    public static Tensor PerToken(Divergence divergence, Tensor studentLogProbabilities, Tensor teacherLogProbabilities)
    {
        using var scope = NewDisposeScope();
        var (s, t) = (studentLogProbabilities, teacherLogProbabilities);
        var result = divergence switch
        {
            Divergence.ReverseKl => (s.exp() * (s - t)).sum(-1),
            Divergence.ForwardKl => (t.exp() * (t - s)).sum(-1),
            Divergence.Jsd => Jsd(s, t),
            _ => throw new ArgumentOutOfRangeException(nameof(divergence), divergence, null),
        };
        return result.MoveToOuterDisposeScope();
    }

    static Tensor Jsd(Tensor s, Tensor t)
    {
        var mixture = (0.5 * (s.exp() + t.exp())).clamp_min(1e-30).log();
        return 0.5 * (t.exp() * (t - mixture)).sum(-1) + 0.5 * (s.exp() * (s - mixture)).sum(-1);
    }

    /// <summary>The mean of the per-token divergence over the answer tokens of <paramref name="mask"/> (B, R).</summary>
    public static Tensor Loss(Divergence divergence, Tensor studentLogProbabilities, Tensor teacherLogProbabilities, Tensor mask) =>
        (PerToken(divergence, studentLogProbabilities, teacherLogProbabilities) * mask).sum() / mask.sum().clamp_min(1);
}

/// <summary>
/// On-policy distillation (Agarwal et al. 2024, GKD; as TRL and Thinking Machines run it): the student samples answers
/// to a rollout's prompts with its current weights; the teacher gives its distribution at every answer position; the
/// student learns to match it there, token by token. No reward, and the student learns on what it actually writes.
/// </summary>
public sealed class DistillExperience : RolloutExperience<DistillBatch>
{
    readonly Gpt _student, _teacher;
    readonly GptTokenizer _tokenizer;
    readonly IReadOnlyList<string> _prompts;
    readonly DistillConfig _config;
    readonly long _seed;
    int _iteration;

    public DistillExperience(Gpt student, Gpt teacher, GptTokenizer tokenizer, IReadOnlyList<string> prompts, DistillConfig config, long seed, int iteration = 0)
    {
        if (prompts.Count == 0) throw new ArgumentException("Distillation needs at least one prompt.", nameof(prompts));
        if (student.Config.VocabSize != teacher.Config.VocabSize)
            throw new ArgumentException($"The teacher has {teacher.Config.VocabSize} tokens, the student {student.Config.VocabSize}: distillation compares distributions over one vocabulary.");
        (_student, _teacher, _tokenizer, _prompts, _config, _seed, _iteration) = (student, teacher, tokenizer, prompts, config.Validate(), seed, iteration);
    }

    public List<DistillRolloutStats> Rollouts { get; } = [];
    public override string Position => _iteration.ToString();

    protected override void RolloutOnce()
    {
        var random = RolloutRandom(_seed, _iteration);
        var prompts = Enumerable.Range(0, _config.PromptsPerRollout).Select(_ => _prompts[random.Next(_prompts.Count)]).ToList();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        _student.eval();
        using var rollout = Rollout.Sample(_student, _tokenizer, prompts, _config.Rollout.Temperature, _config.Rollout.MaxNewTokens,
            _seed * 1000 + (long)_iteration * prompts.Count, engine: _config.Rollout.Engine);
        var teacher = PpoExperience.ResponseLogits(_teacher, rollout.Sequences, rollout.Positions).log_softmax(-1);   // (B, R, V)
        var student = PpoExperience.ResponseLogits(_student, rollout.Sequences, rollout.Positions).log_softmax(-1);
        double reverseKl = DistillMath.Loss(Divergence.ReverseKl, student, teacher, rollout.Mask).item<float>();
        _student.train();
        Rollouts.Add(new DistillRolloutStats(_iteration, reverseKl, rollout.MeanLength));
        _iteration++;
        foreach (var chunk in Enumerable.Range(0, rollout.Rows).ToArray().Chunk(_config.MiniBatch))
        {
            var index = tensor(chunk.Select(i => (long)i).ToArray(), device: rollout.Sequences.device);
            var (seq, pos, tok, mask) = rollout.Select(index);
            Enqueue(new DistillBatch(Own(seq), Own(pos), Own(tok), Own(mask), Own(teacher.index_select(0, index))));
        }
    }

    /// <summary>The divergence of the student's distributions from the teacher's over one minibatch's answer tokens.</summary>
    public static Func<DistillBatch, ObjectiveOutput> Objective(Gpt student, DistillConfig config) => batch =>
    {
        var logp = PpoExperience.ResponseLogits(student, batch.Sequences, batch.Positions).log_softmax(-1);
        var loss = DistillMath.Loss(config.Divergence, logp, batch.TeacherLogProbabilities, batch.Mask);
        return new ObjectiveOutput(loss, Math.Max(1, (long)batch.Mask.sum().item<float>()));
    };
}
