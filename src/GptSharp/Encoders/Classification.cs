using GptSharp.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Encoders;

/// <summary>Accuracy and the positive label's precision, recall and F1 of a set of predictions.</summary>
public sealed record ClassificationScore(double Accuracy, double Precision, double Recall, double F1, int Count)
{
    /// <summary>Scores <paramref name="predicted"/> against <paramref name="actual"/>, F1 for <paramref name="positive"/>.</summary>
    public static ClassificationScore Of(IReadOnlyList<int> predicted, IReadOnlyList<int> actual, int positive)
    {
        if (predicted.Count != actual.Count) throw new ArgumentException($"{predicted.Count} predictions for {actual.Count} labels.");
        int correct = 0, truePositive = 0, predictedPositive = 0, actualPositive = 0;
        for (int i = 0; i < actual.Count; i++)
        {
            if (predicted[i] == actual[i]) correct++;
            if (predicted[i] == positive) predictedPositive++;
            if (actual[i] == positive) actualPositive++;
            if (predicted[i] == positive && actual[i] == positive) truePositive++;
        }
        double precision = predictedPositive == 0 ? 0 : truePositive / (double)predictedPositive;
        double recall = actualPositive == 0 ? 0 : truePositive / (double)actualPositive;
        double f1 = precision + recall == 0 ? 0 : 2 * precision * recall / (precision + recall);
        return new ClassificationScore(correct / (double)Math.Max(1, actual.Count), precision, recall, f1, actual.Count);
    }
}

/// <summary>
/// The baselines a text classifier must beat: always the most frequent training label, and a bag-of-words logistic
/// regression (log token counts over the tokenizer's vocabulary, L2-regularised, trained full-batch).
/// </summary>
public static class ClassificationBaselines
{
    public static int MajorityLabel(IReadOnlyList<int> trainLabels) =>
        trainLabels.GroupBy(l => l).OrderByDescending(g => g.Count()).ThenBy(g => g.Key).First().Key;

    /// <summary>Fits on the training texts and predicts the held-out ones.</summary>
    public static int[] BagOfWordsLogistic(IReadOnlyList<string> trainTexts, IReadOnlyList<int> trainLabels, IReadOnlyList<string> testTexts,
        GptTokenizer tokenizer, int labels, int iterations = 300, double l2 = 1e-4, long seed = 0)
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(seed);
        var x = Features(trainTexts, tokenizer);
        var y = tensor(trainLabels.Select(l => (long)l).ToArray());
        var weight = new TorchSharp.Modules.Parameter(zeros(tokenizer.VocabSize, labels));
        var bias = new TorchSharp.Modules.Parameter(zeros(labels));
        var optimizer = optim.Adam([weight, bias], lr: 0.05);
        for (int i = 0; i < iterations; i++)
        {
            using var step = NewDisposeScope();
            optimizer.zero_grad();
            var loss = nn.functional.cross_entropy(x.mm(weight) + bias, y) + l2 * weight.square().sum();
            loss.backward();
            optimizer.step();
        }
        using var noGrad = no_grad();
        return [.. (Features(testTexts, tokenizer).mm(weight) + bias).argmax(-1).data<long>().ToArray().Select(v => (int)v)];
    }

    /// <summary>log(1 + count) of every token id in each text: (N, V).</summary>
    public static Tensor Features(IReadOnlyList<string> texts, GptTokenizer tokenizer)
    {
        var counts = new float[texts.Count * (long)tokenizer.VocabSize];
        for (int i = 0; i < texts.Count; i++)
            foreach (int id in tokenizer.Encode(texts[i])) counts[i * (long)tokenizer.VocabSize + id]++;
        return tensor(counts, [texts.Count, tokenizer.VocabSize]).log1p_();
    }
}
