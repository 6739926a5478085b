namespace GptSharp.Data;

/// <summary>
/// The shuffled order of <c>count</c> items for one epoch, derived from the epoch alone (so a saved position resumes
/// exactly) and kept until the next epoch is asked for.
/// </summary>
public sealed class EpochOrder(int count, Func<long, int> seedForEpoch)
{
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
