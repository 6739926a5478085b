using GptSharp.Models;

namespace GptSharp.Inference.Cpu;

/// <summary>
/// The CPU engine's keys and values: per sequence slot and layer, (KvHeads, Capacity, HeadDim) in F32, so one head's
/// keys are contiguous for the attention loop. A slot's memory is taken when the slot is first used. Also holds the
/// scratch buffers of a forward pass, grown to the largest call and then reused: decoding allocates nothing per token.
/// </summary>
public sealed class CpuKvCache
{
    readonly GptConfig _config;
    readonly float[]?[] _keys, _values;   // [slot · Layers + layer]

    public CpuKvCache(GptConfig config, int slots, int? capacity = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
        _config = config;
        Slots = slots;
        Capacity = capacity ?? config.ContextLength;
        _keys = new float[slots * config.Layers][];
        _values = new float[slots * config.Layers][];
    }

    public int Slots { get; }
    public int Capacity { get; }

    internal float[] Keys(int slot, int layer) => _keys[slot * _config.Layers + layer] ??= Slab();
    internal float[] Values(int slot, int layer) => _values[slot * _config.Layers + layer] ??= Slab();

    float[] Slab() => new float[_config.KvHeads * Capacity * _config.HeadDim];

    /// <summary>Frees a slot's memory (it is taken again on next use).</summary>
    public void Release(int slot)
    {
        for (int layer = 0; layer < _config.Layers; layer++) _keys[slot * _config.Layers + layer] = _values[slot * _config.Layers + layer] = null;
    }

    // Scratch of a forward pass, sized for `Tokens` tokens at a time.
    internal int Tokens;
    internal float[] X = [], Normed = [], Qkv = [], Attention = [], Projected = [], Hidden = [], Activated = [], MlpOut = [];

    internal void Ensure(int n, int width, int qkvWidth, int attentionWidth, int hiddenWidth, int upWidth)
    {
        if (n <= Tokens) return;
        Tokens = n;
        X = new float[n * width];
        Normed = new float[n * width];
        Qkv = new float[n * qkvWidth];
        Attention = new float[n * attentionWidth];
        Projected = new float[n * width];
        Hidden = new float[n * upWidth];
        Activated = new float[n * hiddenWidth];
        MlpOut = new float[n * width];
    }
}
