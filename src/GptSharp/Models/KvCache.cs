using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Models;

/// <summary>
/// Keys and values of every layer for the tokens seen so far, preallocated to the context length so that decoding
/// a token writes one slot instead of concatenating. Shapes: (B, KvHeads, ContextLength, HeadDim) per layer.
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor[] _keys, _values;

    public KvCache(GptConfig config, int batchSize, Device? device = null, ScalarType dtype = ScalarType.Float32)
    {
        _keys = new Tensor[config.Layers];
        _values = new Tensor[config.Layers];
        for (int layer = 0; layer < config.Layers; layer++)
        {
            _keys[layer] = zeros([batchSize, config.KvHeads, config.ContextLength, config.HeadDim], dtype, device).DetachFromDisposeScope();
            _values[layer] = zeros([batchSize, config.KvHeads, config.ContextLength, config.HeadDim], dtype, device).DetachFromDisposeScope();
        }
        Capacity = config.ContextLength;
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
    public void Advance(int count) => Length += count;

    /// <summary>Forgets everything (keeps the memory).</summary>
    public void Reset() => Length = 0;

    public void Dispose()
    {
        foreach (var t in _keys) t.Dispose();
        foreach (var t in _values) t.Dispose();
    }
}
