using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GptSharp.Inference.Cpu;

/// <summary>How the CPU engine stores a weight matrix: as it trained (F32), halved (F16, BF16), or in 8-bit or 4-bit
/// blocks of 32 with one scale each (Q8_0, Q4_0: GGUF's formats; the scale rounded to F16 as GGUF stores it).</summary>
public enum WeightFormat { F32, F16, BF16, Q8_0, Q4_0 }

/// <summary>
/// A weight matrix [Rows, Cols] in torch's Linear layout (one row per output), packed once for products with a few
/// activation vectors at a time: <c>y[i, r] = W[r] · x[i]</c>. Decoding reads every weight once per token, so the
/// kernels stream the rows four at a time against activations that stay in L1, accumulating in F32.
/// </summary>
public abstract class WeightMatrix
{
    protected WeightMatrix(int rows, int cols) => (Rows, Cols) = (rows, cols);

    public int Rows { get; }
    public int Cols { get; }
    public abstract WeightFormat Format { get; }
    /// <summary>Bytes one full product reads from memory.</summary>
    public abstract long Bytes { get; }

    /// <summary>For rows [rowStart, rowEnd): y[i·Rows + r] = W[r] · x[i·Cols ..] for each of the n activation vectors.</summary>
    public abstract void Multiply(float[] x, int n, float[] y, int rowStart, int rowEnd);

    /// <summary>Row r as F32 (an embedding lookup).</summary>
    public abstract void ReadRow(int r, Span<float> destination);

    /// <summary>Packs a row-major F32 matrix; throws naming the shape when the format cannot hold it.</summary>
    public static WeightMatrix Pack(float[] data, int rows, int cols, WeightFormat format, string name)
    {
        if (data.Length != (long)rows * cols) throw new ArgumentException($"{name}: {data.Length} values for a {rows} × {cols} matrix.", nameof(data));
        return format switch
        {
            WeightFormat.F32 => new DenseMatrix<float, F32Values>(data, rows, cols, format),
            WeightFormat.BF16 => new DenseMatrix<ushort, Bf16Values>(HalfWidth.Bf16(data), rows, cols, format),
            WeightFormat.F16 => new DenseMatrix<ushort, F16Values>(HalfWidth.F16(data, name), rows, cols, format),
            WeightFormat.Q8_0 or WeightFormat.Q4_0 when cols % BlockQuantization.Block != 0 => throw new NotSupportedException(
                $"{name}: {format} needs rows whose length divides into blocks of {BlockQuantization.Block}; this one has {cols}. Use f16, bf16 or f32."),
            WeightFormat.Q8_0 => Blocks<Q8Values>(BlockQuantization.Q8_0(data), rows, cols, format),
            WeightFormat.Q4_0 => Blocks<Q4Values>(BlockQuantization.Q4_0(data), rows, cols, format),
            _ => throw new ArgumentOutOfRangeException(nameof(format), format, "Unknown weight format."),
        };
    }

    static BlockMatrix<TValues> Blocks<TValues>((byte[] Quants, float[] Scales) blocks, int rows, int cols, WeightFormat format)
        where TValues : struct, IBlockValues => new(blocks.Quants, blocks.Scales, rows, cols, format);
}

/// <summary>How a stored value type becomes F32: 16 values into one vector, or one value.</summary>
internal interface IWidening<TStored> where TStored : unmanaged
{
    static abstract Vector512<float> Load16(ref TStored w, nuint k);
    static abstract float Load1(TStored w);
}

internal struct F32Values : IWidening<float>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(ref float w, nuint k) => Vector512.LoadUnsafe(ref w, k);
    public static float Load1(float w) => w;
}

/// <summary>BF16 is F32's upper half: widen and shift.</summary>
internal struct Bf16Values : IWidening<ushort>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(ref ushort w, nuint k) =>
        Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector256.LoadUnsafe(ref w, k)), 16).AsSingle();
    public static float Load1(ushort w) => BitConverter.UInt32BitsToSingle((uint)w << 16);
}

