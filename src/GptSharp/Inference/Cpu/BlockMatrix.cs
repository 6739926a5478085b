using GptSharp.Models;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GptSharp.Inference.Cpu;

/// <summary>
/// A matrix in GGUF's Q8_0 block format (34 bytes per 32 weights: 32 signed bytes and an F16 scale; Q4_0 has its own
/// kernel, <see cref="Q4Matrix"/>), with the rows of each quad
/// interleaved a block at a time so a product reads one sequential stream. A product multiplies each block's 16-bit
/// integers by the activations' (<see cref="MatrixInput.ForIntegers"/>) in pairs summed to 32 bits — exact —, then
/// scales the block's sums by its F16 scale into F32 accumulators: four instructions per 32 Q8_0 weights, where widening
/// to F32 took nine.
/// </summary>
internal sealed class BlockMatrix : WeightMatrix
{
    public const int Block = BlockQuantization.Block;
    const int BlockBytes = 32;
    readonly byte[] _q;       // quads of rows interleaved a block at a time, the rest row by row
    readonly float[] _scale;  // in the same order, one per block
    readonly int _quadRows;

    /// <param name="quantized">Row-major blocks as <see cref="BlockQuantization"/> writes them.</param>
    public BlockMatrix((byte[] Quants, float[] Scales) quantized, int rows, int cols) : base(rows, cols)
    {
        var (quants, scales) = quantized;
        _quadRows = Avx512BW.IsSupported ? rows & ~3 : 0;
        _q = new byte[quants.Length];
        _scale = new float[scales.Length];
        int blocks = cols / Block, size = BlockBytes;
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

    public override WeightFormat Format => WeightFormat.Q8_0;

    /// <summary>The 32 signed bytes of the block at <paramref name="at"/>, sign-extended to 16 bits in one instruction.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<short> Widen(ref byte q, nuint at) => Avx512BW.ConvertToVector512Int16(Vector256.LoadUnsafe(ref q, at).AsSByte());

    /// <summary>Value <paramref name="k"/> of the block that starts at <paramref name="q"/>.</summary>
    static int Value(ref byte q, int k) => (sbyte)Unsafe.Add(ref q, k);
    public override long Bytes => _q.Length + _scale.Length * 2L;

    public override void ReadRow(int r, Span<float> destination)
    {
        for (int b = 0; b < Cols / Block; b++)
        {
            long at = BlockIndex(r, b);
            ref byte q = ref _q[at * BlockBytes];
            for (int k = 0; k < Block; k++) destination[b * Block + k] = Value(ref q, k) * _scale[at];
        }
    }

    internal override void Prepare(float[] x, int n, MatrixInput input) => input.ForIntegers(x, n, Cols);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal override void Multiply(MatrixInput input, float[] y, int rowStart, int rowEnd)
    {
        short[] x = input.Ints;
        int n = input.N, r = rowStart;
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
        input.ScaleOutputs(y, Rows, rowStart, rowEnd);
    }

    /// <summary>One row's block against 32 activations: 16 lanes of two exact integer products each, as F32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> BlockDot(Vector512<short> w, Vector512<short> x) => Avx512F.ConvertToVector512Single(Avx512BW.MultiplyAddAdjacent(w, x));

    /// <summary>A quad of rows: per block, the four rows' blocks (one run of bytes) against the same activations, each
    /// scaled into its row's accumulator — per vector the same arithmetic as <see cref="QuadTimesTwo"/>, so a row's
    /// logits do not depend on the batch it is in.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    (float, float, float, float) Quad(int r, ref short x)
    {
        int blocks = Cols / Block;
        nuint size = (nuint)BlockBytes;
        long first = BlockIndex(r, 0);
        ref byte q = ref _q[first * BlockBytes];
        ref float scale = ref _scale[first];
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int b = 0; b < blocks; b++)
        {
            nuint at = (nuint)b * 4 * size, s = (nuint)(b * 4);
            var v = Vector512.LoadUnsafe(ref x, (nuint)(b * Block));
            a0 = Vector512.FusedMultiplyAdd(BlockDot(Widen(ref q, at), v), Vector512.Create(Unsafe.Add(ref scale, s)), a0);
            a1 = Vector512.FusedMultiplyAdd(BlockDot(Widen(ref q, at + size), v), Vector512.Create(Unsafe.Add(ref scale, s + 1)), a1);
            a2 = Vector512.FusedMultiplyAdd(BlockDot(Widen(ref q, at + 2 * size), v), Vector512.Create(Unsafe.Add(ref scale, s + 2)), a2);
            a3 = Vector512.FusedMultiplyAdd(BlockDot(Widen(ref q, at + 3 * size), v), Vector512.Create(Unsafe.Add(ref scale, s + 3)), a3);
        }
        return (Vector512.Sum(a0), Vector512.Sum(a1), Vector512.Sum(a2), Vector512.Sum(a3));
    }

