namespace GptSharp.Inference.Structured;

/// <summary>
/// A tokenizer's ordinary tokens as a byte trie. Tokens that share a prefix share the matcher's work on it, and a byte
/// the matcher rejects prunes every token below it, so a whole-vocabulary mask costs far less than one match per token.
/// </summary>
public sealed class VocabularyTrie
{
    // Node i's children are _edges[_first[i] .. _first[i + 1]) as (byte, child); tokens that end at node i are _ends[i].
    readonly int[] _first;
    readonly (byte Byte, int Child)[] _edges;
    readonly int[][] _ends;

    public VocabularyTrie(IReadOnlyDictionary<int, byte[]> tokens, int vocabularySize)
    {
        VocabularySize = vocabularySize;
        var children = new List<SortedDictionary<byte, int>> { new() };
        var ends = new List<List<int>> { new() };
        foreach (var (id, bytes) in tokens)
        {
            if (bytes.Length == 0) continue;
            int node = 0;
            foreach (byte b in bytes)
            {
                if (!children[node].TryGetValue(b, out int child))
                {
                    child = children.Count;
                    children[node][b] = child;
                    children.Add(new());
                    ends.Add(new());
                }
                node = child;
            }
            ends[node].Add(id);
        }
        _first = new int[children.Count + 1];
        var edges = new List<(byte, int)>();
        for (int i = 0; i < children.Count; i++)
        {
            _first[i] = edges.Count;
            edges.AddRange(children[i].Select(kv => (kv.Key, kv.Value)));
        }
        _first[^1] = edges.Count;
        _edges = [.. edges];
        _ends = [.. ends.Select(e => e.ToArray())];
    }

    /// <summary>The model's vocabulary size (special tokens included): the length of a mask.</summary>
    public int VocabularySize { get; }

    /// <summary>Calls <paramref name="visit"/> with every token the matcher accepts from <paramref name="start"/>, and the state after it.</summary>
    public void Walk(IByteState start, Action<int, IByteState> visit) => Walk(0, start, visit);

    void Walk(int node, IByteState state, Action<int, IByteState> visit)
    {
        foreach (int token in _ends[node]) visit(token, state);
        for (int e = _first[node]; e < _first[node + 1]; e++)
            if (state.Feed(_edges[e].Byte) is { } next) Walk(_edges[e].Child, next, visit);
    }
}
