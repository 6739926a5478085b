using System.Runtime.InteropServices;
using System.Text;

namespace GptSharp.Tokenization;

/// <summary>Settings for training a byte-level BPE vocabulary.</summary>
/// <param name="VocabSize">Total ids: 256 byte tokens + learned merges + <see cref="SpecialTokens.All"/>.</param>
/// <param name="Pattern">Pre-tokenizer regex or a named pattern (see <see cref="PreTokenizerPatterns"/>).</param>
/// <param name="MinPairCount">Stop when the most frequent pair occurs fewer times than this.</param>
public sealed record BpeTrainingOptions(int VocabSize = 8192, string Pattern = "gpt4-cjk", int MinPairCount = 2)
{
    /// <summary>Throws with the name of the first bad field.</summary>
    public void Validate()
    {
        int minimum = 256 + SpecialTokens.All.Count;
        if (VocabSize < minimum)
            throw new ArgumentOutOfRangeException(nameof(VocabSize), VocabSize, $"VocabSize must be at least {minimum} (256 bytes + {SpecialTokens.All.Count} special tokens).");
        if (MinPairCount < 1)
            throw new ArgumentOutOfRangeException(nameof(MinPairCount), MinPairCount, "MinPairCount must be at least 1.");
    }
}

/// <summary>What training produced: merge ranks (byte strings in rank order) and figures about the run.</summary>
public sealed record BpeTrainingResult(IReadOnlyList<byte[]> Ranks, string Pattern, long InputBytes, int UniquePieces, TimeSpan Elapsed)
{
    /// <summary>Number of learned merges (ranks beyond the 256 single bytes).</summary>
    public int MergeCount => Ranks.Count - 256;
}

/// <summary>
/// Byte-level BPE training. Text is split by the pre-tokenizer into pieces; identical pieces are counted once with a
/// weight; then the most frequent adjacent pair is merged repeatedly. Pair counts are kept incrementally (only the
/// pieces that contain the merged pair are revisited) and the best pair comes from a lazy max-heap, so a merge costs
/// time in proportion to where the pair occurs, not to the corpus. Ties break on the smaller pair of ids, so the same
/// input always yields the same merges.
/// </summary>
public static class BpeTrainer
{
    /// <summary>Trains on <paramref name="documents"/>. <paramref name="onMerge"/> receives (merges done, merges wanted).</summary>
    public static BpeTrainingResult Train(IEnumerable<string> documents, BpeTrainingOptions options, Action<int, int>? onMerge = null)
    {
        options.Validate();
        var started = System.Diagnostics.Stopwatch.StartNew();
        string pattern = PreTokenizerPatterns.Resolve(options.Pattern);
        var (pieces, inputBytes) = CountPieces(documents, pattern);
        if (pieces.Count == 0) throw new InvalidDataException("Cannot train a tokenizer on an empty corpus: no text was given.");

        // Each unique piece as its byte tokens, with how often it occurs.
        var words = new int[pieces.Count][];
        var weights = new long[pieces.Count];
        int index = 0;
        foreach (var (piece, count) in pieces.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            byte[] bytes = Encoding.UTF8.GetBytes(piece);
            words[index] = Array.ConvertAll(bytes, b => (int)b);
            weights[index++] = count;
        }

        var ranks = new List<byte[]>(options.VocabSize);
        for (int b = 0; b < 256; b++) ranks.Add([(byte)b]);
        var known = new HashSet<byte[]>(ranks, ByteArrayComparer.Instance);
        var idBytes = new List<byte[]>(ranks); // bytes of every id used while training, including merges not given a rank

        var pairCounts = new Dictionary<long, long>();
        var pairWords = new Dictionary<long, List<int>>();
        for (int w = 0; w < words.Length; w++)
            for (int i = 0; i + 1 < words[w].Length; i++)
            {
                long pair = Pair(words[w][i], words[w][i + 1]);
                CollectionsMarshal.GetValueRefOrAddDefault(pairCounts, pair, out _) += weights[w];
                AddWord(pairWords, pair, w);
            }

        var heap = new PriorityQueue<long, (long Count, long Pair)>(pairCounts.Count, HeapOrder.Instance);
        foreach (var (pair, count) in pairCounts) heap.Enqueue(pair, (count, pair));

        int wantedMerges = options.VocabSize - 256 - SpecialTokens.All.Count;
        var touched = new HashSet<long>();
        while (ranks.Count - 256 < wantedMerges && heap.TryDequeue(out long best, out var priority))
        {
            if (!pairCounts.TryGetValue(best, out long current) || current != priority.Count) continue; // stale entry
            if (current < options.MinPairCount) break;

            int left = (int)(best >> 32), right = (int)(best & 0xffffffff);
            int merged = idBytes.Count;
            byte[] mergedBytes = [.. idBytes[left], .. idBytes[right]];
            idBytes.Add(mergedBytes);
            // Two different merges can spell the same bytes; the rank file holds each byte string once.
            if (known.Add(mergedBytes)) ranks.Add(mergedBytes);

            touched.Clear();
            foreach (int w in pairWords[best])
                touched.UnionWith(MergeInWord(ref words[w], weights[w], w, left, right, merged, pairCounts, pairWords));
            pairCounts.Remove(best);
            pairWords.Remove(best);
            foreach (long pair in touched)
                if (pairCounts.TryGetValue(pair, out long count) && count > 0) heap.Enqueue(pair, (count, pair));
            onMerge?.Invoke(ranks.Count - 256, wantedMerges);
        }

        return new BpeTrainingResult(ranks, pattern, inputBytes, pieces.Count, started.Elapsed);
    }

