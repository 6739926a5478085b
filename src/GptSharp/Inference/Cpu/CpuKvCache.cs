using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using GptSharp.Models;

namespace GptSharp.Inference.Cpu;

/// <summary>How the CPU engine's cache stores keys and values: F32, or F16 (half the memory and the bytes each
/// attention step reads; llama.cpp's default).</summary>
public enum KvFormat { F32, F16 }

/// <summary>
/// The CPU engine's keys and values: per sequence slot and layer, (KvHeads, Capacity, HeadDim) in <see cref="KvFormat"/>,
/// so one head's keys are contiguous for the attention loop. A slot's memory is taken when the slot is first used. Also
/// holds the scratch buffers of a forward pass, grown to the largest call and then reused: decoding allocates nothing
/// per token.
/// </summary>
public sealed class CpuKvCache
{
    readonly GptConfig _config;
    readonly Array?[] _keys, _values;   // [slot · Layers + layer]: float[] or ushort[] (F16 bits)

    public CpuKvCache(GptConfig config, int slots, int? capacity = null, KvFormat format = KvFormat.F32)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
        _config = config;
        Slots = slots;
        Capacity = capacity ?? config.ContextLength;
        Format = format;
        _keys = new Array[slots * config.Layers];
        _values = new Array[slots * config.Layers];
    }

    public int Slots { get; }
    public int Capacity { get; }
    public KvFormat Format { get; }

    internal TStored[] Keys<TStored>(int slot, int layer) => (TStored[])(_keys[slot * _config.Layers + layer] ??= Slab());
    internal TStored[] Values<TStored>(int slot, int layer) => (TStored[])(_values[slot * _config.Layers + layer] ??= Slab());

    Array Slab()
    {
        int length = _config.KvHeads * Capacity * _config.HeadDim;
        return Format == KvFormat.F16 ? new ushort[length] : new float[length];
    }

    /// <summary>Stores a token's key and value for one head at a position of a slot.</summary>
    internal void Write(int slot, int layer, int kvHead, int position, ReadOnlySpan<float> key, ReadOnlySpan<float> value)
    {
        int hd = _config.HeadDim, at = (kvHead * Capacity + position) * hd;
        if (Format == KvFormat.F32)
        {
            key.CopyTo(Keys<float>(slot, layer).AsSpan(at, hd));
            value.CopyTo(Values<float>(slot, layer).AsSpan(at, hd));
            return;
        }
        RoundToHalf(key, Keys<ushort>(slot, layer).AsSpan(at, hd));
        RoundToHalf(value, Values<ushort>(slot, layer).AsSpan(at, hd));
    }

    /// <summary>
    /// Rounded to F16, to nearest even; beyond F16's range (and ∞) saturated to ±65504, values under its smallest
    /// normal (6.1e-5) flushed to zero as for F16 weights, NaN kept: attention never meets an ∞ or a denormal it did not
    /// compute. On F32's bits: clamp, rebase the exponent by 127 − 15, round away 13 mantissa bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RoundToHalf(ReadOnlySpan<float> source, Span<ushort> target)
    {
        int k = 0;
        if (Avx512F.IsSupported)
            for (; k + 16 <= source.Length; k += 16)
            {
                var u = Vector512.Create(source.Slice(k, 16)).AsUInt32();
                var a = u & Vector512.Create(0x7FFFFFFFu);
                var m = Vector512.Min(a, Vector512.Create(0x477FE000u));
                var h = (m - Vector512.Create(0x38000000u - 0x0FFFu) + ((m >> 13) & Vector512<uint>.One)) >> 13;
                h = Vector512.ConditionalSelect(Vector512.LessThan(a, Vector512.Create(0x38800000u)), Vector512<uint>.Zero, h);
                h = Vector512.ConditionalSelect(Vector512.GreaterThan(a, Vector512.Create(0x7F800000u)), Vector512.Create(0x7E00u), h);
                Avx512F.ConvertToVector256UInt16(h | ((u >> 16) & Vector512.Create(0x8000u))).CopyTo(target.Slice(k, 16));
            }
        for (; k < source.Length; k++)
        {
            uint u = BitConverter.SingleToUInt32Bits(source[k]), a = u & 0x7FFFFFFF, m = Math.Min(a, 0x477FE000u);
            uint h = a > 0x7F800000 ? 0x7E00u : a < 0x38800000 ? 0u : (m - (0x38000000u - 0x0FFFu) + ((m >> 13) & 1)) >> 13;
            target[k] = (ushort)(h | ((u >> 16) & 0x8000));
        }
    }

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
