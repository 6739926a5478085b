using GptSharp.Alignment;
using GptSharp.Models;
using GptSharp.Tokenization;

namespace GptSharp.Evaluation;

/// <summary>One scored answer: the prompt, the poem, the checker's verdict on it, and whether a tool answered before the poem.</summary>
public sealed record ScoredPoem(string Prompt, string Poem, VerseVerdict Verdict, bool UsedTool = false);

/// <summary>
/// The verse task's result for one model: per rule, the share of answers that pass it (of all prompts: an answer where a
/// rule does not apply does not pass it, except the instruction rules, counted over the prompts that asked them), the
/// strict share, and every answer with its verdict.
/// </summary>
public sealed record VerseScoreReport(int Prompts, IReadOnlyDictionary<VerseRule, double> RuleRates, double Strict, IReadOnlyList<ScoredPoem> Answers)
{
    /// <summary>The share of answers of regular form (the earlier form score).</summary>
    public double Form => RuleRates[VerseRule.Form];
    public int Distinct => Answers.Select(a => a.Poem).Distinct(StringComparer.Ordinal).Count();
    /// <summary>The share of answers that looked something up before the poem (with an environment at hand).</summary>
    public double ToolUse => Answers.Count == 0 ? 0 : Answers.Count(a => a.UsedTool) / (double)Answers.Count;
}

/// <summary>
/// The verse task measured as the form score is — the same held-out prompts (every instruction kind), one answer per
/// prompt at temperature 0.7 with fixed seeds for every model — but judged by every rule of <see cref="Verse"/>; with an
/// environment (the rhyme dictionary) at hand, the poem is the answer's final turn.
/// </summary>
public static class VerseScore
{
    public static VerseScoreReport Measure(Gpt model, GptTokenizer tokenizer, IReadOnlyList<string> prompts, Verse verse,
        double temperature = 0.7, long seed = 1, int bestOf = 1, RewardFunction? chooser = null, EnvironmentFactory? environment = null)
    {
        var answers = FormScore.Sample(model, tokenizer, prompts, temperature, seed, bestOf, chooser, environment);
        var scored = prompts.Zip(answers, (prompt, a) => new ScoredPoem(prompt, a.Answer, verse.CheckAnswer(prompt, a.Answer), a.Inserted?.Any(i => i) == true)).ToList();
        return Report(scored);
    }

    /// <summary>The rates of a list of scored answers.</summary>
    public static VerseScoreReport Report(IReadOnlyList<ScoredPoem> scored)
    {
        var rates = new Dictionary<VerseRule, double>();
        foreach (var rule in Enum.GetValues<VerseRule>())
        {
            bool instruction = rule is VerseRule.AskedLength or VerseRule.Acrostic or VerseRule.AskedRhyme;
            var counted = instruction ? scored.Where(s => s.Verdict.Passed(rule) is not null).ToList() : [.. scored];
            rates[rule] = counted.Count == 0 ? 0 : counted.Count(s => s.Verdict.Passed(rule) == true) / (double)counted.Count;
        }
        return new VerseScoreReport(scored.Count, rates, scored.Count == 0 ? 0 : scored.Count(s => s.Verdict.Strict) / (double)scored.Count, scored);
    }
}
