using GptSharp.Tokenization;
using GptSharp.Data;
using GptSharp.Training;

namespace GptSharp.Alignment;

/// <summary>
/// Serves rendered conversations B at a time, padded to the batch's longest (or cut to T + 1 tokens), as (inputs, targets) where a
/// target is the next token when the loss mask covers it and -1 otherwise (padding included). Order is shuffled per
/// epoch from the seed; the position is "epoch:cursor", as for token shards.
/// </summary>
public sealed class ChatBatchSource : IBatchSource<TokenBatch>
{
    readonly IReadOnlyList<RenderedChat> _chats;
    readonly int _batchSize, _sequenceLength, _padId;
    readonly EpochOrder _order;
    readonly int _rank, _processes;
    LoaderPosition _position;

    /// <param name="rank">This process's rank of <paramref name="processes"/> (data parallelism): it gets every processes-th conversation of each batch.</param>
    public ChatBatchSource(IReadOnlyList<RenderedChat> chats, int batchSize, int sequenceLength, int padId, long seed, LoaderPosition position = default,
        int rank = 0, int processes = 1)
    {
        (_rank, _processes) = (rank, processes);
        if (chats.Count < batchSize) throw new InvalidDataException($"{chats.Count} conversations are fewer than one batch of {batchSize}.");
        _chats = chats;
        _batchSize = batchSize;
        _sequenceLength = sequenceLength;
        _padId = padId;
        _order = EpochOrder.Seeded(chats.Count, seed);
        _position = position;
        Truncated = chats.Count(c => c.Tokens.Length > sequenceLength + 1);
    }

    /// <summary>Conversations longer than T + 1 tokens, whose end is cut off.</summary>
    public int Truncated { get; }

    public string Position => _position.Format();

    public TokenBatch Next()
    {
        var rows = _order.NextBatch(ref _position, _batchSize, _rank, _processes).Select(i => _chats[i]).ToList();
        return Pack(rows, _sequenceLength, _padId, _position);
    }

    /// <summary>Whether any token the loss counts (an assistant token) falls within the first T + 1 tokens.</summary>
    public static bool HasTrainableToken(RenderedChat chat, int sequenceLength)
    {
        int length = Math.Min(chat.Tokens.Length, sequenceLength + 1);
        for (int j = 1; j < length; j++)
            if (chat.LossMask[j]) return true;
        return false;
    }

    /// <summary>Packs conversations into one (B, T) batch.</summary>
    public static TokenBatch Pack(IReadOnlyList<RenderedChat> rows, int sequenceLength, int padId, LoaderPosition next = default)
    {
        // Padded to the longest row, not the context: causal attention never looks right, so the loss is the same and
        // short chats (a poem is ~60 tokens of a 128 context) cost half.
        int t = Math.Clamp(rows.Max(r => r.Tokens.Length) - 1, 1, sequenceLength);
        var inputs = new long[rows.Count * t];
        var targets = new long[rows.Count * t];
        Array.Fill(inputs, padId);
        Array.Fill(targets, -1L);
        for (int row = 0; row < rows.Count; row++)
        {
            var chat = rows[row];
            int length = Math.Min(chat.Tokens.Length, t + 1);
            for (int j = 0; j + 1 < length; j++)
            {
                inputs[row * t + j] = chat.Tokens[j];
                if (chat.LossMask[j + 1]) targets[row * t + j] = chat.Tokens[j + 1];
            }
        }
        return new TokenBatch(inputs, targets, rows.Count, t, next);
    }
}
