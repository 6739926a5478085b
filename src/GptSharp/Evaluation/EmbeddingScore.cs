using GptSharp.Encoders;
using GptSharp.Tokenization;
using static TorchSharp.torch;

namespace GptSharp.Evaluation;

/// <summary>What embeddings are worth, by cosine similarity: nearest-neighbour classification and retrieval recall.</summary>
public static class EmbeddingScore
{
    /// <summary>
    /// Accuracy of labelling each test vector by a majority vote of its <paramref name="k"/> most cosine-similar training
    /// vectors (ties go to the nearest neighbour's label).
    /// </summary>
    public static double NearestNeighbourAccuracy(IReadOnlyList<float[]> train, IReadOnlyList<int> trainLabels, IReadOnlyList<float[]> test, IReadOnlyList<int> testLabels, int k = 5)
    {
        using var scope = NewDisposeScope();
        var neighbours = Similarity(test, train).topk(k, dim: 1).indexes.data<long>().ToArray();   // (Ntest · k), nearest first
        int right = 0;
        for (int i = 0; i < test.Count; i++)
        {
            var votes = neighbours.AsSpan(i * k, k).ToArray().Select(j => trainLabels[(int)j]).ToList();
            int top = votes.GroupBy(l => l).Max(g => g.Count());
            int label = votes.First(l => votes.Count(v => v == l) == top);   // the nearest among the most voted
            if (label == testLabels[i]) right++;
        }
        return (double)right / test.Count;
    }

    /// <summary>Share of queries whose own document (query i ↔ document i) is among the <paramref name="k"/> most cosine-similar documents.</summary>
    public static double RecallAtK(IReadOnlyList<float[]> queries, IReadOnlyList<float[]> documents, int k = 5)
    {
        using var scope = NewDisposeScope();
        var top = Similarity(queries, documents).topk(k, dim: 1).indexes.data<long>().ToArray();
        int found = 0;
        for (int i = 0; i < queries.Count; i++)
            if (top.AsSpan(i * k, k).Contains(i)) found++;
        return (double)found / queries.Count;
    }

    /// <summary>
    /// What an encoder's vectors are worth on contrastive data's held-out side: for pairs drawn from labelled texts, 5-NN
    /// accuracy of the held-out texts against the training texts; otherwise recall@5 of each held-out query's own positive
    /// among all held-out positives. <paramref name="encoder"/> null: bag-of-words vectors (log token counts) instead.
    /// </summary>
    public static (string Measure, double Value) Of(Bert? encoder, GptTokenizer tokenizer, ContrastiveData data, Pooling pooling = Pooling.Mean)
    {
        float[][] Vectors(IReadOnlyList<string> texts)
        {
            if (encoder is not null) return BertEmbeddings.EmbedTexts(encoder, tokenizer, texts, pooling);
            using var scope = NewDisposeScope();
            return Rows(ClassificationBaselines.Features(texts, tokenizer));
        }
        if (data.Labeled is { } labeled)
            return ("5-NN accuracy", NearestNeighbourAccuracy(Vectors([.. labeled.Train.Select(t => t.Text)]), [.. labeled.Train.Select(t => t.Label)],
                Vectors([.. labeled.HeldOut.Select(t => t.Text)]), [.. labeled.HeldOut.Select(t => t.Label)]));
        return ("recall@5", RecallAtK(Vectors([.. data.HeldOut.Select(p => p.Query)]), Vectors([.. data.HeldOut.Select(p => p.Positive)]), 5));
    }

    /// <summary>Cosine similarities (A, B) of two sets of vectors.</summary>
    public static Tensor Similarity(IReadOnlyList<float[]> a, IReadOnlyList<float[]> b) => Normalized(a).mm(Normalized(b).t());

    static Tensor Normalized(IReadOnlyList<float[]> vectors)
    {
        int width = vectors[0].Length;
        var x = tensor(vectors.SelectMany(v => v).ToArray(), [vectors.Count, width]);
        return x / x.norm(1, keepdim: true).clamp_min(1e-12);
    }

    /// <summary>Rows of a (N, D) tensor as vectors.</summary>
    public static float[][] Rows(Tensor matrix)
    {
        var flat = matrix.contiguous().to(ScalarType.Float32).cpu().data<float>().ToArray();
        int width = (int)matrix.shape[1];
        return [.. Enumerable.Range(0, (int)matrix.shape[0]).Select(r => flat.AsSpan(r * width, width).ToArray())];
    }
}
