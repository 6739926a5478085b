using System.Text.Json;
using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Runtime;
using GptSharp.Training;

namespace GptSharp.Alignment;

/// <summary>A held-out gold measurement of the policy during RL.</summary>
public sealed record GoldCheck(int Step, double Score);

/// <summary>
/// Keeps the RL policy with the best held-out gold score (a program, on prompts RL does not train on) in a plain GPT
/// run folder, so a run that over-optimises its reward late still hands on its best model. A held-out score is noisy,
/// so a later policy within <c>tolerance</c> of the best score so far replaces the kept one: the latest policy is kept
/// unless it has fallen clearly below an earlier one. <c>selection.json</c> beside the weights says which step was kept
/// and every score measured; a resumed run reads it back.
/// </summary>
public sealed class BestPolicy
{
    public const string SelectionFile = "selection.json";
    readonly string _folder, _tokenizer;
    readonly Func<Gpt, double> _score;
    readonly double _tolerance;

    /// <param name="score">The gold score of a policy on held-out prompts (higher is better); runs with the policy in eval mode.</param>
    /// <param name="tolerance">How far below the best score so far a later policy may score and still be kept (about one standard error of the score).</param>
    public BestPolicy(string folder, string tokenizer, Func<Gpt, double> score, double tolerance = 0)
    {
        if (tolerance < 0) throw new ArgumentOutOfRangeException(nameof(tolerance), tolerance, "The tolerance must be >= 0.");
        (_folder, _tokenizer, _score, _tolerance) = (folder, tokenizer, score, tolerance);
        string path = Path.Combine(folder, SelectionFile);
        if (File.Exists(path))
        {
            var saved = JsonSerializer.Deserialize<Selection>(File.ReadAllText(path), Checkpoint.Json)
                        ?? throw new InvalidDataException($"{path}: empty selection record.");
            History.AddRange(saved.History);
            Kept = new GoldCheck(saved.Step, saved.Score);
        }
    }

    public List<GoldCheck> History { get; } = [];
    /// <summary>The measurement of the policy saved in the folder.</summary>
    public GoldCheck? Kept { get; private set; }

    /// <summary>Measures the policy and saves it when it scores within the tolerance of the best score so far (always
    /// for the first). Returns the measurement.</summary>
    public GoldCheck Consider(int step, Gpt policy)
    {
        bool training = policy.training;
        policy.eval();
        double score;
        try { score = _score(policy); }
        finally { if (training) policy.train(); }
        var check = new GoldCheck(step, score);
        double best = History.Count == 0 ? double.NegativeInfinity : History.Max(h => h.Score);
        History.Add(check);
        if (score >= best - _tolerance)
        {
            Checkpoint.Save(_folder, policy, null, new TrainingState(step, "0:0", "", RunFolder.KeepTokenizer(_folder, _tokenizer)));
            Kept = check;
        }
        AtomicFile.WriteAllText(Path.Combine(_folder, SelectionFile), JsonSerializer.Serialize(new Selection(Kept!.Step, Kept.Score, History), Checkpoint.Json));
        return check;
    }

    sealed record Selection(int Step, double Score, List<GoldCheck> History);
}
