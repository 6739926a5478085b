using GptSharp.Runs;
using GptSharp.Runtime;
using System.Text.Json;
using GptSharp.Data;
using GptSharp.Tokenization;

namespace GptSharp.Evaluation;

/// <summary>Bits per byte and perplexity of one corpus's held-out text.</summary>
public sealed record CorpusScore(string Corpus, double BitsPerByte, double Perplexity, long Tokens);

/// <summary>What <c>gptsharp eval</c> measured for one run: every task at every k, and every corpus's bits per byte.</summary>
public sealed record EvalReport(string Run, IReadOnlyList<TaskScore> Tasks, IReadOnlyList<CorpusScore> Corpora);

/// <summary>Evaluates a run (base, SFT or RLHF policy alike) and writes <c>RUN/eval.json</c>.</summary>
public static class EvalRun
{
    public const string FileName = "eval.json";

    /// <param name="tasks">Built-in task names or paths of JSONL task files.</param>
    /// <param name="corpora">Embedded corpora whose held-out documents (the same 2% <c>data prepare</c> holds out) are scored in bits per byte.</param>
    public static EvalReport Execute(string runDirectory, IReadOnlyList<string> tasks, IReadOnlyList<int> shots, IReadOnlyList<string> corpora,
        int items = 200, long seed = 0, int bytesPerCorpus = 20_000, Action<TaskScore>? onScore = null)
    {
        if (shots.Any(k => k < 0)) throw new ArgumentOutOfRangeException(nameof(shots), "Shots must be 0 or more.");
        var (model, state) = Checkpoint.LoadModel(runDirectory);
        using var _ = model;
        model.eval();
        var tokenizer = GptTokenizer.Load(state.Tokenizer);
        var evaluator = new Evaluator(model, tokenizer);
        var scores = new List<TaskScore>();
        foreach (string name in tasks)
        {
            var task = name.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) ? EvalTask.Load(name) : BuiltInTasks.Build(name, items);
            foreach (int k in shots)
            {
                var score = evaluator.Score(task, k, seed);
                scores.Add(score);
                onScore?.Invoke(score);
            }
        }
        var corpusScores = corpora.Select(c =>
        {
            var (bpb, perplexity, tokens) = evaluator.BitsPerByte(HeldOutText(c, bytesPerCorpus));
            return new CorpusScore(c, bpb, perplexity, tokens);
        }).ToList();
        var report = new EvalReport(Path.GetFullPath(runDirectory), scores, corpusScores);
        AtomicFile.WriteAllText(Path.Combine(runDirectory, FileName), JsonSerializer.Serialize(report, Checkpoint.Json));
        return report;
    }

    /// <summary>Held-out documents of an embedded corpus (never in the training shards), up to a byte budget.</summary>
    public static IEnumerable<string> HeldOutText(string corpus, int maxBytes)
    {
        int used = 0;
        foreach (var (document, index) in Corpus.Read(corpus).Select((d, i) => (d, i)))
        {
            if (used >= maxBytes) yield break;
            if (!ShardBuilder.IsValidation(BuiltInTasks.DataSeed, corpus, index, BuiltInTasks.DataHeldOut)) continue;
            string text = document.Text.Length > maxBytes - used ? document.Text[..Math.Max(1, (maxBytes - used) / 3)] : document.Text;
            used += System.Text.Encoding.UTF8.GetByteCount(text);
            yield return text;
        }
    }
}
