using GptSharp.Tokenization;
using static TorchSharp.torch;

namespace GptSharp.Encoders;

/// <summary>How a text's vector is read from an encoder's final hidden states.</summary>
public enum Pooling
{
    /// <summary>The mean over the text's real tokens, [CLS] and [SEP] included (sentence-transformers' default).</summary>
    Mean,
    /// <summary>The hidden state at [CLS] (what the classifier's pooler reads).</summary>
    Cls,
}

/// <summary>Text embeddings from a BERT encoder: each input's final hidden states pooled to one vector of the encoder's width.</summary>
public static class BertEmbeddings
{
    /// <summary>
    /// Embeds wrapped inputs (<c>[CLS] tokens [SEP]</c>, each at most the context length; a longer one is refused by
    /// <see cref="Bert.Hidden"/>), batched with padding masked out: (N) vectors of width C.
    /// </summary>
    public static float[][] Embed(Bert encoder, IReadOnlyList<int[]> inputs, int padId, Pooling pooling, int batchSize = 32)
    {
        var vectors = new List<float[]>(inputs.Count);
        var device = encoder.parameters().First().device;
        using var noGrad = no_grad();
        foreach (var rows in inputs.Chunk(batchSize))
        {
            using var scope = NewDisposeScope();
            var (ids, mask, t) = EncoderExamples.Pad(rows, padId);
            var keyMask = tensor(mask, [rows.Length, t], device: device);
            var hidden = encoder.Hidden(tensor(ids, [rows.Length, t], device: device), null, keyMask);   // (B, T, C)
            var pooled = Pool(hidden, keyMask, pooling);
            var flat = pooled.contiguous().to(ScalarType.Float32).cpu().data<float>().ToArray();
            int width = (int)pooled.shape[1];
            for (int r = 0; r < rows.Length; r++) vectors.Add(flat.AsSpan(r * width, width).ToArray());
        }
        return [.. vectors];
    }

    /// <summary>Final hidden states (B, T, C) → one vector per row (B, C): the state at [CLS], or the mean over the key mask's real tokens.</summary>
    public static Tensor Pool(Tensor hidden, Tensor? keyMask, Pooling pooling) =>
        pooling == Pooling.Cls ? hidden.select(1, 0)
        : keyMask is null ? hidden.mean([1])
        : (hidden * keyMask.unsqueeze(-1)).sum(1) / keyMask.sum(1, keepdim: true, type: ScalarType.Float32);

    /// <summary>Embeds texts, each cut to its first context − 2 tokens (for measuring; the server refuses a longer input instead).</summary>
    public static float[][] EmbedTexts(Bert encoder, GptTokenizer tokenizer, IReadOnlyList<string> texts, Pooling pooling) =>
        Embed(encoder, [.. texts.Select(t => EncoderExamples.Truncated(t, tokenizer, encoder.Config.ContextLength).Tokens)], tokenizer.PadId, pooling);
}