    /// <summary>A quad of rows against two activation vectors: each block widened once and used twice.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void QuadTimesTwo(int r, short[] x, int i, float[] y, int o)
    {
        int blocks = Cols / Block, cols = Cols;
        nuint size = (nuint)BlockBytes;
        long first = BlockIndex(r, 0);
        ref byte q = ref _q[first * BlockBytes];
        ref float scale = ref _scale[first];
        ref short x0 = ref x[i * cols];
        ref short x1 = ref x[(i + 1) * cols];
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default, a10 = default, a11 = default, a12 = default, a13 = default;
        for (int b = 0; b < blocks; b++)
        {
            nuint u = (nuint)(b * Block), at = (nuint)b * 4 * size, s = (nuint)(b * 4);
            var v0 = Vector512.LoadUnsafe(ref x0, u);
            var v1 = Vector512.LoadUnsafe(ref x1, u);
            var w = Widen(ref q, at);
            var sc = Vector512.Create(Unsafe.Add(ref scale, s));
            a00 = Vector512.FusedMultiplyAdd(BlockDot(w, v0), sc, a00);
            a10 = Vector512.FusedMultiplyAdd(BlockDot(w, v1), sc, a10);
            w = Widen(ref q, at + size);
            sc = Vector512.Create(Unsafe.Add(ref scale, s + 1));
            a01 = Vector512.FusedMultiplyAdd(BlockDot(w, v0), sc, a01);
            a11 = Vector512.FusedMultiplyAdd(BlockDot(w, v1), sc, a11);
            w = Widen(ref q, at + 2 * size);
            sc = Vector512.Create(Unsafe.Add(ref scale, s + 2));
            a02 = Vector512.FusedMultiplyAdd(BlockDot(w, v0), sc, a02);
            a12 = Vector512.FusedMultiplyAdd(BlockDot(w, v1), sc, a12);
            w = Widen(ref q, at + 3 * size);
            sc = Vector512.Create(Unsafe.Add(ref scale, s + 3));
            a03 = Vector512.FusedMultiplyAdd(BlockDot(w, v0), sc, a03);
            a13 = Vector512.FusedMultiplyAdd(BlockDot(w, v1), sc, a13);
        }
        Kernels.Store(y, o, a00, a01, a02, a03);
        Kernels.Store(y, o + Rows, a10, a11, a12, a13);
    }

    /// <summary>One row in scalar code (rows outside quads, CPUs without AVX-512): each block's integer dot product, scaled.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    float Dot1(int r, ref short x)
    {
        float s = 0;
        for (int b = 0; b < Cols / Block; b++)
        {
            long at = BlockIndex(r, b);
            ref byte q = ref _q[at * BlockBytes];
            int block = 0;
            for (int k = 0; k < Block; k++) block += Value(ref q, k) * Unsafe.Add(ref x, b * Block + k);
            s += block * _scale[at];
        }
        return s;
    }
}
