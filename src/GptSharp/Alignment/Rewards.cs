using GptSharp.Data;
using GptSharp.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Alignment;

/// <summary>One sampled answer to score: the user's prompt, the answer's text (its last assistant turn, after any tool
/// turns) and tokens (the closing <c>&lt;|end|&gt;</c> included when the model stopped), and whether the length limit
/// cut it.</summary>
/// <param name="Inserted">Per answer token, whether a tool wrote it (no loss, no log-probability); null: none did.</param>
/// <param name="SamplerLogprobs">Per answer token, its log-probability under the distribution the rollout engine drew it
/// from (NaN for tokens a tool wrote); null when not recorded.</param>
/// <param name="Episode">How the environment's episode ended, when an environment answered (see <see cref="IEnvironment"/>).</param>
public sealed record Completion(string Prompt, string Answer, int[] PromptTokens, int[] AnswerTokens, bool Truncated, bool[]? Inserted = null,
    double[]? SamplerLogprobs = null, EpisodeOutcome? Episode = null);

/// <summary>Scores a batch of completions, one number each (higher is better).</summary>
public delegate double[] RewardFunction(IReadOnlyList<Completion> completions);

/// <summary>Thrown when a reward program fails: names the prompt it failed on.</summary>
public sealed class RewardProgramException(string prompt, Exception inner)
    : Exception($"The reward program failed on the prompt \"{prompt}\": {inner.Message}", inner)
{
    public string Prompt { get; } = prompt;
}

/// <summary>
/// Where RL rewards come from: a program that checks an answer (the poem form, an expected answer, a user's own C#
/// function) or a learned reward model. Programs are the gold standard a learned reward is measured against.
/// </summary>
public static class Rewards
{
    /// <summary>A reward from a C# function of one completion; an exception names the prompt it failed on.</summary>
    public static RewardFunction FromProgram(Func<Completion, double> program) => completions =>
    {
        var scores = new double[completions.Count];
        for (int i = 0; i < scores.Length; i++)
        {
            double score;
            try { score = program(completions[i]); }
            catch (Exception e) { throw new RewardProgramException(completions[i].Prompt, e); }
            if (!double.IsFinite(score)) throw new RewardProgramException(completions[i].Prompt, new ArithmeticException($"it returned {score}"));
            scores[i] = score;
        }
        return scores;
    };

    /// <summary>The environment's reward: what each completion's episode earned (see <see cref="EpisodeOutcome"/>).</summary>
    public static RewardFunction Episodes { get; } = FromProgram(c => c.Episode?.Reward ?? throw new InvalidOperationException("no environment answered it"));

    /// <summary>1 for a regular quatrain or regulated verse (see <see cref="PoemForm.IsRegularQuatrainOrRegulated"/>), else 0.</summary>
    public static RewardFunction Form { get; } = FromProgram(c => PoemForm.IsRegularQuatrainOrRegulated(c.Answer.Split('\n')) ? 1 : 0);

    /// <summary>
    /// A graded form check, as a labeler who ranks near misses above nonsense would give: 1 for a regular poem (as
    /// <see cref="Form"/>), else 0.9 / (1 + d) (0 for an empty answer) where d counts how far the answer is from one: lines away from 2 or 4,
    /// characters away from clauses of 5 or 7 on each side of 「，」, a missing 「，」 or 「。」, clause lengths that differ
    /// between lines. Rarely ties, so K answers give more comparisons than the 0/1 check.
    /// </summary>
    public static RewardFunction FormCloseness { get; } = FromProgram(c => FormDistanceScore(c.Answer));

    /// <summary>
    /// The verse task's graded reward: a poem of regular form scores 0.5 plus half the checker's graded share of the rules
    /// it keeps (those its prompt asks included); any other answer at most 0.45, by how close it comes to the form
    /// (<see cref="FormCloseness"/>); a poem that passes strict gets 0.5 more. So form comes first, then every further
    /// rule kept is worth more, and keeping all the required ones at once most of all (the rules met one at a time
    /// rarely add up to a strict poem).
    /// </summary>
    public static RewardFunction VerseGraded(Verse verse) => FromProgram(c =>
    {
        var verdict = verse.CheckAnswer(c.Prompt, c.Answer);
        if (verdict.Passed(VerseRule.Form) != true) return 0.5 * FormDistanceScore(c.Answer);
        return 0.5 + 0.5 * verdict.Graded + (verdict.Strict ? StrictBonus : 0);
    });

    const double StrictBonus = 0.5;

