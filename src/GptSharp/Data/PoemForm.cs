namespace GptSharp.Data;

/// <summary>The regular forms of classical Chinese verse as the corpora store them: one line a couplet, 「…，…。」.</summary>
public static class PoemForm
{
    /// <summary>Four or eight clauses of five or seven characters, two to a line: 「五言/七言」 quatrains and regulated verse.</summary>
    public static bool IsRegularQuatrainOrRegulated(IReadOnlyList<string> lines)
    {
        if (lines.Count is not (2 or 4)) return false; // poems store two clauses per line: 2 lines = quatrain, 4 = regulated verse
        int? clause = ClauseLength(lines[0]);
        return clause is not null && lines.All(line => ClauseLength(line) == clause);
    }

    /// <summary>5 or 7 for a line of two clauses of five (or seven) characters, 「…，…。」; null for any other line.</summary>
    public static int? ClauseLength(string line)
    {
        int comma = line.IndexOf('，');
        return line.Length >= 4 && line[^1] == '。' && comma is 5 or 7 && comma == line.Length - 2 - comma ? comma : null;
    }
}
