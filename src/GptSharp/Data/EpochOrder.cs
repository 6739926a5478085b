namespace GptSharp.Data;

/// <summary>
/// The shuffled order of <c>count</c> items for one epoch, derived from the epoch alone (so a saved position resumes
/// exactly) and kept until the next epoch is asked for.
/// </summary>
public sealed class EpochOrder(int count, Func<long, int> seedForEpoch)
{
    /// <summary>The order of an in-memory list (conversations, pairs, encoder examples, labelled texts) for a run's seed.</summary>
    public static EpochOrder Seeded(int count, long seed) => new(count, epoch => (int)((seed * 1_000_003 + epoch * 7919) & 0x7fffffff));

    /// <summary>
    /// The indices of the next <paramref name="batchSize"/> items from <paramref name="position"/> ("epoch:cursor"),
    /// which moves on; an epoch's tail shorter than a batch is skipped for the next epoch. Of a data-parallel world of
    /// <paramref name="processes"/>, process <paramref name="rank"/> gets every processes-th item of the batch.
    /// </summary>
    public int[] NextBatch(ref LoaderPosition position, int batchSize, int rank = 0, int processes = 1)
    {
        if (position.Cursor + batchSize > count) position = new LoaderPosition(position.Epoch + 1, 0);
        var order = For(position.Epoch);
        var indices = order.AsSpan((int)position.Cursor, batchSize).ToArray().Where((_, i) => i % processes == rank).ToArray();
        position = position with { Cursor = position.Cursor + batchSize };
        return indices;
    }

    int[]? _order;
    long _epoch = -1;

    public int[] For(long epoch)
    {
        if (_order is not null && _epoch == epoch) return _order;
        var order = new int[count];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        new Random(seedForEpoch(epoch)).Shuffle(order);
        _epoch = epoch;
        return _order = order;
    }
}
