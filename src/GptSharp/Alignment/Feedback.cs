using System.Text.Json;
using GptSharp.Models;
using GptSharp.Runtime;
using GptSharp.Tokenization;

namespace GptSharp.Alignment;

/// <summary>Settings of feedback collection on a policy's own samples.</summary>
/// <param name="AnswersPerPrompt">K: every pair of a prompt's K answers that the labeler ranks apart becomes a comparison.</param>
/// <param name="LabelNoise">Probability that a comparison's order is flipped: simulated disagreement among human labelers.</param>
/// <param name="PromptsPerBatch">Prompts decoded together (K answers each).</param>
public sealed record FeedbackOptions(int AnswersPerPrompt = 4, double Temperature = 0.7, int MaxNewTokens = 64, double LabelNoise = 0,
    long Seed = 1, int PromptsPerBatch = 16)
{
    public FeedbackOptions Validate()
    {
        if (AnswersPerPrompt < 2) throw new ArgumentOutOfRangeException(nameof(AnswersPerPrompt), AnswersPerPrompt, "Comparisons need at least 2 answers per prompt.");
        if (Temperature <= 0) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Answers are sampled: the temperature must be > 0.");
        if (MaxNewTokens < 1) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "Answers need at least one token.");
        if (LabelNoise is < 0 or > 0.5) throw new ArgumentOutOfRangeException(nameof(LabelNoise), LabelNoise, "The label noise rate must be in [0, 0.5].");
        if (PromptsPerBatch < 1) throw new ArgumentOutOfRangeException(nameof(PromptsPerBatch), PromptsPerBatch, "Need at least one prompt per batch.");
        return this;
    }
}

/// <summary>What a collection produced.</summary>
/// <param name="Ties">Prompts whose answers the labeler scored all alike (no comparison).</param>
public sealed record FeedbackReport(int Prompts, int Pairs, int Ties, int Flipped, double MeanScore, bool Resumed);

