using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GptSharp.Inference.Cpu;

/// <summary>How a stored value type becomes F32: 16 values into one vector, or one value. A format may read its
/// values times 2^−112 (<see cref="Rebased"/>), against activations readied times 2^112.</summary>
internal interface IWidening<TStored> where TStored : unmanaged
{
    static abstract bool Rebased { get; }
    static abstract Vector512<float> Load16(ref TStored w, nuint k);
    static abstract float Load1(TStored w);
}

internal struct F32Values : IWidening<float>
{
    public static bool Rebased => false;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(ref float w, nuint k) => Vector512.LoadUnsafe(ref w, k);
    public static float Load1(float w) => w;
}

/// <summary>BF16 is F32's upper half: widen and shift.</summary>
internal struct Bf16Values : IWidening<ushort>
{
    public static bool Rebased => false;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(ref ushort w, nuint k) =>
        Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector256.LoadUnsafe(ref w, k)), 16).AsSingle();
    public static float Load1(ushort w) => BitConverter.UInt32BitsToSingle((uint)w << 16);
}

/// <summary>
/// F16 to F32 in three operations: sign-extended to 32 bits and shifted left by 13, its exponent and mantissa lie
/// under F32's and its sign in F32's; a mask clears the sign's copies. The F32 read this way is the weight times
/// 2^(15−127) = 2^−112, which the activations' 2^112 (<see cref="MatrixInput.ForF16"/>) cancels exactly, so no
/// multiplication rebases the exponent. Packing flushes F16's subnormals (|w| &lt; 6.1e-5) to zero: every weight read
/// is a normal F32 (≥ 2^−126), and no denormal enters the arithmetic.
/// </summary>
internal struct F16Values : IWidening<ushort>
{
    public static bool Rebased => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(ref ushort w, nuint k) =>
        (Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector256.LoadUnsafe(ref w, k).AsInt16()), 13) & Vector512.Create(unchecked((int)0x8FFFE000))).AsSingle();

    public static float Load1(ushort w) => BitConverter.Int32BitsToSingle(((short)w << 13) & unchecked((int)0x8FFFE000));
}

/// <summary>
/// A matrix of one value per weight (F32, F16, BF16), multiplied four rows at a time against activations that stay in
/// L1. With AVX-512 and rows of whole vectors (16 values) the rows are stored in quads, interleaved 16 values at a time,
/// so a product reads one sequential stream (the hardware prefetcher keeps pace with one stream, not with four) and every
/// format is widened in registers; otherwise rows stay as they are, F32 runs on 256-bit vectors and the 16-bit formats
/// on scalar code (correct but slow).
/// </summary>
internal sealed class DenseMatrix<TStored, TValues> : WeightMatrix where TStored : unmanaged where TValues : struct, IWidening<TStored>
{
    readonly TStored[] _w;
    readonly bool _quads;
    readonly int _quadRows;   // rows stored interleaved; the rest follow row by row

