using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Tokenization;
using GptSharp.Training;
using TorchSharp;

namespace GptSharp.Alignment;

/// <summary>What a distillation run did, rollout by rollout.</summary>
public sealed record DistillReport(TrainingResult Training, IReadOnlyList<DistillRolloutStats> Rollouts);

/// <summary>
/// On-policy distillation (<c>gptsharp distill</c>): a student run learns a teacher run's next-token distributions on
/// the answers it samples itself. The two must share the tokenizer, token for token (refused otherwise, naming both and
/// how they differ). Writes per-rollout statistics to <c>distill.jsonl</c> and the student to <c>RUN/policy</c>.
/// </summary>
public static class DistillRun
{
    /// <summary>The optimiser settings <c>distill</c> uses unless told otherwise: constant rate, no decay.</summary>
    public static TrainingConfig Defaults { get; } = new()
        { Steps = 100, BatchSize = new DistillConfig().MiniBatch, LearningRate = 1e-4, WarmupSteps = 0, MinLrRatio = 1, WeightDecay = 0, EvalEvery = 100, CheckpointEvery = 20 };

    public const string RolloutFile = "distill.jsonl";

    public static DistillReport Execute(string studentRun, string teacherRun, IReadOnlyList<string> prompts, DistillConfig config, TrainingConfig training,
        RunOptions options, Action<DistillRolloutStats>? onRollout = null)
    {
        var (runDirectory, resume, device, _, _) = options;
        config.Validate();
        int perRollout = config.StepsPerRollout;
        training = RlRun.OnRolloutBoundaries(training, perRollout);
        var (student, start) = Checkpoint.LoadModel(studentRun);
        using var _s = student;
        var (teacher, teacherState) = Checkpoint.LoadModel(teacherRun);
        using var _t = teacher;
        var tokenizer = GptTokenizer.Load(start.Tokenizer);
        var teacherTokenizer = GptTokenizer.Load(teacherState.Tokenizer);
        if (tokenizer.DifferenceFrom(teacherTokenizer) is { } difference)
            throw new ArgumentException($"--teacher {teacherRun}: its tokenizer '{teacherTokenizer.Spec.Name}' is not the student's '{tokenizer.Spec.Name}' ({difference}); " +
                                        "distillation compares distributions over one vocabulary, token for token.");
        var torchDevice = torch.device(device);
        student.to(torchDevice);
        teacher.to(torchDevice);
        teacher.eval();
        foreach (var p in teacher.parameters()) p.requires_grad = false;

        var log = new RlRunLog<DistillRolloutStats>(runDirectory, RolloutFile, Path.Combine(runDirectory, RlRun.PolicyFolder), resume, start.Tokenizer, null, perRollout,
            (m, r) => new { step = m.Step, iteration = r.Iteration, reverseKl = r.ReverseKl, meanResponseLength = r.MeanResponseLength }, onRollout);
        var setup = new RunSetup(runDirectory, training, resume, start.Tokenizer, "on-policy distillation", device, DataParallel: false, Command: "distill");
        var (outcome, experience) = RlRun.Train(setup, options, log, student, run =>
        {
            var experience = new DistillExperience(student, teacher, tokenizer, prompts, config, training.Seed, RlRun.NextRollout(run.DataPosition, "Distillation"));
            return (experience, new RunObjective<DistillBatch>(student, student.Config, DistillExperience.Objective(student, config), experience, null, new
            {
                objective = "distill", from = RunFolder.Reference(runDirectory, studentRun), teacher = RunFolder.Reference(runDirectory, teacherRun),
                distill = config, training, tokenizer = run.Tokenizer, prompts = prompts.Count,
            }));
        }, e => e.Rollouts);
        return new DistillReport(outcome.Training, experience.Rollouts);
    }
}
