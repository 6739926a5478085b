using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using GptSharp.Models;

namespace GptSharp.Inference.Cpu;

/// <summary>How the CPU engine's cache stores keys and values: F32, F16 (half the memory and the bytes each attention
/// step reads; llama.cpp's default), or Q8_0 (blocks of 32 signed bytes with an F16 scale, 34 bytes per 32 values: about
/// half of F16 again; llama.cpp's <c>-ctk/-ctv q8_0</c>; head sizes must be whole blocks).</summary>
public enum KvFormat { F32, F16, Q8_0 }

/// <summary>
/// The CPU engine's keys and values: per sequence slot and layer, (KvHeads, Capacity, HeadDim) in <see cref="KvFormat"/>,
/// so one head's keys are contiguous for the attention loop. A slot's memory is taken when the slot is first used. Also
/// holds the scratch buffers of a forward pass, grown to the largest call and then reused: decoding allocates nothing
/// per token.
/// </summary>
public sealed class CpuKvCache
{
    readonly GptConfig _config;
    readonly Array?[] _keys, _values;   // [slot · Layers + layer]: float[], ushort[] (F16 bits) or sbyte[] (Q8_0 values)
    readonly ushort[]?[] _keyScales, _valueScales;   // Q8_0: one F16 scale per 32 values, [slot · Layers + layer]

    public CpuKvCache(GptConfig config, int slots, int? capacity = null, KvFormat format = KvFormat.F32)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
        if (Problem(config, format) is { } problem) throw new ArgumentException(problem, nameof(format));
        _config = config;
        Slots = slots;
        Capacity = capacity ?? config.ContextLength;
        Format = format;
        _keys = new Array[slots * config.Layers];
        _values = new Array[slots * config.Layers];
        _keyScales = new ushort[slots * config.Layers][];
        _valueScales = new ushort[slots * config.Layers][];
    }

    /// <summary>Why a model of <paramref name="config"/> cannot cache in <paramref name="format"/> (naming its head size), or null.</summary>
    public static string? Problem(GptConfig config, KvFormat format) =>
        format == KvFormat.Q8_0 && config.HeadDim % 32 != 0
            ? $"A Q8_0 cache (--kv q8_0) stores blocks of 32 values; this model's head size is {config.HeadDim}, not a multiple of 32. Use an F16 cache (--kv f16)."
            : null;

    /// <summary>Bytes one cached token takes over all layers, keys and values.</summary>
    public long BytesPerToken
    {
        get
        {
            long values = 2L * _config.Layers * _config.KvHeads * _config.HeadDim;
            return Format switch { KvFormat.F32 => values * 4, KvFormat.F16 => values * 2, _ => values / 32 * 34 };
        }
    }

    public int Slots { get; }
    public int Capacity { get; }
    public KvFormat Format { get; }

    internal TStored[] Keys<TStored>(int slot, int layer) => (TStored[])(_keys[slot * _config.Layers + layer] ??= Slab());
    internal TStored[] Values<TStored>(int slot, int layer) => (TStored[])(_values[slot * _config.Layers + layer] ??= Slab());
    internal ushort[] KeyScales(int slot, int layer) => _keyScales[slot * _config.Layers + layer] ??= new ushort[_config.KvHeads * Capacity * _config.HeadDim / 32];
    internal ushort[] ValueScales(int slot, int layer) => _valueScales[slot * _config.Layers + layer] ??= new ushort[_config.KvHeads * Capacity * _config.HeadDim / 32];

    Array Slab()
    {
        int length = _config.KvHeads * Capacity * _config.HeadDim;
        return Format switch { KvFormat.F16 => new ushort[length], KvFormat.Q8_0 => new sbyte[length], _ => new float[length] };
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
        if (Format == KvFormat.F16)
        {
            RoundToHalf(key, Keys<ushort>(slot, layer).AsSpan(at, hd));
            RoundToHalf(value, Values<ushort>(slot, layer).AsSpan(at, hd));
            return;
        }
        Quantize(key, Keys<sbyte>(slot, layer).AsSpan(at, hd), KeyScales(slot, layer).AsSpan(at / 32, hd / 32));
        Quantize(value, Values<sbyte>(slot, layer).AsSpan(at, hd), ValueScales(slot, layer).AsSpan(at / 32, hd / 32));
    }

    /// <summary>
    /// Q8_0's blocks as llama.cpp lays them out: per block of 32, scale = max |x| / 127 stored in F16, each value
    /// round(x / scale) with the stored scale (to nearest, ties away from zero); an all-zero block has scale 0. A block
    /// beyond F16's range saturates its scale at 65504, never ∞.
    /// </summary>
    public static void Quantize(ReadOnlySpan<float> source, Span<sbyte> values, Span<ushort> scales)
    {
        Span<float> scale = stackalloc float[1];
        Span<ushort> bits = stackalloc ushort[1];
        for (int block = 0; block < scales.Length; block++)
        {
            var x = source.Slice(block * 32, 32);
            float max = 0;
            foreach (float v in x) max = MathF.Max(max, MathF.Abs(v));
            scale[0] = max / 127;
            RoundToHalf(scale, bits);
            scales[block] = bits[0];
            float stored = (float)BitConverter.UInt16BitsToHalf(bits[0]), inverse = stored == 0 ? 0 : 1 / stored;
            for (int k = 0; k < 32; k++) values[block * 32 + k] = (sbyte)Math.Clamp(MathF.Round(x[k] * inverse, MidpointRounding.AwayFromZero), -127, 127);
        }
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
        for (int layer = 0; layer < _config.Layers; layer++)
        {
            _keys[slot * _config.Layers + layer] = _values[slot * _config.Layers + layer] = null;
            _keyScales[slot * _config.Layers + layer] = _valueScales[slot * _config.Layers + layer] = null;
        }
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
