using GptSharp.Tokenization;

namespace GptSharp.Encoders;

/// <summary>One encoder input: <c>&lt;|bos|&gt;</c> (BERT's [CLS]) + tokens + <c>&lt;|eos|&gt;</c> ([SEP]), with each token's word id (−1 for the specials).</summary>
public sealed record EncoderExample(int[] Tokens, int[] WordIds);

/// <summary>Builds encoder inputs from text, cutting long texts into context-sized pieces.</summary>
public static class EncoderExamples
{
    /// <summary>
    /// One example per <paramref name="contextLength"/> − 2 tokens of the text (a poem is usually one; a speech many).
    /// Returns none for text with no tokens.
    /// </summary>
    public static IEnumerable<EncoderExample> FromText(string text, GptTokenizer tokenizer, int contextLength)
    {
        if (contextLength < 3) throw new ArgumentOutOfRangeException(nameof(contextLength), contextLength, "An encoder input needs room for [CLS], one token and [SEP].");
        var (ids, words) = tokenizer.EncodeWords(text);
        int room = contextLength - 2;
        for (int start = 0; start < ids.Length; start += room)
        {
            int length = Math.Min(room, ids.Length - start);
            yield return Wrap(ids.AsSpan(start, length), words.AsSpan(start, length), tokenizer);
        }
    }

    /// <summary>
    /// Right-pads rows of ids to the longest row: the ids flattened (rows × length, the gaps <paramref name="padId"/>) and,
    /// per position, whether it holds a real token (the attention's key mask).
    /// </summary>
    public static (long[] Ids, bool[] KeyMask, int Length) Pad<T>(IReadOnlyList<T[]> rows, long padId) where T : System.Numerics.IBinaryInteger<T>
    {
        int length = rows.Max(r => r.Length);
        var ids = new long[rows.Count * length];
        var keyMask = new bool[rows.Count * length];
        Array.Fill(ids, padId);
        for (int row = 0; row < rows.Count; row++)
        {
            for (int j = 0; j < rows[row].Length; j++) ids[row * length + j] = long.CreateTruncating(rows[row][j]);
            keyMask.AsSpan(row * length, rows[row].Length).Fill(true);
        }
        return (ids, keyMask, length);
    }

    /// <summary>The first <paramref name="contextLength"/> − 2 tokens of the text, wrapped (for classification: one input per text).</summary>
    public static EncoderExample Truncated(string text, GptTokenizer tokenizer, int contextLength)
    {
        if (contextLength < 3) throw new ArgumentOutOfRangeException(nameof(contextLength), contextLength, "An encoder input needs room for [CLS], one token and [SEP].");
        var (ids, words) = tokenizer.EncodeWords(text);
        if (ids.Length == 0) throw new ArgumentException("The text has no tokens.", nameof(text));
        int length = Math.Min(contextLength - 2, ids.Length);
        return Wrap(ids.AsSpan(0, length), words.AsSpan(0, length), tokenizer);
    }

    static EncoderExample Wrap(ReadOnlySpan<int> ids, ReadOnlySpan<int> words, GptTokenizer tokenizer)
    {
        int[] tokens = [tokenizer.BosId, .. ids, tokenizer.EosId];
        int first = words.Length > 0 ? words[0] : 0;
        int[] wordIds = [-1, .. words.ToArray().Select(w => w - first), -1];
        return new EncoderExample(tokens, wordIds);
    }
}

