using GptSharp.Alignment;
using GptSharp.Data;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Evaluation;

/// <summary>The verifiable task's result: how many sampled poems had a regular form, and how many of them were
/// different poems (a policy that answers every title with one couplet scores high on form and low here).</summary>
public sealed record FormScoreReport(int Prompts, int Regular, IReadOnlyList<(string Prompt, string Poem)> Examples, int Distinct = 0)
{
    public double Share => Regular / (double)Math.Max(1, Prompts);
}

/// <summary>
/// A task a program can check: ask for a poem for each of a fixed list of held-out titles, sample one answer per
/// prompt with a fixed seed, and count the answers that are a regular quatrain or regulated verse (two or four lines,
/// each two clauses of five or seven characters with 「，」 and 「。」). The same prompts and seeds for every model, so
/// base, SFT, PPO and DPO models compare directly.
/// </summary>
public static class FormScore
{
    /// <summary>The fixed prompts: "write a poem titled …" for held-out poems of the built-in data.</summary>
    public static IReadOnlyList<string> Prompts(int count, long seed = 1337) => [.. HeldOutPoemRequests(seed).Take(count)];

    /// <summary>Held-out titles from the other end of the list, disjoint from <see cref="Prompts"/> while both are
    /// shorter than half of it: for choosing a model without touching the prompts it is scored on.</summary>
    public static IReadOnlyList<string> SelectionPrompts(int count, long seed = 1337)
    {
        var all = HeldOutPoemRequests(seed);
        return [.. Enumerable.Reverse(all).Take(Math.Min(count, all.Count / 2))];
    }

    static List<string> HeldOutPoemRequests(long seed) =>
        [.. BuiltInDatasets.Build(seed).HeldOutChats.Select(c => c[0].Content).Where(q => q.StartsWith("寫一首詩", StringComparison.Ordinal))];

    /// <summary>Samples one poem per prompt (prompt i with seed + i) and counts the regular ones.</summary>
    public static FormScoreReport Measure(Gpt model, GptTokenizer tokenizer, IReadOnlyList<string> prompts, double temperature = 0.7, long seed = 1) =>
        Measure(model, tokenizer, prompts, temperature, seed, bestOf: 1, chooser: null);

    /// <summary>
    /// Best-of-N: samples <paramref name="bestOf"/> poems per prompt, keeps the one <paramref name="chooser"/> scores
    /// highest (the first of equals) and counts the regular ones among those kept. With N = 1 it is the plain score.
    /// </summary>
    public static FormScoreReport Measure(Gpt model, GptTokenizer tokenizer, IReadOnlyList<string> prompts, double temperature, long seed,
        int bestOf, RewardFunction? chooser)
    {
        var poems = Sample(model, tokenizer, prompts, temperature, seed, bestOf, chooser).Select(c => c.Answer).ToList();
        int regular = poems.Count(poem => PoemForm.IsRegularQuatrainOrRegulated(poem.Split('\n')));
        return new FormScoreReport(prompts.Count, regular, [.. prompts.Zip(poems).Take(3)], poems.Distinct(StringComparer.Ordinal).Count());
    }

    /// <summary>Tokens an answer may spend besides its poem when an environment is at hand (a look-up and its answer).</summary>
    public const int EnvironmentRoom = 40;

    /// <summary>
    /// One answer per prompt (its poem is <see cref="Completion.Answer"/>), as every score of poems samples them: prompt i's answers with seeds seed + i·N …, at most
    /// 80 tokens; with <paramref name="bestOf"/> N above 1 the one <paramref name="chooser"/> scores highest of N. With an
    /// <paramref name="environment"/> each answer is an episode in it (up to <paramref name="maxTurns"/> turns, <see cref="EnvironmentRoom"/>
    /// more tokens within the model's context) and its poem is the final turn.
    /// </summary>
    public static List<Completion> Sample(Gpt model, GptTokenizer tokenizer, IReadOnlyList<string> prompts, double temperature, long seed,
        int bestOf, RewardFunction? chooser, EnvironmentFactory? environment = null, int maxTurns = Episode.DefaultMaxTurns)
    {
        if (bestOf < 1) throw new ArgumentOutOfRangeException(nameof(bestOf), bestOf, "Best-of-N needs N >= 1.");
        if (bestOf > 1 && chooser is null) throw new ArgumentException("Best-of-N needs a reward to choose with.", nameof(chooser));
        var template = new ChatTemplate(tokenizer);
        var asked = prompts.SelectMany(p => Enumerable.Repeat(p, bestOf)).ToList();
        var options = new SamplingOptions(Temperature: temperature, TopK: 50, MaxNewTokens: 80, Seed: seed, StopTokens: [tokenizer.EndId, tokenizer.BosId]);
        using var decoder = TokenDecoder.Create(model);
        IReadOnlyList<Generation> answers;   // row r samples with seed + r
        IReadOnlyList<int[]> rendered;
        if (environment is null)
        {
            rendered = [.. asked.Select(p => template.RenderPrompt([new ChatMessage(ChatRoles.User, p)]))];
            answers = decoder.Generate(rendered, options);
        }
        else (answers, _, rendered) = Episodes.Play(decoder, tokenizer, environment, asked,
            options with { MaxNewTokens = options.MaxNewTokens + EnvironmentRoom }, maxTurns, model.Config.ContextLength);
        var completions = Rewards.Describe(tokenizer, asked, rendered, [.. answers.Select(a => a.Tokens)],
            [.. answers.Select(a => a.Finish != FinishReason.Stop)], [.. answers.Select(a => a.Inserted)]);
        double[]? scores = bestOf > 1 ? chooser!(completions) : null;
        var chosen = new List<Completion>(prompts.Count);
        for (int i = 0; i < prompts.Count; i++)
        {
            int best = i * bestOf;
            for (int j = 1; j < bestOf; j++)
                if (scores![i * bestOf + j] > scores[best]) best = i * bestOf + j;
            chosen.Add(completions[best]);
        }
        return chosen;
    }
}
