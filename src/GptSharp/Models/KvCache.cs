using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Models;

/// <summary>
/// Keys and values of every layer for the tokens seen so far, preallocated to the context length so that decoding
/// a token writes one slot instead of concatenating. Shapes: (B, KvHeads, ContextLength, HeadDim) per layer.
/// </summary>
public sealed class KvCache : IAttentionCache, IDisposable
{
    readonly Tensor[] _keys, _values;
    readonly GptConfig _config;
    readonly int[] _leftPadding;

    /// <param name="leftPadding">For a batch of prompts of different lengths, left-padded to one length: how many
    /// padding slots open each row (B). Padding is never attended to and positions count from each row's first real token.</param>
    public KvCache(GptConfig config, int batchSize, Device? device = null, ScalarType dtype = ScalarType.Float32, int[]? leftPadding = null)
    {
        _config = config;
        _leftPadding = leftPadding ?? new int[batchSize];
        if (leftPadding is not null)
        {
            if (leftPadding.Length != batchSize) throw new ArgumentException($"{leftPadding.Length} padding counts for a batch of {batchSize}.", nameof(leftPadding));
            if (leftPadding.Any(p => p > 0)) Padding = tensor(leftPadding.Select(p => (long)p).ToArray(), device: device).DetachFromDisposeScope();
        }
        _keys = new Tensor[config.Layers];
        _values = new Tensor[config.Layers];
        for (int layer = 0; layer < config.Layers; layer++)
        {
            _keys[layer] = zeros([batchSize, config.KvHeads, config.ContextLength, config.HeadDim], dtype, device).DetachFromDisposeScope();
            _values[layer] = zeros([batchSize, config.KvHeads, config.ContextLength, config.HeadDim], dtype, device).DetachFromDisposeScope();
        }
        Capacity = config.ContextLength;
    }

    /// <summary>Left-padding slots per row (B), or null when no row is padded.</summary>
    public Tensor? Padding { get; }

    /// <summary>For a padded batch, the positions (B, T) of the slots the current forward pass fills: slot index minus
    /// the row's padding (0 inside the padding). Set by <see cref="BeginStep"/>; null without padding.</summary>
    public Tensor? StepPositions { get; private set; }

    /// <summary>For a padded batch, which keys each query of the current forward pass may see (B, 1, T, Length + T):
    /// earlier-or-same slots that are not padding — a padding query sees itself only, so that no row of attention is
    /// empty. Set by <see cref="BeginStep"/>; null without padding.</summary>
    public Tensor? StepMask { get; private set; }

    /// <summary>Called once per forward pass of <paramref name="t"/> new tokens, before the layers, so that every layer
    /// reads the same positions and mask instead of building them again.</summary>
    public void BeginStep(int t)
    {
        if (Padding is null) return;
        DisposeStep();
        StepPositions = (arange(Length, Length + t, dtype: ScalarType.Int64, device: Padding.device).unsqueeze(0) - Padding.unsqueeze(1))
            .clamp_min(0).DetachFromDisposeScope();
        StepMask = AttentionMask(t).DetachFromDisposeScope();
    }

    void DisposeStep()
    {
        StepPositions?.Dispose();
        StepMask?.Dispose();
        (StepPositions, StepMask) = (null, null);
    }

    Tensor AttentionMask(int t)
    {
        using var scope = NewDisposeScope();
        var device = Padding!.device;
        var keys = arange(Length + t, dtype: ScalarType.Int64, device: device);                 // (K)
        var queries = arange(Length, Length + t, dtype: ScalarType.Int64, device: device);       // (T)
        var causal = keys.unsqueeze(0) <= queries.unsqueeze(1);                                // (T, K)
        var real = keys.unsqueeze(0) >= Padding.unsqueeze(1);                                  // (B, K)
        var self = keys.unsqueeze(0) == queries.unsqueeze(1);                                  // (T, K)
        return ((causal.unsqueeze(0) & real.unsqueeze(1)) | self.unsqueeze(0)).unsqueeze(1).MoveToOuterDisposeScope();
    }

    /// <summary>Tokens already stored (the position of the next token).</summary>
    public int Length { get; private set; }
    public int Capacity { get; }

    /// <summary>Stores (B, KvHeads, T, HeadDim) keys/values for one layer at the current length; returns everything stored so far for that layer.</summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor keys, Tensor values)
    {
        int count = (int)keys.shape[2];
        if (Length + count > Capacity)
            throw new InvalidOperationException($"KV cache full: {Length} + {count} tokens exceed the context length {Capacity}.");
        _keys[layer].narrow(2, Length, count).copy_(keys);
        _values[layer].narrow(2, Length, count).copy_(values);
        return (_keys[layer].narrow(2, 0, Length + count), _values[layer].narrow(2, 0, Length + count));
    }

    /// <summary>Called once per forward pass, after every layer appended, to move the write position on.</summary>
    public void Advance(int count)
    {
        Length += count;
        DisposeStep();
    }

    /// <summary>
    /// A new cache with only the cache rows <paramref name="rows"/> and without the first <paramref name="drop"/> slots,
    /// which must be padding in every kept row. When the longest rows of a padded batch are done, this frees room at the
    /// end for the shorter ones, so that each row's budget depends on its own length alone. Positions are unchanged.
    /// </summary>
    public KvCache Compact(int[] rows, int drop)
    {
        if (rows.Length == 0) throw new ArgumentException("Keep at least one row.", nameof(rows));
        foreach (int row in rows)
            if (_leftPadding[row] < drop) throw new ArgumentException($"Row {row} has {_leftPadding[row]} padding slots; {drop} cannot be dropped.", nameof(drop));
        var first = _keys[0];
        var kept = new KvCache(_config, rows.Length, first.device, first.dtype, [.. rows.Select(r => _leftPadding[r] - drop)]);
        using var scope = NewDisposeScope();
        var index = tensor(rows.Select(r => (long)r).ToArray(), device: first.device);
        int length = Length - drop;
        for (int layer = 0; layer < _keys.Length; layer++)
        {
            kept._keys[layer].narrow(2, 0, length).copy_(_keys[layer].index_select(0, index).narrow(2, drop, length));
            kept._values[layer].narrow(2, 0, length).copy_(_values[layer].index_select(0, index).narrow(2, drop, length));
        }
        kept.Length = length;
        return kept;
    }

    /// <summary>Left-padding slots of each row (B).</summary>
    public IReadOnlyList<int> LeftPadding => _leftPadding;

    /// <summary>Forgets everything (keeps the memory).</summary>
    public void Reset() => Length = 0;

    public void Dispose()
    {
        foreach (var t in _keys) t.Dispose();
        foreach (var t in _values) t.Dispose();
        Padding?.Dispose();
        DisposeStep();
    }
}
