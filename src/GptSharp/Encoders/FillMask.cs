using GptSharp.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Encoders;

/// <summary>One candidate for a masked position.</summary>
public sealed record Filler(string Text, int TokenId, double Probability);

/// <summary>BERT's cloze at inference: the top-k tokens for every <c>&lt;|mask|&gt;</c> in a text.</summary>
public static class FillMask
{
    /// <summary>For each mask in <paramref name="text"/>, in order, the <paramref name="topK"/> most likely tokens.</summary>
    public static IReadOnlyList<IReadOnlyList<Filler>> Predict(BertForMaskedLm model, GptTokenizer tokenizer, string text, int topK = 5)
    {
        if (string.IsNullOrWhiteSpace(text)) throw new ArgumentException("The text is empty.", nameof(text));
        if (topK < 1) throw new ArgumentOutOfRangeException(nameof(topK), topK, "top-k must be at least 1.");
        int[] tokens = [tokenizer.BosId, .. tokenizer.EncodeWithSpecialTokens(text), tokenizer.EosId];
        if (!tokens.Contains(tokenizer.MaskId)) throw new ArgumentException($"The text has no {SpecialTokens.Mask} to fill.", nameof(text));
        if (tokens.Length > model.Config.ContextLength)
            throw new ArgumentException($"The text is {tokens.Length - 2} tokens; this model reads at most {model.Config.ContextLength - 2}.", nameof(text));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        model.eval();
        var device = model.parameters().First().device;
        var logits = model.forward(tensor(tokens.Select(t => (long)t).ToArray(), [1, tokens.Length], device: device))[0]; // (T, V)
        var fillers = new List<IReadOnlyList<Filler>>();
        for (int i = 0; i < tokens.Length; i++)
        {
            if (tokens[i] != tokenizer.MaskId) continue;
            var probabilities = logits[i].softmax(-1);
            var (values, indices) = probabilities.topk(Math.Min(topK, (int)probabilities.shape[0]));
            var p = values.data<float>().ToArray();
            var ids = indices.data<long>().ToArray();
            fillers.Add([.. ids.Select((id, k) => new Filler(tokenizer.Decode([(int)id]), (int)id, p[k]))]);
        }
        return fillers;
    }
}
