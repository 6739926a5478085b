using GptSharp.Tokenization;
using GptSharp.Data;
using GptSharp.Training;

namespace GptSharp.Alignment;

/// <summary>
/// B preference pairs as the distinct conversations among them (prompt + answer, <see cref="Rows"/> of them, each padded
/// to T) with the index of each row's last token (its closing <c>&lt;|end|&gt;</c>, or the last token kept if cut), and
/// for each pair the rows of its chosen and rejected answers. The comparisons of one prompt's K answers share their
/// answers (K(K−1)/2 pairs of K conversations), so each is scored once, not once per pair it is in.
/// </summary>
public sealed record PairBatch(long[] Tokens, long[] LastIndex, int Rows, int SequenceLength, long[] ChosenRows, long[] RejectedRows)
{
    public int Pairs => ChosenRows.Length;
}

/// <summary>The distinct conversations of a batch of pairs, and for each pair the rows of its chosen and rejected answers.</summary>
public sealed record DistinctPairRows(IReadOnlyList<RenderedChat> Rows, long[] ChosenRows, long[] RejectedRows)
{
    /// <summary>Rows in first-seen order; two conversations are the same row when their tokens are.</summary>
    public static DistinctPairRows Of(IReadOnlyList<(RenderedChat Chosen, RenderedChat Rejected)> pairs)
    {
        var rows = new List<RenderedChat>();
        var rowOf = new Dictionary<string, long>(StringComparer.Ordinal);
        long Row(RenderedChat chat)
        {
            string key = string.Join(',', chat.Tokens);
            if (!rowOf.TryGetValue(key, out long row)) { rowOf[key] = row = rows.Count; rows.Add(chat); }
            return row;
        }
        var chosen = new long[pairs.Count];
        var rejected = new long[pairs.Count];
        for (int i = 0; i < pairs.Count; i++) (chosen[i], rejected[i]) = (Row(pairs[i].Chosen), Row(pairs[i].Rejected));
        return new DistinctPairRows(rows, chosen, rejected);
    }
}

/// <summary>
/// Serves preference pairs B at a time in a per-epoch shuffled order, packed by a function (the reward
/// model and DPO pack them differently); the position is "epoch:cursor". Pairs that share a group (the comparisons of
/// one prompt's answers) are served together: a batch is then B groups. Under data parallelism each process takes
/// every processes-th group of a batch.
/// </summary>
public sealed class PairBatchSource<TBatch> : IBatchSource<TBatch>
{
    readonly IReadOnlyList<(RenderedChat Chosen, RenderedChat Rejected)> _pairs;
    readonly int[][] _groups;
    readonly int _batchSize, _rank, _processes;
    readonly Func<IReadOnlyList<(RenderedChat Chosen, RenderedChat Rejected)>, TBatch> _pack;
    readonly EpochOrder _order;
    LoaderPosition _position;

    /// <param name="groups">The pairs' indices by group (null: each pair alone).</param>
    public PairBatchSource(IReadOnlyList<(RenderedChat Chosen, RenderedChat Rejected)> pairs, int batchSize, long seed,
        Func<IReadOnlyList<(RenderedChat Chosen, RenderedChat Rejected)>, TBatch> pack, LoaderPosition position = default,
        int rank = 0, int processes = 1, IReadOnlyList<int[]>? groups = null)
    {
        _groups = groups is null ? [.. Enumerable.Range(0, pairs.Count).Select(i => new[] { i })] : [.. groups];
        if (_groups.Length < batchSize)
            throw new InvalidDataException(groups is null ? $"{pairs.Count} preference pairs are fewer than one batch of {batchSize}."
                : $"{_groups.Length} groups of preference pairs are fewer than one batch of {batchSize} groups.");
        (_pairs, _batchSize, _pack, _position, _rank, _processes) = (pairs, batchSize, pack, position, rank, processes);
        _order = EpochOrder.Seeded(_groups.Length, seed);
    }

    public string Position => _position.Format();

    public TBatch Next() =>
        _pack([.. _order.NextBatch(ref _position, _batchSize, _rank, _processes).SelectMany(g => _groups[g]).Select(i => _pairs[i])]);

    /// <summary>The groups of <paramref name="pairs"/>: pairs with the same non-null <see cref="PreferencePair.Group"/>
    /// together (in first-seen order), each other pair alone; null when no pair has a group.</summary>
    public static IReadOnlyList<int[]>? Groups(IReadOnlyList<PreferencePair> pairs)
    {
        if (pairs.All(p => p.Group is null)) return null;
        var byName = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        var groups = new List<List<int>>();
        for (int i = 0; i < pairs.Count; i++)
        {
            if (pairs[i].Group is not { } name) { groups.Add([i]); continue; }
            if (!byName.TryGetValue(name, out var members)) groups.Add(byName[name] = members = []);
            members.Add(i);
        }
        return [.. groups.Select(g => g.ToArray())];
    }
}

/// <summary>Packing of preference pairs for the reward model.</summary>
public static class PairBatchSource
{
    public static PairBatch Pack(IReadOnlyList<(RenderedChat Chosen, RenderedChat Rejected)> pairs, int sequenceLength, int padId)
    {
        // Padded to the longest row (at most the context): the score is read at each row's last token, which causal
        // attention computes the same whatever padding follows it.
        var distinct = DistinctPairRows.Of(pairs);
        int rows = distinct.Rows.Count, t = Math.Min(sequenceLength, distinct.Rows.Max(r => r.Tokens.Length));
        var tokens = new long[rows * t];
        var last = new long[rows];
        Array.Fill(tokens, padId);
        for (int row = 0; row < rows; row++)
        {
            var chat = distinct.Rows[row];
            int length = Math.Min(chat.Tokens.Length, t);
            for (int j = 0; j < length; j++) tokens[row * t + j] = chat.Tokens[j];
            last[row] = length - 1;
        }
        return new PairBatch(tokens, last, rows, t, distinct.ChosenRows, distinct.RejectedRows);
    }
}
