using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using GptSharp.Models;

namespace GptSharp.Inference.Cpu;

/// <summary>
/// Causal attention of each (token, head) of a forward pass over its slot's cached keys and values, into
/// cache.Attention; the (token, head) pairs are shared out across threads as they come free. Scores, softmax and the
/// weighted sum of values are one pass each over the cache, in registers where the head's width is whole vectors.
/// </summary>
internal sealed class AttentionWork(GptConfig config, int threads) : IPartWork
{
    CpuKvCache? _cache;
    int _layer, _n, _taken;
    int[] _slots = [], _positions = [];
    readonly float[][] _scores = new float[threads][];

    public void Set(CpuKvCache cache, int layer, int n, int[] slots, int[] positions) => (_cache, _layer, _n, _slots, _positions, _taken) = (cache, layer, n, slots, positions, 0);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Execute(int part, int parts)
    {
        int h = config.Heads, kvh = config.KvHeads, hd = config.HeadDim, group = h / kvh, qkvWidth = (h + 2 * kvh) * hd;
        var cache = _cache!;
        float scale = 1 / MathF.Sqrt(hd);
        var scores = _scores[part] is { } s && s.Length >= cache.Capacity ? s : _scores[part] = new float[cache.Capacity];
        int items = _n * h;
        // (token, head) pairs taken one at a time as threads come free, as the products' chunks are.
        for (int item = Interlocked.Increment(ref _taken) - 1; item < items; item = Interlocked.Increment(ref _taken) - 1)
        {
            int i = item / h, head = item % h, length = _positions[i] + 1;
            var work = new HeadItem(_slots[i], (head / group) * cache.Capacity * hd, length,
                cache.Qkv.AsSpan(i * qkvWidth + head * hd, hd), cache.Attention.AsSpan((i * h + head) * hd, hd), scores.AsSpan(0, length));
            switch (cache.Format)
            {
                case KvFormat.F16: Attend<ushort, HalfValues>(work, scale); break;
                case KvFormat.Q8_0: AttendQ8(work, scale); break;
                default: Attend<float, F32Values>(work, scale); break;
            }
        }
    }

    /// <summary>One (token, head): its slot, where its key head's positions start in the slot's cache, how many it attends
    /// to, its query, where its output goes, and its thread's scores.</summary>
    readonly ref struct HeadItem(int slot, int start, int length, Span<float> query, Span<float> output, Span<float> scores)
    {
        public readonly int Slot = slot, Start = start, Length = length;
        public readonly Span<float> Query = query, Output = output, Scores = scores;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void Attend<TStored, TValues>(HeadItem item, float scale) where TStored : unmanaged where TValues : struct, IWidening<TStored>
    {
        int hd = config.HeadDim;
        var keys = _cache!.Keys<TStored>(item.Slot, _layer).AsSpan(item.Start, item.Length * hd);
        var values = _cache.Values<TStored>(item.Slot, _layer).AsSpan(item.Start, item.Length * hd);
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported && hd % 16 == 0)
        {
            Scores<TStored, TValues>(item.Query, keys, scale, item.Scores);
            Softmax(item.Scores);
            WeightedSum<TStored, TValues>(item.Scores, values, item.Output);
        }
        else Scalar<TStored, TValues>(item.Query, keys, values, scale, item.Scores, item.Output);
    }

    /// <summary>The same over a Q8_0 cache: each block of 32 keys or values widened from bytes and scaled by its F16 scale.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void AttendQ8(HeadItem item, float scale)
    {
        int hd = config.HeadDim, blocks = hd / 32, length = item.Length;
        var keys = _cache!.Keys<sbyte>(item.Slot, _layer).AsSpan(item.Start, length * hd);
        var values = _cache.Values<sbyte>(item.Slot, _layer).AsSpan(item.Start, length * hd);
        var keyScales = _cache.KeyScales(item.Slot, _layer).AsSpan(item.Start / 32, length * blocks);
        var valueScales = _cache.ValueScales(item.Slot, _layer).AsSpan(item.Start / 32, length * blocks);
        Span<float> query = item.Query, output = item.Output, p = item.Scores;
        if (Avx512F.IsSupported)
        {
            ScoresQ8(query, keys, keyScales, scale, p);
            Softmax(p);
            WeightedSumQ8(p, values, valueScales, output);
            return;
        }
        for (int t = 0; t < length; t++)
        {
            float score = 0;
            for (int c = 0; c < hd; c++) score += query[c] * keys[t * hd + c] * (float)BitConverter.UInt16BitsToHalf(keyScales[(t * hd + c) / 32]);
            p[t] = score * scale;
        }
        float max = float.NegativeInfinity;
        foreach (float score in p) max = MathF.Max(max, score);
        float sum = 0;
        for (int t = 0; t < length; t++) sum += p[t] = MathF.Exp(p[t] - max);
        output.Clear();
        for (int t = 0; t < length; t++)
            for (int c = 0; c < hd; c++) output[c] += p[t] / sum * values[t * hd + c] * (float)BitConverter.UInt16BitsToHalf(valueScales[(t * hd + c) / 32]);
    }

