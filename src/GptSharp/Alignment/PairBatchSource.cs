using GptSharp.Tokenization;
using GptSharp.Data;
using GptSharp.Training;

namespace GptSharp.Alignment;

/// <summary>
/// B preference pairs as 2B rows: the first B are prompt + chosen answer, the last B prompt + rejected, each padded to T,
/// with the index of each row's last token (its closing <c>&lt;|end|&gt;</c>, or the last token kept if cut).
/// </summary>
public sealed record PairBatch(long[] Tokens, long[] LastIndex, int Pairs, int SequenceLength);

/// <summary>
/// Serves preference pairs B at a time in a per-epoch shuffled order, packed by <paramref name="pack"/> (the reward
/// model and DPO pack them differently); the position is "epoch:cursor". Under data parallelism each process takes
/// every processes-th pair of a batch.
/// </summary>
public sealed class PairBatchSource<TBatch>(
    IReadOnlyList<(RenderedChat Chosen, RenderedChat Rejected)> pairs, int batchSize, long seed,
    Func<IReadOnlyList<(RenderedChat Chosen, RenderedChat Rejected)>, TBatch> pack, LoaderPosition position = default,
    int rank = 0, int processes = 1) : IBatchSource<TBatch>
{
    LoaderPosition _position = pairs.Count >= batchSize ? position
        : throw new InvalidDataException($"{pairs.Count} preference pairs are fewer than one batch of {batchSize}.");
    readonly EpochOrder _order = EpochOrder.Seeded(pairs.Count, seed);

    public string Position => _position.Format();

    public TBatch Next()
    {
        var rows = _order.NextBatch(ref _position, batchSize, rank, processes).Select(i => pairs[i]).ToList();
        return pack(rows);
    }
}

/// <summary>Packing of preference pairs for the reward model.</summary>
public static class PairBatchSource
{
    public static PairBatch Pack(IReadOnlyList<(RenderedChat Chosen, RenderedChat Rejected)> pairs, int sequenceLength, int padId)
    {
        int b = pairs.Count, t = sequenceLength;
        var tokens = new long[2 * b * t];
        var last = new long[2 * b];
        Array.Fill(tokens, padId);
        for (int row = 0; row < 2 * b; row++)
        {
            var chat = row < b ? pairs[row].Chosen : pairs[row - b].Rejected;
            int length = Math.Min(chat.Tokens.Length, t);
            for (int j = 0; j < length; j++) tokens[row * t + j] = chat.Tokens[j];
            last[row] = length - 1;
        }
        return new PairBatch(tokens, last, b, t);
    }
}