    /// <summary>Counts the pre-tokenizer's pieces over all documents.</summary>
    static (Dictionary<string, long> Pieces, long InputBytes) CountPieces(IEnumerable<string> documents, string pattern)
    {
        var regex = PreTokenizerPatterns.Compile(pattern);
        var pieces = new Dictionary<string, long>(StringComparer.Ordinal);
        var lookup = pieces.GetAlternateLookup<ReadOnlySpan<char>>();
        long inputBytes = 0;
        foreach (string document in documents)
        {
            inputBytes += Encoding.UTF8.GetByteCount(document);
            foreach (var match in regex.EnumerateMatches(document))
                CollectionsMarshal.GetValueRefOrAddDefault(lookup, document.AsSpan(match.Index, match.Length), out _)++;
        }
        return (pieces, inputBytes);
    }

    /// <summary>Replaces every (left, right) in one word by <paramref name="merged"/> and adjusts pair counts; returns changed pairs.</summary>
    static List<long> MergeInWord(ref int[] word, long weight, int w, int left, int right, int merged,
        Dictionary<long, long> pairCounts, Dictionary<long, List<int>> pairWords)
    {
        var changed = new List<long>();
        if (Array.IndexOf(word, left) < 0) return changed; // stale membership: the pair left this word earlier

        var result = new List<int>(word.Length);
        for (int i = 0; i < word.Length; i++)
        {
            if (i + 1 < word.Length && word[i] == left && word[i + 1] == right) { result.Add(merged); i++; }
            else result.Add(word[i]);
        }
        if (result.Count == word.Length) return changed;

        for (int i = 0; i + 1 < word.Length; i++)
        {
            long pair = Pair(word[i], word[i + 1]);
            if (pairCounts.TryGetValue(pair, out long count)) pairCounts[pair] = count - weight;
            changed.Add(pair);
        }
        word = [.. result];
        for (int i = 0; i + 1 < word.Length; i++)
        {
            long pair = Pair(word[i], word[i + 1]);
            CollectionsMarshal.GetValueRefOrAddDefault(pairCounts, pair, out _) += weight;
            if (word[i] == merged || word[i + 1] == merged) AddWord(pairWords, pair, w);
            changed.Add(pair);
        }
        return changed;
    }

    static void AddWord(Dictionary<long, List<int>> pairWords, long pair, int w)
    {
        ref var list = ref CollectionsMarshal.GetValueRefOrAddDefault(pairWords, pair, out bool exists);
        if (!exists) list = [];
        if (list!.Count == 0 || list[^1] != w) list.Add(w); // words are visited in order, so a repeat is always last
    }

    static long Pair(int left, int right) => (long)left << 32 | (uint)right;

    /// <summary>Max-heap on count, then the smaller pair key first.</summary>
    sealed class HeapOrder : IComparer<(long Count, long Pair)>
    {
        public static readonly HeapOrder Instance = new();
        public int Compare((long Count, long Pair) x, (long Count, long Pair) y) =>
            x.Count != y.Count ? y.Count.CompareTo(x.Count) : x.Pair.CompareTo(y.Pair);
    }
}

/// <summary>Compares byte arrays by content.</summary>
public sealed class ByteArrayComparer : IEqualityComparer<byte[]>
{
    public static readonly ByteArrayComparer Instance = new();
    public bool Equals(byte[]? x, byte[]? y) => ReferenceEquals(x, y) || (x is not null && y is not null && x.AsSpan().SequenceEqual(y));
    public int GetHashCode(byte[] obj)
    {
        var hash = new HashCode();
        hash.AddBytes(obj);
        return hash.ToHashCode();
    }
}
