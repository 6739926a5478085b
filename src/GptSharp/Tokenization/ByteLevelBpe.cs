using System.Text;

namespace GptSharp.Tokenization;

/// <summary>
/// Converts a tiktoken-style vocabulary (byte strings with ranks) into the form Hugging Face <c>tokenizers</c> and
/// llama.cpp read: each token spelled in GPT-2's byte-to-Unicode alphabet, plus an ordered list of merges.
/// </summary>
/// <remarks>
/// tiktoken keeps no merge list: it merges whichever adjacent pair forms the lowest-ranked token. The merge that made a
/// token is recovered by running that same procedure over the token's own bytes with only lower ranks allowed — what
/// remains is the pair that the token's rank joins. Ordering merges by the rank of their result then makes the
/// merge-list algorithm produce exactly tiktoken's tokens.
/// </remarks>
public static class ByteLevelBpe
{
    static readonly char[] ByteToChar = BuildAlphabet();

    /// <summary>
    /// GPT-2's alphabet: printable Latin-1 bytes stand for themselves; the other 68 (controls, space, DEL, NBSP, soft
    /// hyphen) map in byte order to U+0100 onwards, so that every token is a string of visible characters.
    /// </summary>
    static char[] BuildAlphabet()
    {
        var map = new char[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)(256 + next++);
        }
        return map;
    }

    /// <summary>A token's bytes in GPT-2's byte-level alphabet (space → Ġ, newline → Ċ).</summary>
    public static string Spell(ReadOnlySpan<byte> bytes)
    {
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }

    /// <summary>The bytes a token spelled in GPT-2's byte-level alphabet stands for; null when a character is outside it.</summary>
    public static byte[]? Unspell(string spelling)
    {
        var bytes = new byte[spelling.Length];
        for (int i = 0; i < spelling.Length; i++)
        {
            int b = Array.IndexOf(ByteToChar, spelling[i]);
            if (b < 0) return null;
            bytes[i] = (byte)b;
        }
        return bytes;
    }

    /// <summary>
    /// The merges, in order, for ordinary tokens given as id → bytes (ids are ranks). A multi-byte token that the
    /// lower ranks cannot build as one pair is unreachable by BPE and contributes no merge.
    /// </summary>
    public static List<(string Left, string Right)> Merges(IReadOnlyDictionary<int, byte[]> ranks)
    {
        // Latin-1 strings stand in for byte strings as dictionary keys: one char per byte, ordinal comparison.
        var rankOf = new Dictionary<string, int>(ranks.Count, StringComparer.Ordinal);
        foreach (var (rank, bytes) in ranks) rankOf[Encoding.Latin1.GetString(bytes)] = rank;

        var merges = new List<(string, string)>();
        foreach (var (rank, bytes) in ranks.OrderBy(kv => kv.Key))
        {
            if (bytes.Length < 2) continue;
            var parts = PartsBelow(Encoding.Latin1.GetString(bytes), rankOf, rank);
            if (parts.Count == 2) merges.Add((Spell(Encoding.Latin1.GetBytes(parts[0])), Spell(Encoding.Latin1.GetBytes(parts[1]))));
        }
        return merges;
    }

    /// <summary>tiktoken's merge loop over <paramref name="token"/>, using only tokens ranked below <paramref name="limit"/>.</summary>
    static List<string> PartsBelow(string token, Dictionary<string, int> rankOf, int limit)
    {
        var parts = token.Select(c => c.ToString()).ToList();
        while (parts.Count > 2)
        {
            int best = -1, bestRank = limit;
            for (int i = 0; i + 1 < parts.Count; i++)
                if (rankOf.TryGetValue(parts[i] + parts[i + 1], out int r) && r < bestRank)
                {
                    best = i;
                    bestRank = r;
                }
            if (best < 0) break;
            parts[best] += parts[best + 1];
            parts.RemoveAt(best + 1);
        }
        return parts;
    }
}
