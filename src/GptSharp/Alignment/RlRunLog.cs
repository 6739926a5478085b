using System.Text.Json;
using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Training;

namespace GptSharp.Alignment;

/// <summary>
/// What PPO and GRPO runs share around the trainer: a per-rollout JSONL log (one line per rollout as it lands), the
/// policy folder (<c>RUN/policy</c>) with its held-out selection on a schedule of whole rollouts, and the final
/// policy when no selection is asked for.
/// </summary>
sealed class RlRunLog<TStats>
{
    readonly string _logPath, _policyFolder, _tokenizer;
    readonly Func<StepMetrics, TStats, object> _row;
    readonly Action<TStats>? _onRollout;
    readonly int _checkEverySteps;
    int _seen;

    /// <param name="row">The log line of a rollout (serialised as JSON).</param>
    public RlRunLog(string runDirectory, string logFile, string policyFolder, bool resume, string tokenizer, PolicySelection? selection,
        int stepsPerRollout, Func<StepMetrics, TStats, object> row, Action<TStats>? onRollout)
    {
        (_logPath, _policyFolder, _tokenizer, _row, _onRollout) = (Path.Combine(runDirectory, logFile), policyFolder, tokenizer, row, onRollout);
        // A policy left by an unfinished earlier run in this folder is stale.
        if (!resume && Checkpoint.Find(runDirectory) is null && Directory.Exists(policyFolder)) Directory.Delete(policyFolder, recursive: true);
        Keeper = selection is null ? null : new BestPolicy(policyFolder, tokenizer, selection.HeldOutGold, selection.Tolerance);
        _checkEverySteps = selection is null ? 0 : stepsPerRollout * selection.EveryRollouts;
    }

    public BestPolicy? Keeper { get; }

    /// <summary>After a step: logs the rollouts that landed since the last call, and measures the policy when due.</summary>
    public void AfterStep(StepMetrics step, IReadOnlyList<TStats> rollouts, Gpt policy)
    {
        for (; _seen < rollouts.Count; _seen++)
        {
            File.AppendAllText(_logPath, JsonSerializer.Serialize(_row(step, rollouts[_seen])) + "\n");
            _onRollout?.Invoke(rollouts[_seen]);
        }
        if (Keeper is not null && step.Step % _checkEverySteps == 0) Keeper.Consider(step.Step, policy);
    }

    /// <summary>At the end: the last policy into the policy folder, or measured once more if the schedule missed it.</summary>
    public void Finish(string runDirectory, Gpt policy)
    {
        int finalStep = Checkpoint.ReadState(runDirectory).Step;
        if (Keeper is null) Checkpoint.Save(_policyFolder, policy, null, new TrainingState(finalStep, "0:0", "", RunFolder.KeepTokenizer(_policyFolder, _tokenizer)));
        else if (Keeper.History.LastOrDefault()?.Step != finalStep) Keeper.Consider(finalStep, policy);
    }
}