/// <summary>
/// F16 to F32 in four operations: the sign, exponent and mantissa moved under F32's by shifts, then one multiplication
/// by 2^(127−15) rebases the exponent. Packing flushes F16's subnormals (|w| &lt; 6.1e-5) to zero, so no denormal ever
/// enters the arithmetic, where each costs ~100 cycles.
/// </summary>
internal struct F16Values : IWidening<ushort>
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(ref ushort w, nuint k)
    {
        var h = Avx512F.ConvertToVector512Int32(Vector256.LoadUnsafe(ref w, k));
        var moved = Avx512F.ShiftRightArithmetic(Avx512F.ShiftLeftLogical(h, 16), 3) & Vector512.Create(unchecked((int)0x8FFFE000));
        return moved.AsSingle() * Vector512.Create(BitConverter.UInt32BitsToSingle(0x77800000));
    }
    public static float Load1(ushort w) => (float)BitConverter.UInt16BitsToHalf(w);
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
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k += 16)
                Array.Copy(stored, (long)r * cols + k, _w, Index(r, k), 16);
    }

    public override WeightFormat Format { get; }
    public override long Bytes => (long)_w.Length * Unsafe.SizeOf<TStored>();

    /// <summary>Where value (r, k) is stored.</summary>
    long Index(int r, int k) => r < _quadRows
        ? (long)(r >> 2) * 4 * Cols + (k >> 4) * 64 + (r & 3) * 16 + (k & 15)
        : (long)r * Cols + k;

    public override void ReadRow(int r, Span<float> destination)
    {
        for (int k = 0; k < Cols; k++) destination[k] = TValues.Load1(_w[Index(r, k)]);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override void Multiply(float[] x, int n, float[] y, int rowStart, int rowEnd)
    {
        int cols = Cols, r = rowStart;
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

/// <summary>GGUF's block quantisations, row-major: each run of 32 weights as small integers and one F16 scale.</summary>
public static class BlockQuantization
{
    public const int Block = 32;

    /// <summary>
    /// Q8_0: per 32 values, scale = max |w| / 127 stored as F16, bytes rounded from w ÷ the exact scale, half away from
    /// zero (34 bytes a block).
    /// </summary>
    public static (byte[] Quants, float[] Scales) Q8_0(float[] data)
    {
        var quants = new byte[data.Length];
        var scales = new float[data.Length / Block];
        for (int b = 0; b < scales.Length; b++)
        {
            float max = 0;
            for (int k = 0; k < Block; k++) max = Math.Max(max, Math.Abs(data[b * Block + k]));
            scales[b] = (float)(Half)(max / 127f);
            float inverse = max == 0 ? 0 : 1f / (max / 127f);
            for (int k = 0; k < Block; k++) quants[b * Block + k] = (byte)(sbyte)Math.Round(data[b * Block + k] * inverse, MidpointRounding.AwayFromZero);
        }
        return (quants, scales);
    }

    /// <summary>
    /// Q4_0 as llama.cpp writes it: per 32 values, the scale is the value of largest magnitude ÷ −8 (stored as F16), each
    /// weight w becomes min(15, ⌊w ÷ scale + 8.5⌋), and byte j holds value j in its low nibble and value j + 16 in its
    /// high one (18 bytes a block). A weight reads back as (q − 8) × scale.
    /// </summary>
    public static (byte[] Quants, float[] Scales) Q4_0(float[] data)
    {
        var quants = new byte[data.Length / 2];
        var scales = new float[data.Length / Block];
        for (int b = 0; b < scales.Length; b++)
        {
            float extreme = 0;
            for (int k = 0; k < Block; k++)
                if (Math.Abs(data[b * Block + k]) > Math.Abs(extreme)) extreme = data[b * Block + k];
            float scale = extreme / -8;
            scales[b] = (float)(Half)scale;
            float inverse = scale == 0 ? 0 : 1 / scale;
            for (int j = 0; j < Block / 2; j++)
            {
                int low = Math.Min(15, (int)(data[b * Block + j] * inverse + 8.5f));
                int high = Math.Min(15, (int)(data[b * Block + j + Block / 2] * inverse + 8.5f));
                quants[b * Block / 2 + j] = (byte)(low | high << 4);
            }
        }
        return (quants, scales);
    }
}

/// <summary>How a block format stores one row's 32 weights in bytes and widens them to F32 (unscaled).</summary>
internal interface IBlockValues
{
    static abstract int BlockBytes { get; }
    /// <summary>Values 0–15 and 16–31 of the block at byte <paramref name="at"/>.</summary>
    static abstract (Vector512<float> Low, Vector512<float> High) Widen(ref byte q, nuint at);
    /// <summary>Value <paramref name="k"/> of the block that starts at <paramref name="q"/>.</summary>
    static abstract float Value(ref byte q, int k);
}

/// <summary>Q8_0: 32 signed bytes.</summary>
internal struct Q8Values : IBlockValues
{
    public static int BlockBytes => 32;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector512<float> Low, Vector512<float> High) Widen(ref byte q, nuint at) => (Widen16(ref q, at), Widen16(ref q, at + 16));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Widen16(ref byte q, nuint k) =>
        Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.LoadUnsafe(ref q, k).AsSByte()));

    public static float Value(ref byte q, int k) => (sbyte)Unsafe.Add(ref q, k);
}