    /// <summary>16 Q8_0 values from <paramref name="at"/> as floats (not yet scaled).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Widen16(ref sbyte values, nuint at) =>
        Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.LoadUnsafe(ref values, at)));

    /// <summary>scores[t] = q · k[t] × scale over Q8_0 keys: per block, the widened bytes times the query, times the block's scale.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ScoresQ8(ReadOnlySpan<float> query, Span<sbyte> keys, Span<ushort> keyScales, float scale, Span<float> scores)
    {
        int hd = query.Length, blocks = hd / 32;
        ref float q = ref MemoryMarshal.GetReference(query);
        ref sbyte k = ref MemoryMarshal.GetReference(keys);
        for (int t = 0; t < scores.Length; t++)
        {
            var sum = Vector512<float>.Zero;
            for (int b = 0; b < blocks; b++)
            {
                nuint at = (nuint)(t * hd + b * 32);
                var block = Vector512.FusedMultiplyAdd(Widen16(ref k, at + 16), Vector512.LoadUnsafe(ref q, (nuint)(b * 32 + 16)),
                    Widen16(ref k, at) * Vector512.LoadUnsafe(ref q, (nuint)(b * 32)));
                sum = Vector512.FusedMultiplyAdd(block, Vector512.Create((float)BitConverter.UInt16BitsToHalf(keyScales[t * blocks + b])), sum);
            }
            scores[t] = Vector512.Sum(sum) * scale;
        }
    }

    /// <summary>output = Σ_t p[t] · v[t] over Q8_0 values: each block's weight is p[t] times its scale.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void WeightedSumQ8(ReadOnlySpan<float> p, Span<sbyte> values, Span<ushort> valueScales, Span<float> output)
    {
        int hd = output.Length, blocks = hd / 32;
        ref sbyte v = ref MemoryMarshal.GetReference(values);
        ref float o = ref MemoryMarshal.GetReference(output);
        for (int b = 0; b < blocks; b++)
        {
            Vector512<float> a0 = default, a1 = default;
            for (int t = 0; t < p.Length; t++)
            {
                nuint at = (nuint)(t * hd + b * 32);
                var weight = Vector512.Create(p[t] * (float)BitConverter.UInt16BitsToHalf(valueScales[t * blocks + b]));
                a0 = Vector512.FusedMultiplyAdd(Widen16(ref v, at), weight, a0);
                a1 = Vector512.FusedMultiplyAdd(Widen16(ref v, at + 16), weight, a1);
            }
            a0.StoreUnsafe(ref o, (nuint)(b * 32));
            a1.StoreUnsafe(ref o, (nuint)(b * 32 + 16));
        }
    }

    /// <summary>scores[t] = q · k[t] × scale.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Scores<TStored, TValues>(ReadOnlySpan<float> query, Span<TStored> keys, float scale, Span<float> scores)
        where TStored : unmanaged where TValues : struct, IWidening<TStored>
    {
        int hd = query.Length;
        ref float q = ref MemoryMarshal.GetReference(query);
        ref TStored k = ref MemoryMarshal.GetReference(keys);
        for (int t = 0; t < scores.Length; t++)
        {
            nuint at = (nuint)(t * hd);
            var sum = Vector512.Multiply(TValues.Load16(ref k, at), Vector512.LoadUnsafe(ref q));
            for (int c = 16; c < hd; c += 16) sum = Vector512.FusedMultiplyAdd(TValues.Load16(ref k, at + (nuint)c), Vector512.LoadUnsafe(ref q, (nuint)c), sum);
            scores[t] = Vector512.Sum(sum) * scale;
        }
    }

    /// <summary>In place: exp(s − max), normalised.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Softmax(Span<float> scores)
    {
        float max = float.NegativeInfinity;
        foreach (float score in scores) max = MathF.Max(max, score);
        int t = 0;
        ref float s = ref MemoryMarshal.GetReference(scores);
        var total = Vector512<float>.Zero;
        for (; t + 16 <= scores.Length; t += 16)
        {
            var e = Vector512.Exp(Vector512.LoadUnsafe(ref s, (nuint)t) - Vector512.Create(max));
            e.StoreUnsafe(ref s, (nuint)t);
            total += e;
        }
        float sum = Vector512.Sum(total);
        for (; t < scores.Length; t++) sum += scores[t] = MathF.Exp(scores[t] - max);
        float inverse = 1 / sum;
        for (t = 0; t + 16 <= scores.Length; t += 16) (Vector512.LoadUnsafe(ref s, (nuint)t) * inverse).StoreUnsafe(ref s, (nuint)t);
        for (; t < scores.Length; t++) scores[t] *= inverse;
    }

    /// <summary>output = Σ_t p[t] · v[t], 64 columns at a time held in registers across t.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void WeightedSum<TStored, TValues>(ReadOnlySpan<float> p, Span<TStored> values, Span<float> output)
        where TStored : unmanaged where TValues : struct, IWidening<TStored>
    {
        int hd = output.Length, c = 0;
        ref TStored v = ref MemoryMarshal.GetReference(values);
        ref float o = ref MemoryMarshal.GetReference(output);
        for (; c + 64 <= hd; c += 64)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int t = 0; t < p.Length; t++)
            {
                nuint at = (nuint)(t * hd + c);
                var weight = Vector512.Create(p[t]);
                a0 = Vector512.FusedMultiplyAdd(TValues.Load16(ref v, at), weight, a0);
                a1 = Vector512.FusedMultiplyAdd(TValues.Load16(ref v, at + 16), weight, a1);
                a2 = Vector512.FusedMultiplyAdd(TValues.Load16(ref v, at + 32), weight, a2);
                a3 = Vector512.FusedMultiplyAdd(TValues.Load16(ref v, at + 48), weight, a3);
            }
            a0.StoreUnsafe(ref o, (nuint)c);
            a1.StoreUnsafe(ref o, (nuint)c + 16);
            a2.StoreUnsafe(ref o, (nuint)c + 32);
            a3.StoreUnsafe(ref o, (nuint)c + 48);
        }
        for (; c < hd; c += 16)
        {
            var a = Vector512<float>.Zero;
            for (int t = 0; t < p.Length; t++) a = Vector512.FusedMultiplyAdd(TValues.Load16(ref v, (nuint)(t * hd + c)), Vector512.Create(p[t]), a);
            a.StoreUnsafe(ref o, (nuint)c);
        }
    }

    /// <summary>Heads whose width is not whole vectors, or CPUs without AVX-512.</summary>
    static void Scalar<TStored, TValues>(ReadOnlySpan<float> query, Span<TStored> keys, Span<TStored> values, float scale, Span<float> scores, Span<float> output)
        where TStored : unmanaged where TValues : struct, IWidening<TStored>
    {
        int hd = query.Length;
        for (int t = 0; t < scores.Length; t++)
        {
            float score = 0;
            for (int c = 0; c < hd; c++) score += query[c] * TValues.Load1(keys[t * hd + c]);
            scores[t] = score * scale;
        }
        float max = float.NegativeInfinity;
        foreach (float score in scores) max = MathF.Max(max, score);
        float sum = 0;
        for (int t = 0; t < scores.Length; t++) sum += scores[t] = MathF.Exp(scores[t] - max);
        output.Clear();
        for (int t = 0; t < scores.Length; t++)
        {
            float weight = scores[t] / sum;
            for (int c = 0; c < hd; c++) output[c] += weight * TValues.Load1(values[t * hd + c]);
        }
    }
}

/// <summary>F16 keys and values as their true F32 values: the weights' three-operation widening, then ×2^112.</summary>
internal struct HalfValues : IWidening<ushort>
{
    public static bool Rebased => false;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(ref ushort w, nuint k) => F16Values.Load16(ref w, k) * MatrixInput.F16Rebase;

    public static float Load1(ushort w) => (float)BitConverter.UInt16BitsToHalf(w);
}