/// <summary>
/// InstructGPT's data loop on a small scale: sample K answers per prompt from the policy being aligned, have a labeler
/// score them, and write every pair ranked apart as a preference comparison (the preference JSONL that <c>reward</c> and
/// <c>dpo</c> read), all pairs of one prompt sharing a <c>group</c> so that they train in one batch. Pairs are appended a
/// batch of prompts at a time with a progress record beside the file, so a crash loses at most one batch and a rerun
/// continues where it stopped with the same samples.
/// </summary>
public static class Feedback
{
    /// <summary>The prompts a collection asks: <paramref name="count"/> of them (0: all) in an order shuffled by the seed.</summary>
    public static List<string> ChoosePrompts(IReadOnlyList<string> prompts, int count, long seed)
    {
        var chosen = prompts.ToList();
        new Random((int)(seed & 0x7fffffff)).Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(chosen));
        return count > 0 ? chosen.Take(count).ToList() : chosen;
    }

    /// <summary>The progress record beside an output file.</summary>
    public static string ProgressPath(string output) => output + ".progress.json";

    sealed record Progress(int Prompts, int Pairs, int Ties, int Flipped, double ScoreSum, string Policy, int AnswersPerPrompt);

    public static FeedbackReport Collect(Gpt policy, GptTokenizer tokenizer, IReadOnlyList<string> prompts, RewardFunction labeler,
        FeedbackOptions options, string output, string policyName = "", Action<int>? onPrompts = null)
    {
        options.Validate();
        if (prompts.Count == 0) throw new ArgumentException("No prompts to collect feedback on.", nameof(prompts));
        var progress = Resume(output, policyName, options.AnswersPerPrompt);
        bool resumed = progress.Prompts > 0;
        int k = options.AnswersPerPrompt;
        for (int start = progress.Prompts; start < prompts.Count; start += options.PromptsPerBatch)
        {
            var chunk = prompts.Skip(start).Take(options.PromptsPerBatch).ToList();
            var completions = SampleAnswers(policy, tokenizer, chunk, options, start);
            var scores = labeler(completions);
            var lines = new System.Text.StringBuilder();
            int pairs = 0, ties = 0, flipped = 0;
            for (int p = 0; p < chunk.Count; p++)
            {
                int index = start + p;
                var noise = new Random((int)((options.Seed * 7919 + index) & 0x7fffffff));
                int before = pairs;
                for (int i = 0; i < k; i++)
                    for (int j = i + 1; j < k; j++)
                    {
                        double si = scores[p * k + i], sj = scores[p * k + j];
                        bool flip = options.LabelNoise > 0 && noise.NextDouble() < options.LabelNoise;
                        if (si == sj || completions[p * k + i].Answer == completions[p * k + j].Answer) continue;
                        // An answer with no text (the model ended its turn at once) cannot be written as a comparison.
                        if (completions[p * k + i].Answer.Trim().Length == 0 || completions[p * k + j].Answer.Trim().Length == 0) continue;
                        var (better, worse) = si > sj ? (i, j) : (j, i);
                        if (flip) { (better, worse) = (worse, better); flipped++; }
                        lines.Append(ChatData.PreferenceLine(new PreferencePair([new ChatMessage(ChatRoles.User, chunk[p])],
                            completions[p * k + better].Answer, completions[p * k + worse].Answer, $"prompt-{index}")));
                        pairs++;
                    }
                if (pairs == before) ties++;
            }
            using (var stream = new FileStream(output, FileMode.Append, FileAccess.Write))
            using (var writer = new StreamWriter(stream))
            {
                writer.Write(lines.ToString());
                writer.Flush();
                stream.Flush(flushToDisk: true);
            }
            progress = progress with
            {
                Prompts = start + chunk.Count, Pairs = progress.Pairs + pairs, Ties = progress.Ties + ties, Flipped = progress.Flipped + flipped,
                ScoreSum = progress.ScoreSum + scores.Sum(),
            };
            AtomicFile.WriteAllText(ProgressPath(output), JsonSerializer.Serialize(progress));
            onPrompts?.Invoke(progress.Prompts);
        }
        return new FeedbackReport(progress.Prompts, progress.Pairs, progress.Ties, progress.Flipped, progress.ScoreSum / Math.Max(1, progress.Prompts * k), resumed);
    }

    /// <summary>Where an interrupted collection stands: its progress record, with the output cut back to the prompts the
    /// record counts (a crash between appending and recording leaves extra lines, or half a line).</summary>
    static Progress Resume(string output, string policyName, int k)
    {
        string path = ProgressPath(output);
        if (!File.Exists(path))
        {
            if (File.Exists(output)) throw new IOException($"{output} exists and has no progress record ({path}): choose another --out, or delete it to start over.");
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output))!);
            return new Progress(0, 0, 0, 0, 0, policyName, k);
        }
        var progress = JsonSerializer.Deserialize<Progress>(File.ReadAllText(path)) ?? throw new InvalidDataException($"{path}: empty progress record.");
        if (progress.Policy != policyName || progress.AnswersPerPrompt != k)
            throw new InvalidDataException($"{path}: this file was collected from '{progress.Policy}' with {progress.AnswersPerPrompt} answers per prompt; " +
                                           $"continuing it from '{policyName}' with {k} would mix two collections. Choose another --out.");
        var kept = new List<string>();
        if (File.Exists(output))
            foreach (string line in File.ReadLines(output))
            {
                if (!line.EndsWith('}')) break; // half a line: the crash came mid-append
                int group = GroupIndex(line);
                if (group < progress.Prompts) kept.Add(line);
            }
        AtomicFile.WriteAllText(output, string.Concat(kept.Select(l => l + "\n")));
        return progress;
    }

    /// <summary>
    /// Answers for people to judge: K per prompt (their distinct texts), written as label items
    /// (<c>{"id","prompt","answers"}</c> lines, see <see cref="LabelingSession.ReadItems"/>). A prompt whose answers are
    /// all the same text is left out. Returns the number of items written.
    /// </summary>
    public static int SampleForLabeling(Gpt policy, GptTokenizer tokenizer, IReadOnlyList<string> prompts, FeedbackOptions options, string output)
    {
        options.Validate();
        int k = options.AnswersPerPrompt, items = 0;
        var lines = new System.Text.StringBuilder();
        for (int start = 0; start < prompts.Count; start += options.PromptsPerBatch)
        {
            var chunk = prompts.Skip(start).Take(options.PromptsPerBatch).ToList();
            var completions = SampleAnswers(policy, tokenizer, chunk, options, start);
            for (int p = 0; p < chunk.Count; p++)
            {
                var answers = completions.Skip(p * k).Take(k).Select(c => c.Answer).Where(a => a.Trim().Length > 0).Distinct().ToList();
                if (answers.Count < 2) continue;
                lines.Append(JsonSerializer.Serialize(new { id = $"{start + p}", prompt = chunk[p], answers }, ChatData.JsonOptions)).Append('\n');
                items++;
            }
        }
        AtomicFile.WriteAllText(output, lines.ToString());
        return items;
    }

    /// <summary>K answers to each prompt of a chunk (prompt after prompt); the seed depends on where the chunk starts, so a
    /// resumed collection samples what a straight one would.</summary>
    static List<Completion> SampleAnswers(Gpt policy, GptTokenizer tokenizer, IReadOnlyList<string> chunk, FeedbackOptions options, int start)
    {
        int k = options.AnswersPerPrompt;
        using var rollout = Rollout.Sample(policy, tokenizer, [.. chunk.SelectMany(p => Enumerable.Repeat(p, k))], options.Temperature,
            options.MaxNewTokens, options.Seed * 1_000_003 + (long)start * k);
        return [.. rollout.Completions];
    }

    /// <summary>
    /// How often a proxy reward orders fresh answers as the gold program does: K answers per prompt sampled from the
    /// policy; over every pair the gold ranks apart, the share the proxy ranks the same way (ties in the proxy count half).
    /// </summary>
    public static (int Pairs, double Agreement) Agreement(Gpt policy, GptTokenizer tokenizer, IReadOnlyList<string> prompts, RewardFunction proxy,
        RewardFunction gold, int answersPerPrompt = 4, double temperature = 0.7, int maxNewTokens = 64, long seed = 2)
    {
        var repeated = prompts.SelectMany(p => Enumerable.Repeat(p, answersPerPrompt)).ToList();
        List<Completion> completions;
        using (var rollout = Rollout.Sample(policy, tokenizer, repeated, temperature, maxNewTokens, seed))
            completions = [.. rollout.Completions];
        double[] truth = gold(completions), guess = proxy(completions);
        int pairs = 0;
        double agree = 0;
        for (int p = 0; p < prompts.Count; p++)
            for (int i = 0; i < answersPerPrompt; i++)
                for (int j = i + 1; j < answersPerPrompt; j++)
                {
                    int a = p * answersPerPrompt + i, b = p * answersPerPrompt + j;
                    if (truth[a] == truth[b]) continue;
                    pairs++;
                    agree += guess[a] == guess[b] ? 0.5 : Math.Sign(guess[a] - guess[b]) == Math.Sign(truth[a] - truth[b]) ? 1 : 0;
                }
        return (pairs, agree / Math.Max(1, pairs));
    }

    static int GroupIndex(string line)
    {
        using var document = JsonDocument.Parse(line);
        string group = document.RootElement.GetProperty("group").GetString()!;
        return int.Parse(group["prompt-".Length..]);
    }
}