/// <summary>Q4_0: 16 bytes of two 4-bit values each, offset by 8.</summary>
internal struct Q4Values : IBlockValues
{
    public static int BlockBytes => 16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector512<float> Low, Vector512<float> High) Widen(ref byte q, nuint at)
    {
        var bytes = Vector128.LoadUnsafe(ref q, at);
        var eight = Vector512.Create(8);
        var low = Avx512F.ConvertToVector512Int32(bytes & Vector128.Create((byte)0x0F)) - eight;
        var high = Avx512F.ConvertToVector512Int32(Vector128.ShiftRightLogical(bytes, 4)) - eight;
        return (Avx512F.ConvertToVector512Single(low), Avx512F.ConvertToVector512Single(high));
    }

    public static float Value(ref byte q, int k) => k < 16 ? (Unsafe.Add(ref q, k) & 15) - 8 : (Unsafe.Add(ref q, k - 16) >> 4) - 8;
}

/// <summary>
/// A matrix in one of GGUF's block formats (Q8_0: 34 bytes per 32 weights, Q4_0: 18), with the rows of each quad
/// interleaved a block at a time so a product reads one sequential stream. Products widen a block to F32 in registers,
/// take its dot product with the activations, then scale it.
/// </summary>
internal sealed class BlockMatrix<TValues> : WeightMatrix where TValues : struct, IBlockValues
{
    public const int Block = BlockQuantization.Block;
    readonly byte[] _q;       // quads of rows interleaved a block at a time, the rest row by row
    readonly float[] _scale;  // in the same order, one per block
    readonly int _quadRows;

    /// <param name="quants">Row-major blocks as <see cref="BlockQuantization"/> writes them.</param>
    public BlockMatrix(byte[] quants, float[] scales, int rows, int cols, WeightFormat format) : base(rows, cols)
    {
        Format = format;
        _quadRows = Avx512F.IsSupported ? rows & ~3 : 0;
        _q = new byte[quants.Length];
        _scale = new float[scales.Length];
        int blocks = cols / Block, size = TValues.BlockBytes;
        for (int r = 0; r < rows; r++)
            for (int b = 0; b < blocks; b++)
            {
                long at = BlockIndex(r, b);
                Array.Copy(quants, ((long)r * blocks + b) * size, _q, at * size, size);
                _scale[at] = scales[(long)r * blocks + b];
            }
    }

    /// <summary>Block b of row r in storage order.</summary>
    long BlockIndex(int r, int b)
    {
        int blocks = Cols / Block;
        return r < _quadRows ? (long)(r >> 2) * 4 * blocks + b * 4 + (r & 3) : (long)r * blocks + b;
    }

    public override WeightFormat Format { get; }
    public override long Bytes => _q.Length + _scale.Length * 2L;

