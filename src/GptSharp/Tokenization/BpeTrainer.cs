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
        var lengths = new int[pieces.Count]; // words shrink in place as merges apply
        int index = 0;
        foreach (var (piece, count) in pieces.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            byte[] bytes = Encoding.UTF8.GetBytes(piece);
            words[index] = Array.ConvertAll(bytes, b => (int)b);
            lengths[index] = bytes.Length;
            weights[index++] = count;
        }

        var ranks = new List<byte[]>(options.VocabSize);
        for (int b = 0; b < 256; b++) ranks.Add([(byte)b]);
        var known = new HashSet<byte[]>(ranks, ByteArrayComparer.Instance);
        var idBytes = new List<byte[]>(ranks); // bytes of every id used while training, including merges not given a rank

        var pairCounts = new Dictionary<long, long>(PairHash.Instance);
        var pairWords = new Dictionary<long, List<int>>(PairHash.Instance);
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
            if (!pairCounts.TryGetValue(best, out long current) || current != priority.Count)
            {
                // Stale entry. Growth pushes a fresh entry when it happens; shrinkage is only noticed here.
                if (current > 0 && current < priority.Count) heap.Enqueue(best, (current, best));
                continue;
            }
            if (current < options.MinPairCount) break;

            int left = (int)(best >> 32), right = (int)(best & 0xffffffff);
            int merged = idBytes.Count;
            byte[] mergedBytes = [.. idBytes[left], .. idBytes[right]];
            idBytes.Add(mergedBytes);
            // Two different merges can spell the same bytes; the rank file holds each byte string once.
            if (known.Add(mergedBytes)) ranks.Add(mergedBytes);

            touched.Clear();
            foreach (int w in pairWords[best])
                MergeInWord(words[w], ref lengths[w], weights[w], w, left, right, merged, pairCounts, pairWords, touched);
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

    /// <summary>
    /// Replaces every (left, right) in one word by <paramref name="merged"/>, in place, adjusting only the pairs next to
    /// each merge site; adds pairs whose count grew to <paramref name="touched"/>. The pair on the left of a site is read from
    /// the already-rewritten prefix, so back-to-back sites (x y x y) are counted right.
    /// </summary>
    static void MergeInWord(int[] word, ref int length, long weight, int w, int left, int right, int merged,
        Dictionary<long, long> pairCounts, Dictionary<long, List<int>> pairWords, HashSet<long> touched)
    {
        int write = 0;
        for (int read = 0; read < length; read++)
        {
            if (read + 1 < length && word[read] == left && word[read + 1] == right)
            {
                if (write > 0)
                {
                    Adjust(Pair(word[write - 1], left), -weight);
                    Adjust(Pair(word[write - 1], merged), weight);
                    AddWord(pairWords, Pair(word[write - 1], merged), w);
                }
                if (read + 2 < length)
                {
                    Adjust(Pair(right, word[read + 2]), -weight);
                    Adjust(Pair(merged, word[read + 2]), weight);
                    AddWord(pairWords, Pair(merged, word[read + 2]), w);
                }
                word[write++] = merged;
                read++;
            }
            else word[write++] = word[read];
        }
        length = write;

        void Adjust(long pair, long delta)
        {
            CollectionsMarshal.GetValueRefOrAddDefault(pairCounts, pair, out _) += delta;
            if (delta > 0) touched.Add(pair);
        }
    }

    static void AddWord(Dictionary<long, List<int>> pairWords, long pair, int w)
    {
        ref var list = ref CollectionsMarshal.GetValueRefOrAddDefault(pairWords, pair, out bool exists);
        if (!exists) list = [];
        if (list!.Count == 0 || list[^1] != w) list.Add(w); // words are visited in order, so a repeat is always last
    }

    static long Pair(int left, int right) => (long)left << 32 | (uint)right;

    /// <summary>
    /// long.GetHashCode xors the two halves, so (left, right) pairs of small ids would share a few thousand hash codes;
    /// a multiplicative mix spreads them (75 s → seconds on the Tang corpus with the gpt4 pattern).
    /// </summary>
    sealed class PairHash : IEqualityComparer<long>
    {
        public static readonly PairHash Instance = new();
        public bool Equals(long x, long y) => x == y;
        public int GetHashCode(long pair) => (int)((ulong)pair * 0x9E3779B97F4A7C15UL >> 32);
    }

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
