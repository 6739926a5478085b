namespace GptSharp.Inference;

/// <summary>
/// Stop sequences matched on decoded text, wherever token boundaries fall: a stop inside one token (<c>。</c> in the
/// token <c>。\n</c>) or across several is found all the same.
/// </summary>
public static class StopText
{
    /// <summary>Where the earliest stop sequence starts in <paramref name="text"/>, or -1.</summary>
    public static int Find(string text, IReadOnlyList<string>? stops)
    {
        int first = -1;
        foreach (string stop in stops ?? [])
        {
            int at = text.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (first < 0 || at < first)) first = at;
        }
        return first;
    }

    /// <summary>
    /// The length of the longest end of <paramref name="text"/> that begins some stop sequence: text a stream must hold
    /// back, since the next token may complete the stop.
    /// </summary>
    public static int PartialMatch(string text, IReadOnlyList<string>? stops)
    {
        int longest = 0;
        foreach (string stop in stops ?? [])
            for (int length = Math.Min(stop.Length - 1, text.Length); length > longest; length--)
                if (text.AsSpan(text.Length - length).SequenceEqual(stop.AsSpan(0, length))) { longest = length; break; }
        return longest;
    }
}
