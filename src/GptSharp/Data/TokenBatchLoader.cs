namespace GptSharp.Data;

/// <summary>Where a <see cref="TokenBatchLoader"/> is: the epoch and the next window within that epoch's order.</summary>
public readonly record struct LoaderPosition(long Epoch, long Cursor)
{
    /// <summary>"epoch:cursor", the form a checkpoint's <c>state.json</c> keeps.</summary>
    public string Format() => $"{Epoch}:{Cursor}";

    public static LoaderPosition Parse(string text)
    {
        var parts = text.Split(':');
        if (parts.Length != 2 || !long.TryParse(parts[0], out long epoch) || !long.TryParse(parts[1], out long cursor))
            throw new FormatException($"Data position '{text}' is not 'epoch:cursor'.");
        return new LoaderPosition(epoch, cursor);
    }
}

/// <summary>One (B, T) batch: inputs and their next-token targets, row-major, as <c>long</c> for torch.</summary>
public sealed record TokenBatch(long[] Inputs, long[] Targets, int BatchSize, int SequenceLength, LoaderPosition Next);

/// <summary>
/// Cuts a shard into windows of T + 1 tokens (stride T) and serves them B at a time in an order shuffled per epoch
/// from the seed. The same seed and position always give the same batches, so training resumes exactly from a saved
/// <see cref="Position"/>. With a rank and world size, each process takes every world-th window (data parallelism).
/// </summary>
public sealed class TokenBatchLoader
{
    readonly MappedTokenShard _shard;
    readonly int _batchSize, _sequenceLength, _rank, _worldSize;
    readonly long _windows;
    readonly EpochOrder _order;

    public TokenBatchLoader(MappedTokenShard shard, int batchSize, int sequenceLength, long seed,
        LoaderPosition position = default, int rank = 0, int worldSize = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(sequenceLength, 1);
        if (worldSize < 1 || rank < 0 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} must be in [0, {worldSize}).");
        _shard = shard;
        _batchSize = batchSize;
        _sequenceLength = sequenceLength;
        _rank = rank;
        _worldSize = worldSize;
        _windows = (shard.Count - 1) / sequenceLength;
        if (_windows < (long)batchSize * worldSize)
            throw new InvalidDataException(
                $"{shard.Path}: {shard.Count} tokens make {_windows} windows of {sequenceLength + 1} tokens, fewer than one batch of {batchSize} × {worldSize} process(es). Use more data or a smaller batch/sequence length.");
        if (_windows > int.MaxValue) throw new NotSupportedException($"{shard.Path}: more than {int.MaxValue} windows; split the data into several shards.");
        _order = new EpochOrder((int)_windows, epoch => MixSeed(seed, epoch)); // HashCode is randomised per process, so mix by hand
        Position = position;
    }

    /// <summary>The position of the next batch; save it with a checkpoint.</summary>
    public LoaderPosition Position { get; private set; }

    /// <summary>Windows per epoch across all processes.</summary>
    public long WindowsPerEpoch => _windows;

    /// <summary>Returns the next batch and advances <see cref="Position"/>.</summary>
    public TokenBatch Next()
    {
        int b = _batchSize, t = _sequenceLength;
        long perStep = (long)b * _worldSize;
        var position = Position;
        if (position.Cursor + perStep > _windows) position = new LoaderPosition(position.Epoch + 1, 0); // drop the ragged tail
        var order = _order.For(position.Epoch);

        var inputs = new long[b * t];
        var targets = new long[b * t];
        var window = new long[t + 1];
        for (int row = 0; row < b; row++)
        {
            long start = (long)order[position.Cursor + (long)row * _worldSize + _rank] * t;
            _shard.CopyTo(start, window);
            Array.Copy(window, 0, inputs, row * t, t);
            Array.Copy(window, 1, targets, row * t, t);
        }
        Position = position with { Cursor = position.Cursor + perStep };
        return new TokenBatch(inputs, targets, b, t, Position);
    }

    static int MixSeed(long seed, long epoch)
    {
        ulong x = (ulong)seed * 0x9E3779B97F4A7C15UL ^ (ulong)epoch * 0xC2B2AE3D27D4EB4FUL;
        x ^= x >> 31;
        return (int)(x ^ (x >> 32));
    }
}