    public override void ReadRow(int r, Span<float> destination)
    {
        for (int b = 0; b < Cols / Block; b++)
        {
            long at = BlockIndex(r, b);
            ref byte q = ref _q[at * TValues.BlockBytes];
            for (int k = 0; k < Block; k++) destination[b * Block + k] = TValues.Value(ref q, k) * _scale[at];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override void Multiply(float[] x, int n, float[] y, int rowStart, int rowEnd)
    {
        int r = rowStart;
        for (; r + 4 <= rowEnd && r < _quadRows; r += 4)
        {
            int i = 0;
            for (; i + 2 <= n; i += 2) QuadTimesTwo(r, x, i, y, i * Rows + r);
            for (; i < n; i++)
            {
                var (a, b, c, d) = Quad(r, ref x[i * Cols]);
                int o = i * Rows + r;
                (y[o], y[o + 1], y[o + 2], y[o + 3]) = (a, b, c, d);
            }
        }
        for (; r < rowEnd; r++)
            for (int i = 0; i < n; i++) y[i * Rows + r] = Dot1(r, ref x[i * Cols]);
    }

    /// <summary>One row's product over one block of 32: the two halves' widened values against the activations.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> BlockSum(ref byte q, nuint at, Vector512<float> low, Vector512<float> high)
    {
        var (w0, w1) = TValues.Widen(ref q, at);
        return Vector512.FusedMultiplyAdd(w0, low, w1 * high);
    }

    /// <summary>A quad of rows: per block, the four rows' blocks (one run of bytes) widened to F32 against the same
    /// activations, each block's sum then scaled — per vector the same arithmetic as <see cref="QuadTimesTwo"/>, so a
    /// row's logits do not depend on the batch it is in.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    (float, float, float, float) Quad(int r, ref float x)
    {
        int blocks = Cols / Block;
        nuint size = (nuint)TValues.BlockBytes;
        long first = BlockIndex(r, 0);
        ref byte q = ref _q[first * TValues.BlockBytes];
        ref float scale = ref _scale[first];
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int b = 0; b < blocks; b++)
        {
            nuint u = (nuint)(b * Block), at = (nuint)b * 4 * size, s = (nuint)(b * 4);
            var low = Vector512.LoadUnsafe(ref x, u);
            var high = Vector512.LoadUnsafe(ref x, u + 16);
            a0 = Vector512.FusedMultiplyAdd(BlockSum(ref q, at, low, high), Vector512.Create(Unsafe.Add(ref scale, s)), a0);
            a1 = Vector512.FusedMultiplyAdd(BlockSum(ref q, at + size, low, high), Vector512.Create(Unsafe.Add(ref scale, s + 1)), a1);
            a2 = Vector512.FusedMultiplyAdd(BlockSum(ref q, at + 2 * size, low, high), Vector512.Create(Unsafe.Add(ref scale, s + 2)), a2);
            a3 = Vector512.FusedMultiplyAdd(BlockSum(ref q, at + 3 * size, low, high), Vector512.Create(Unsafe.Add(ref scale, s + 3)), a3);
        }
        return (Vector512.Sum(a0), Vector512.Sum(a1), Vector512.Sum(a2), Vector512.Sum(a3));
    }

    /// <summary>A quad of rows against two activation vectors: each block widened once and used twice.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void QuadTimesTwo(int r, float[] x, int i, float[] y, int o)
    {
        int blocks = Cols / Block, cols = Cols;
        nuint size = (nuint)TValues.BlockBytes;
        long first = BlockIndex(r, 0);
        ref byte q = ref _q[first * TValues.BlockBytes];
        ref float scale = ref _scale[first];
        ref float x0 = ref x[i * cols];
        ref float x1 = ref x[(i + 1) * cols];
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default, a10 = default, a11 = default, a12 = default, a13 = default;
        for (int b = 0; b < blocks; b++)
        {
            nuint u = (nuint)(b * Block), at = (nuint)b * 4 * size, s = (nuint)(b * 4);
            var low0 = Vector512.LoadUnsafe(ref x0, u);
            var high0 = Vector512.LoadUnsafe(ref x0, u + 16);
            var low1 = Vector512.LoadUnsafe(ref x1, u);
            var high1 = Vector512.LoadUnsafe(ref x1, u + 16);
            // Row by row of the quad: its block sum against both vectors, each scaled into its accumulator.
            var (w0, w1) = TValues.Widen(ref q, at);
            var sc = Vector512.Create(Unsafe.Add(ref scale, s));
            a00 = Vector512.FusedMultiplyAdd(Vector512.FusedMultiplyAdd(w0, low0, w1 * high0), sc, a00);
            a10 = Vector512.FusedMultiplyAdd(Vector512.FusedMultiplyAdd(w0, low1, w1 * high1), sc, a10);
            (w0, w1) = TValues.Widen(ref q, at + size);
            sc = Vector512.Create(Unsafe.Add(ref scale, s + 1));
            a01 = Vector512.FusedMultiplyAdd(Vector512.FusedMultiplyAdd(w0, low0, w1 * high0), sc, a01);
            a11 = Vector512.FusedMultiplyAdd(Vector512.FusedMultiplyAdd(w0, low1, w1 * high1), sc, a11);
            (w0, w1) = TValues.Widen(ref q, at + 2 * size);
            sc = Vector512.Create(Unsafe.Add(ref scale, s + 2));
            a02 = Vector512.FusedMultiplyAdd(Vector512.FusedMultiplyAdd(w0, low0, w1 * high0), sc, a02);
            a12 = Vector512.FusedMultiplyAdd(Vector512.FusedMultiplyAdd(w0, low1, w1 * high1), sc, a12);
            (w0, w1) = TValues.Widen(ref q, at + 3 * size);
            sc = Vector512.Create(Unsafe.Add(ref scale, s + 3));
            a03 = Vector512.FusedMultiplyAdd(Vector512.FusedMultiplyAdd(w0, low0, w1 * high0), sc, a03);
            a13 = Vector512.FusedMultiplyAdd(Vector512.FusedMultiplyAdd(w0, low1, w1 * high1), sc, a13);
        }
        Kernels.Store(y, o, a00, a01, a02, a03);
        Kernels.Store(y, o + Rows, a10, a11, a12, a13);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    float Dot1(int r, ref float x)
    {
        float s = 0;
        for (int b = 0; b < Cols / Block; b++)
        {
            long at = BlockIndex(r, b);
            ref byte q = ref _q[at * TValues.BlockBytes];
            float block = 0;
            for (int k = 0; k < Block; k++) block += TValues.Value(ref q, k) * Unsafe.Add(ref x, b * Block + k);
            s += block * _scale[at];
        }
        return s;
    }
}

/// <summary>Small vector kernels of the engine.</summary>
internal static class Kernels
{
    /// <summary>The sums of four accumulators into y[o..o+3] (four rows of one product).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float[] y, int o, in Vector512<float> a0, in Vector512<float> a1, in Vector512<float> a2, in Vector512<float> a3) =>
        (y[o], y[o + 1], y[o + 2], y[o + 3]) = (Vector512.Sum(a0), Vector512.Sum(a1), Vector512.Sum(a2), Vector512.Sum(a3));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        int k = 0, n = a.Length;
        float s = 0;
        ref float x = ref MemoryMarshal.GetReference(a), y = ref MemoryMarshal.GetReference(b);
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            var acc = Vector512<float>.Zero;
            for (; k + 16 <= n; k += 16) acc = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref x, (nuint)k), Vector512.LoadUnsafe(ref y, (nuint)k), acc);
            s = Vector512.Sum(acc);
        }
        else if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            var acc = Vector256<float>.Zero;
            for (; k + 8 <= n; k += 8) acc = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref x, (nuint)k), Vector256.LoadUnsafe(ref y, (nuint)k), acc);
            s = Vector256.Sum(acc);
        }
        for (; k < n; k++) s += Unsafe.Add(ref x, k) * Unsafe.Add(ref y, k);
        return s;
    }

    /// <summary>y += a·x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void AddScaled(Span<float> y, float a, ReadOnlySpan<float> x)
    {
        int k = 0, n = y.Length;
        ref float yr = ref MemoryMarshal.GetReference(y), xr = ref MemoryMarshal.GetReference(x);
        if (Vector512.IsHardwareAccelerated)
        {
            var va = Vector512.Create(a);
            for (; k + 16 <= n; k += 16)
                Vector512.FusedMultiplyAdd(va, Vector512.LoadUnsafe(ref xr, (nuint)k), Vector512.LoadUnsafe(ref yr, (nuint)k)).StoreUnsafe(ref yr, (nuint)k);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            var va = Vector256.Create(a);
            for (; k + 8 <= n; k += 8)
                Vector256.FusedMultiplyAdd(va, Vector256.LoadUnsafe(ref xr, (nuint)k), Vector256.LoadUnsafe(ref yr, (nuint)k)).StoreUnsafe(ref yr, (nuint)k);
        }
        for (; k < n; k++) Unsafe.Add(ref yr, k) += a * Unsafe.Add(ref xr, k);
    }
}