    /// <summary>1 when the answer passes the checker's strict verdict for its prompt, else 0.</summary>
    public static RewardFunction VerseStrict(Verse verse) => FromProgram(c => verse.CheckAnswer(c.Prompt, c.Answer).Strict ? 1 : 0);

    static double FormDistanceScore(string answer)
    {
        var lines = answer.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (lines.Length == 0) return 0;
        if (PoemForm.IsRegularQuatrainOrRegulated(lines)) return 1;
        double distance = lines.Length <= 3 ? Math.Abs(lines.Length - 2) : Math.Abs(lines.Length - 4);
        var clauses = new List<int>();
        foreach (string line in lines)
        {
            int comma = line.IndexOf('，');
            bool closed = line[^1] == '。';
            if (comma < 0 || !closed)
            {
                // No clause structure: how far the line's length is from a whole line of 5 or 7 a side.
                distance += 2 + Math.Min(Math.Abs(line.Length - 12), Math.Abs(line.Length - 16)) / 2.0;
                continue;
            }
            int first = comma, second = line.Length - comma - 2;
            distance += Math.Min(Math.Abs(first - 5) + Math.Abs(second - 5), Math.Abs(first - 7) + Math.Abs(second - 7));
            clauses.Add(first);
        }
        if (clauses.Count > 1) distance += clauses.Distinct().Count() - 1;
        return 0.9 / (1 + distance);
    }

    /// <summary>
    /// 1 when the answer gives the prompt's expected answer, else 0: equal after trimming spaces and final punctuation,
    /// or ending with it after a space, colon or 「：」 ("The answer is 42."). A prompt without an expected answer is an error.
    /// </summary>
    public static RewardFunction ExpectedAnswers(IReadOnlyDictionary<string, string> expected) => FromProgram(c =>
    {
        if (!expected.TryGetValue(c.Prompt, out string? answer)) throw new KeyNotFoundException("no expected answer is given for it");
        return GivesAnswer(c.Answer, answer) ? 1 : 0;
    });

    /// <summary>Whether <paramref name="text"/> gives <paramref name="answer"/> (see <see cref="ExpectedAnswers"/>).</summary>
    public static bool GivesAnswer(string text, string answer)
    {
        string said = Normalise(text), wanted = Normalise(answer);
        if (wanted.Length == 0) return said.Length == 0;
        if (said == wanted) return true;
        return said.EndsWith(wanted, StringComparison.Ordinal) && said[^(wanted.Length + 1)] is ' ' or ':' or '：' or '=' or '\n';
    }

    static string Normalise(string text) => text.Trim().TrimEnd('.', '。', '!', '！', ' ').Trim();

    /// <summary>A learned reward model's score of each completion (its head at the answer's last token).</summary>
    public static RewardFunction FromModel(RewardModel model, GptTokenizer tokenizer) => completions =>
    {
        if (completions.Count == 0) return [];
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var rows = completions.Select(c => (int[])[.. c.PromptTokens, .. c.AnswerTokens]).ToList();
        int t = rows.Max(r => r.Length);
        var tokens = new long[rows.Count * t];
        Array.Fill(tokens, (long)tokenizer.PadId);
        var last = new long[rows.Count];
        for (int i = 0; i < rows.Count; i++)
        {
            for (int j = 0; j < rows[i].Length; j++) tokens[i * t + j] = rows[i][j];
            last[i] = rows[i].Length - 1;
        }
        var device = model.parameters().First().device;
        var scores = model.Score(tensor(tokens, [rows.Count, t], device: device), tensor(last, device: device));
        return [.. scores.to(ScalarType.Float64).cpu().data<double>()];
    };

    /// <summary>Completions of rendered chat prompts: the user's text of each prompt and the decoded answer (its final
    /// assistant turn when a tool answered in between: <paramref name="inserted"/> marks the tokens tools wrote).</summary>
    public static List<Completion> Describe(GptTokenizer tokenizer, IReadOnlyList<string> prompts, IReadOnlyList<int[]> promptTokens,
        IReadOnlyList<int[]> answers, IReadOnlyList<bool> truncated, IReadOnlyList<bool[]?>? inserted = null) =>
        [.. prompts.Select((p, i) => new Completion(p, inserted?[i] is null ? tokenizer.Decode(answers[i].Where(id => !tokenizer.IsSpecial(id)))
            : Inference.ToolBox.FinalText(tokenizer, answers[i]), promptTokens[i], answers[i], truncated[i], inserted?[i]))];
}
