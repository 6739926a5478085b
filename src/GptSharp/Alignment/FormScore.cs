using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Alignment;

/// <summary>The verifiable task's result: how many sampled poems had a regular form.</summary>
public sealed record FormScoreReport(int Prompts, int Regular, IReadOnlyList<(string Prompt, string Poem)> Examples)
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
    public static IReadOnlyList<string> Prompts(int count, long seed = 1337) =>
        [.. BuiltInDatasets.Build(seed).HeldOutChats.Select(c => c[0].Content).Where(q => q.StartsWith("寫一首詩", StringComparison.Ordinal)).Take(count)];

    /// <summary>Held-out titles from the other end of the list, disjoint from <see cref="Prompts"/> while both are
    /// shorter than half of it: for choosing a model without touching the prompts it is scored on.</summary>
    public static IReadOnlyList<string> SelectionPrompts(int count, long seed = 1337)
    {
        var all = BuiltInDatasets.Build(seed).HeldOutChats.Select(c => c[0].Content).Where(q => q.StartsWith("寫一首詩", StringComparison.Ordinal)).ToList();
        return [.. Enumerable.Reverse(all).Take(Math.Min(count, all.Count / 2))];
    }

    public static FormScoreReport Measure(Gpt model, GptTokenizer tokenizer, IReadOnlyList<string> prompts, double temperature = 0.7, long seed = 1)
    {
        var template = new ChatTemplate(tokenizer);
        var rendered = prompts.Select(p => template.RenderPrompt([new ChatMessage(ChatRoles.User, p)])).ToList();
        var options = new SamplingOptions(Temperature: temperature, TopK: 50, MaxNewTokens: 80, Seed: seed, StopTokens: [tokenizer.EndId, tokenizer.BosId]);
        var answers = new TokenDecoder(model).Generate(rendered, options);   // prompt i samples with seed + i
        int regular = 0;
        var examples = new List<(string, string)>();
        for (int i = 0; i < prompts.Count; i++)
        {
            string poem = tokenizer.Decode(answers[i].Tokens.Where(t => !tokenizer.IsSpecial(t)));
            if (BuiltInDatasets.IsRegularQuatrainOrRegulated(poem.Split('\n'))) regular++;
            if (examples.Count < 3) examples.Add((prompts[i], poem));
        }
        return new FormScoreReport(prompts.Count, regular, examples);
    }
}