    public DenseMatrix(TStored[] stored, int rows, int cols, WeightFormat format) : base(rows, cols)
    {
        Format = format;
        _quads = Avx512F.IsSupported && cols % 16 == 0;
        _quadRows = _quads ? rows & ~3 : 0;
        if (!_quads)
        {
            _w = stored;
            return;
        }
        _w = new TStored[stored.Length];
        var source = stored.AsSpan();
        var target = _w.AsSpan();
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k += 16)
                source.Slice(r * cols + k, 16).CopyTo(target.Slice((int)Index(r, k), 16));
    }

    public override WeightFormat Format { get; }
    public override long Bytes => (long)_w.Length * Unsafe.SizeOf<TStored>();

    /// <summary>Where value (r, k) is stored.</summary>
    long Index(int r, int k) => r < _quadRows
        ? (long)(r >> 2) * 4 * Cols + (k >> 4) * 64 + (r & 3) * 16 + (k & 15)
        : (long)r * Cols + k;

    public override void ReadRow(int r, Span<float> destination)
    {
        float scale = TValues.Rebased ? MatrixInput.F16Rebase : 1;
        for (int k = 0; k < Cols; k++) destination[k] = TValues.Load1(_w[Index(r, k)]) * scale;
    }

    internal override void Prepare(float[] x, int n, MatrixInput input)
    {
        if (TValues.Rebased) input.ForF16(x, n, Cols);
        else input.Plain(x, n, Cols);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal override void Multiply(MatrixInput input, float[] y, int rowStart, int rowEnd)
    {
        float[] x = input.Floats;
        int n = input.N, cols = Cols, r = rowStart;
        for (; r + 4 <= rowEnd; r += 4)
        {
            int i = 0;
            if (_quads)
                for (; i + 4 <= n; i += 4) QuadTimesFour(ref _w[(long)r * cols], cols, x, i, y, i * Rows + r, Rows);
            for (; i < n; i++)
            {
                var (a, b, c, d) = _quads ? Quad(ref _w[(long)r * cols], cols, ref x[i * cols]) : Dot4(ref _w[(long)r * cols], cols, ref x[i * cols]);
                int o = i * Rows + r;
                (y[o], y[o + 1], y[o + 2], y[o + 3]) = (a, b, c, d);
            }
        }
        for (; r < rowEnd; r++)
            for (int i = 0; i < n; i++)
            {
                float s = 0;
                for (int k = 0; k < cols; k++) s += TValues.Load1(_w[Index(r, k)]) * x[i * cols + k];
                y[i * Rows + r] = s;
            }
        input.ScaleOutputs(y, Rows, rowStart, rowEnd);
    }

    /// <summary>
    /// Four interleaved rows against one vector: 64 stored values per 16 activations, in order. One accumulator per row,
    /// the same arithmetic as <see cref="QuadTimesFour"/> per vector, so a row's logits do not depend on the batch it is in.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static (float, float, float, float) Quad(ref TStored w, int cols, ref float x)
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        nuint at = 0;
        for (int k = 0; k < cols; k += 16, at += 64)
        {
            var v = Vector512.LoadUnsafe(ref x, (nuint)k);
            a0 = Vector512.FusedMultiplyAdd(TValues.Load16(ref w, at), v, a0);
            a1 = Vector512.FusedMultiplyAdd(TValues.Load16(ref w, at + 16), v, a1);
            a2 = Vector512.FusedMultiplyAdd(TValues.Load16(ref w, at + 32), v, a2);
            a3 = Vector512.FusedMultiplyAdd(TValues.Load16(ref w, at + 48), v, a3);
        }
        return (Vector512.Sum(a0), Vector512.Sum(a1), Vector512.Sum(a2), Vector512.Sum(a3));
    }

    /// <summary>
    /// Four interleaved rows against four activation vectors (x rows i..i+3): each weight vector, once loaded and
    /// widened, feeds four products — batched decoding and prefill are bound by that widening, not by memory.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void QuadTimesFour(ref TStored w, int cols, float[] x, int i, float[] y, int o, int stride)
    {
        ref float x0 = ref x[i * cols];
        ref float x1 = ref x[(i + 1) * cols];
        ref float x2 = ref x[(i + 2) * cols];
        ref float x3 = ref x[(i + 3) * cols];
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default, a10 = default, a11 = default, a12 = default, a13 = default,
                         a20 = default, a21 = default, a22 = default, a23 = default, a30 = default, a31 = default, a32 = default, a33 = default;
        nuint at = 0;
        for (int k = 0; k < cols; k += 16, at += 64)
        {
            nuint u = (nuint)k;
            var v0 = Vector512.LoadUnsafe(ref x0, u);
            var v1 = Vector512.LoadUnsafe(ref x1, u);
            var v2 = Vector512.LoadUnsafe(ref x2, u);
            var v3 = Vector512.LoadUnsafe(ref x3, u);
            var w0 = TValues.Load16(ref w, at);
            a00 = Vector512.FusedMultiplyAdd(w0, v0, a00); a10 = Vector512.FusedMultiplyAdd(w0, v1, a10);
            a20 = Vector512.FusedMultiplyAdd(w0, v2, a20); a30 = Vector512.FusedMultiplyAdd(w0, v3, a30);
            var w1 = TValues.Load16(ref w, at + 16);
            a01 = Vector512.FusedMultiplyAdd(w1, v0, a01); a11 = Vector512.FusedMultiplyAdd(w1, v1, a11);
            a21 = Vector512.FusedMultiplyAdd(w1, v2, a21); a31 = Vector512.FusedMultiplyAdd(w1, v3, a31);
            var w2 = TValues.Load16(ref w, at + 32);
            a02 = Vector512.FusedMultiplyAdd(w2, v0, a02); a12 = Vector512.FusedMultiplyAdd(w2, v1, a12);
            a22 = Vector512.FusedMultiplyAdd(w2, v2, a22); a32 = Vector512.FusedMultiplyAdd(w2, v3, a32);
            var w3 = TValues.Load16(ref w, at + 48);
            a03 = Vector512.FusedMultiplyAdd(w3, v0, a03); a13 = Vector512.FusedMultiplyAdd(w3, v1, a13);
            a23 = Vector512.FusedMultiplyAdd(w3, v2, a23); a33 = Vector512.FusedMultiplyAdd(w3, v3, a33);
        }
        Kernels.Store(y, o, a00, a01, a02, a03);
        Kernels.Store(y, o + stride, a10, a11, a12, a13);
        Kernels.Store(y, o + 2 * stride, a20, a21, a22, a23);
        Kernels.Store(y, o + 3 * stride, a30, a31, a32, a33);
    }

    /// <summary>Four consecutive rows (stride <paramref name="cols"/>) against one vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static (float, float, float, float) Dot4(ref TStored w, int cols, ref float x)
    {
        int k = 0;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        nuint c1 = (nuint)cols, c2 = 2 * c1, c3 = 3 * c1;
        if (typeof(TStored) == typeof(float) && Vector256.IsHardwareAccelerated && cols >= 8)
        {
            ref float f = ref Unsafe.As<TStored, float>(ref w);
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; k + 8 <= cols; k += 8)
            {
                nuint u = (nuint)k;
                var v = Vector256.LoadUnsafe(ref x, u);
                a0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref f, u), v, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref f, c1 + u), v, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref f, c2 + u), v, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref f, c3 + u), v, a3);
            }
            (s0, s1, s2, s3) = (Vector256.Sum(a0), Vector256.Sum(a1), Vector256.Sum(a2), Vector256.Sum(a3));
        }
        for (; k < cols; k++)
        {
            float v = Unsafe.Add(ref x, k);
            s0 += TValues.Load1(Unsafe.Add(ref w, k)) * v;
            s1 += TValues.Load1(Unsafe.Add(ref w, cols + k)) * v;
            s2 += TValues.Load1(Unsafe.Add(ref w, 2 * cols + k)) * v;
            s3 += TValues.Load1(Unsafe.Add(ref w, 3 * cols + k)) * v;
        }
        return (s0, s1, s2, s3);
    }
}

/// <summary>Packing into 16-bit values.</summary>
internal static class HalfWidth
{
    /// <summary>Round to nearest even, as torch's BF16 conversion does.</summary>
    public static ushort[] Bf16(float[] data)
    {
        var bits = new ushort[data.Length];
        for (int i = 0; i < data.Length; i++)
        {
            uint u = BitConverter.SingleToUInt32Bits(data[i]);
            bits[i] = (ushort)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
        }
        return bits;
    }

    public static ushort[] F16(float[] data, string name)
    {
        var bits = new ushort[data.Length];
        for (int i = 0; i < data.Length; i++)
        {
            var half = (Half)data[i];
            if (!Half.IsFinite(half))
                throw new NotSupportedException($"{name}: a weight ({data[i]:G6}) does not fit F16's range (±65504); use bf16 or f32.");
            ushort b = BitConverter.HalfToUInt16Bits(half);
            bits[i] = (b & 0x7C00) == 0 ? (ushort)0 : b;   // subnormals flushed (see F16Values)
        }
        return bits;
    }
}
