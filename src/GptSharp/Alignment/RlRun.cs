using GptSharp.Models;
using GptSharp.Training;

namespace GptSharp.Alignment;

/// <summary>What PPO, GRPO and distillation runs share: the policy folder on disk, and the scaffold around the trainer.</summary>
public static class RlRun
{
    /// <summary>The policy a run hands on (the kept one when it selects by held-out gold), a plain GPT run folder inside the run folder.</summary>
    public const string PolicyFolder = "policy";

    /// <summary>
    /// Trains an RL objective through the one trainer: <paramref name="build"/> makes the rollout experience at the
    /// run's saved position and the objective over it; after each step the rollouts that landed go to the log (and the
    /// policy is measured when due); at the end the policy is written. The experience is disposed whatever happens; its
    /// statistics stay readable.
    /// </summary>
    internal static (RunOutcome Outcome, TExperience Experience) Train<TBatch, TStats, TExperience>(RunSetup setup, RunOptions options,
        RlRunLog<TStats> log, Gpt policy, Func<RunContext, (TExperience Experience, RunObjective<TBatch> Objective)> build,
        Func<TExperience, IReadOnlyList<TStats>> rollouts)
        where TExperience : class, IDisposable
    {
        TExperience? experience = null;
        try
        {
            var outcome = TrainingRun.Execute(setup, run =>
            {
                var built = build(run);
                experience = built.Experience;
                return built.Objective;
            }, onStep: m =>
            {
                log.AfterStep(m, rollouts(experience!), policy);
                options.OnStep?.Invoke(m);
            }, cancellation: options.Cancellation, untilStep: options.UntilStep);
            log.Finish(setup.Directory, policy);
            return (outcome, experience!);
        }
        finally
        {
            experience?.Dispose();
        }
    }

    /// <summary>The training settings with checkpoints moved to the nearest rollout boundary (at least one rollout
    /// apart), where a resume continues exactly; validated.</summary>
    internal static TrainingConfig OnRolloutBoundaries(TrainingConfig training, int stepsPerRollout) =>
        (training with { CheckpointEvery = Math.Max(1, (int)Math.Round(training.CheckpointEvery / (double)stepsPerRollout)) * stepsPerRollout }).Validate();

    /// <summary>The next rollout's number from a run's saved position (0 for a fresh run).</summary>
    internal static int NextRollout(string? position, string objective) => position is null ? 0 : int.TryParse(position, out int next) ? next
        : throw new InvalidDataException($"{objective} position '{position}': expected the next rollout's number.");
}
