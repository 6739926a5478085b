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

    /// <summary>
    /// The form check as a PPO reward: for each sequence (B, T) ending at <c>last</c> (B), 1 if the answer after the
    /// final <c>&lt;|assistant|&gt;</c> is a regular poem, else 0 — a verifiable reward that cannot be gamed by length.
    /// </summary>
    public static Func<Tensor, Tensor, Tensor> Reward(GptTokenizer tokenizer)
    {
        int assistant = tokenizer.SpecialId(SpecialTokens.Assistant);
        return (sequences, last) =>
        {
            var rows = sequences.cpu().data<long>().ToArray();
            var ends = last.cpu().data<long>().ToArray();
            int t = (int)sequences.shape[1];
            var scores = new float[ends.Length];
            for (int b = 0; b < ends.Length; b++)
            {
                var row = rows.AsSpan(b * t, (int)ends[b] + 1);
                int start = row.LastIndexOf((long)assistant) + 1;
                var answer = row[start..].ToArray().Select(id => (int)id).Where(id => !tokenizer.IsSpecial(id));
                scores[b] = BuiltInDatasets.IsRegularQuatrainOrRegulated(tokenizer.Decode(answer).Split('\n')) ? 1f : 0f;
            }
            return tensor(scores, device: sequences.device);
        };
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
