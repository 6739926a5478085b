using GptSharp.Models;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GptSharp.Inference.Cpu;

/// <summary>
/// A Q4_0 matrix (18 bytes per 32 weights: 16 of nibbles offset by 8, an F16 scale) multiplied by activations rounded
/// to 8 bits per block of 32, as llama.cpp multiplies it (<see cref="MatrixInput.ForBytes"/>). A row's two neighbouring
/// blocks are 32 bytes; loaded into both halves of a 512-bit register and the upper half shifted by a nibble, they are
/// 64 unsigned 4-bit weights that multiply 64 signed 8-bit activations in one instruction (pairs summed to 16 bits,
/// then fours to 32: exact), so a block costs about half the instructions of widening it to 16 bits. The offset of 8
/// is taken off as 8 × the activations' sums, computed once per vector; each block's integer sum is then scaled by
/// its weight scale × its activation scale into F32 accumulators. Quads of rows are interleaved a block pair at a time
/// so a product reads one sequential stream.
/// </summary>
internal sealed class Q4Matrix : WeightMatrix
{
    const int Block = BlockQuantization.Block, BlockBytes = 16;
    readonly byte[] _q;       // quads: per block pair, each row's 32 bytes in turn (an odd last block: 16 a row); other rows row-major
    readonly float[] _scale;  // quads: per block pair (r0 A, r0 B, r1 A, r1 B, …); an odd last block r0…r3; other rows row-major
    readonly int _quadRows, _blocks, _pairs;
    static readonly Vector512<int>[] ScaleLanes =
        [.. Enumerable.Range(0, 4).Select(r => Vector512.Create([.. Enumerable.Range(0, 16).Select(j => 2 * r + (j / 4) % 2)]))];
    static readonly Vector512<ushort> NibbleShift = Vector512.Create([.. Enumerable.Range(0, 32).Select(j => (ushort)(j < 16 ? 0 : 4))]);

    /// <param name="quantized">Row-major blocks as <see cref="BlockQuantization.Q4_0"/> writes them.</param>
    public Q4Matrix((byte[] Quants, float[] Scales) quantized, int rows, int cols) : base(rows, cols)
    {
        var (quants, scales) = quantized;
        _quadRows = Avx512BW.IsSupported ? rows & ~3 : 0;
        _blocks = cols / Block;
        _pairs = _blocks / 2;
        _q = new byte[quants.Length];
        _scale = new float[scales.Length];
        for (int r = 0; r < rows; r++)
            for (int b = 0; b < _blocks; b++)
            {
                var (at, s) = Locate(r, b);
                Array.Copy(quants, ((long)r * _blocks + b) * BlockBytes, _q, at, BlockBytes);
                _scale[s] = scales[(long)r * _blocks + b];
            }
    }

    /// <summary>Where block b of row r is stored: its first byte and its scale's index.</summary>
    (long Byte, long Scale) Locate(int r, int b)
    {
        if (r >= _quadRows) return (((long)r * _blocks + b) * BlockBytes, (long)r * _blocks + b);
        long quadBytes = (long)(r >> 2) * 4 * _blocks * BlockBytes, quadScales = (long)(r >> 2) * 4 * _blocks;
        int row = r & 3;
        return b < 2 * _pairs
            ? (quadBytes + (b / 2) * 128 + row * 32 + (b % 2) * 16, quadScales + (b / 2) * 8 + row * 2 + b % 2)
            : (quadBytes + _pairs * 128 + row * 16, quadScales + _pairs * 8 + row);
    }

    /// <summary>Value k of the block at <paramref name="q"/>: byte k's low nibble for k &lt; 16, byte k − 16's high one after, less 8.</summary>
    static int Value(ref byte q, int k) => k < 16 ? (Unsafe.Add(ref q, k) & 15) - 8 : (Unsafe.Add(ref q, k - 16) >> 4) - 8;

    public override WeightFormat Format => WeightFormat.Q4_0;
    public override long Bytes => _q.Length + _scale.Length * 2L;

    public override void ReadRow(int r, Span<float> destination)
    {
        for (int b = 0; b < _blocks; b++)
        {
            var (at, s) = Locate(r, b);
            ref byte q = ref _q[at];
            for (int k = 0; k < Block; k++) destination[b * Block + k] = Value(ref q, k) * _scale[s];
        }
    }

    internal override void Prepare(float[] x, int n, MatrixInput input) => input.ForBytes(x, n, Cols);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal override void Multiply(MatrixInput input, float[] y, int rowStart, int rowEnd)
    {
        int n = input.N, r = rowStart;
        for (; r + 4 <= rowEnd && r < _quadRows; r += 4)
        {
            int i = 0;
            for (; i + 2 <= n; i += 2) Quad2(r, input, i, y);
            for (; i < n; i++) Quad1(r, input, i, y);
        }
        for (; r < rowEnd; r++)
            for (int i = 0; i < n; i++) y[i * Rows + r] = Dot1(r, input, i);
    }

    /// <summary>Rows r…r+3 against vector i. Per vector the same arithmetic as <see cref="Quad2"/>, so a row's result does
    /// not depend on the batch it is in.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void Quad1(int r, MatrixInput input, int i, float[] y)
    {
        ref byte q = ref _q[(long)(r >> 2) * 4 * _blocks * BlockBytes];
        ref float scale = ref _scale[(long)(r >> 2) * 4 * _blocks];
        ref sbyte x0 = ref input.Bytes[i * Cols];
        ref int c0 = ref input.Corrections[i * _pairs * 16];
        ref float d0 = ref input.ScalePatterns[i * _pairs * 16];
        var shift = NibbleShift;
        var (lane0, lane1, lane2, lane3) = (ScaleLanes[0], ScaleLanes[1], ScaleLanes[2], ScaleLanes[3]);
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int p = 0, pairs = _pairs; p < pairs; p++)
        {
            nuint at = (nuint)p * 128, lanes = (nuint)p * 16;
            var scales8 = Vector256.LoadUnsafe(ref scale, (nuint)p * 8);
            var scales = Avx512F.InsertVector256(scales8.ToVector512Unsafe(), scales8, 1);
            var v0 = Vector512.LoadUnsafe(ref x0, (nuint)p * 64);
            var k0 = Vector512.LoadUnsafe(ref c0, lanes);
            var p0 = Vector512.LoadUnsafe(ref d0, lanes);
            a0 = Step(Nibbles(ref q, at, shift), v0, k0, Avx512F.PermuteVar16x32(scales, lane0) * p0, a0);
            a1 = Step(Nibbles(ref q, at + 32, shift), v0, k0, Avx512F.PermuteVar16x32(scales, lane1) * p0, a1);
            a2 = Step(Nibbles(ref q, at + 64, shift), v0, k0, Avx512F.PermuteVar16x32(scales, lane2) * p0, a2);
            a3 = Step(Nibbles(ref q, at + 96, shift), v0, k0, Avx512F.PermuteVar16x32(scales, lane3) * p0, a3);
        }
        Store(y, i, r, input, a0, a1, a2, a3);
    }

    /// <summary>Rows r…r+3 against vectors i and i + 1: each block pair's nibbles unpacked once and used for both.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void Quad2(int r, MatrixInput input, int i, float[] y)
    {
        ref byte q = ref _q[(long)(r >> 2) * 4 * _blocks * BlockBytes];
        ref float scale = ref _scale[(long)(r >> 2) * 4 * _blocks];
        ref sbyte x0 = ref input.Bytes[i * Cols];
        ref sbyte x1 = ref input.Bytes[(i + 1) * Cols];
        ref int c0 = ref input.Corrections[i * _pairs * 16];
        ref int c1 = ref input.Corrections[(i + 1) * _pairs * 16];
        ref float d0 = ref input.ScalePatterns[i * _pairs * 16];
        ref float d1 = ref input.ScalePatterns[(i + 1) * _pairs * 16];
        var shift = NibbleShift;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        for (int p = 0, pairs = _pairs; p < pairs; p++)
        {
            nuint at = (nuint)p * 128, lanes = (nuint)p * 16;
            var scales8 = Vector256.LoadUnsafe(ref scale, (nuint)p * 8);
            var scales = Avx512F.InsertVector256(scales8.ToVector512Unsafe(), scales8, 1);
            var v0 = Vector512.LoadUnsafe(ref x0, (nuint)p * 64);
            var v1 = Vector512.LoadUnsafe(ref x1, (nuint)p * 64);
            var k0 = Vector512.LoadUnsafe(ref c0, lanes);
            var k1 = Vector512.LoadUnsafe(ref c1, lanes);
            var p0 = Vector512.LoadUnsafe(ref d0, lanes);
            var p1 = Vector512.LoadUnsafe(ref d1, lanes);
            var w = Nibbles(ref q, at, shift);
            var sc = Avx512F.PermuteVar16x32(scales, ScaleLanes[0]);
            a0 = Step(w, v0, k0, sc * p0, a0);
            b0 = Step(w, v1, k1, sc * p1, b0);
            w = Nibbles(ref q, at + 32, shift);
            sc = Avx512F.PermuteVar16x32(scales, ScaleLanes[1]);
            a1 = Step(w, v0, k0, sc * p0, a1);
            b1 = Step(w, v1, k1, sc * p1, b1);
            w = Nibbles(ref q, at + 64, shift);
            sc = Avx512F.PermuteVar16x32(scales, ScaleLanes[2]);
            a2 = Step(w, v0, k0, sc * p0, a2);
            b2 = Step(w, v1, k1, sc * p1, b2);
            w = Nibbles(ref q, at + 96, shift);
            sc = Avx512F.PermuteVar16x32(scales, ScaleLanes[3]);
            a3 = Step(w, v0, k0, sc * p0, a3);
            b3 = Step(w, v1, k1, sc * p1, b3);
        }
        Store(y, i, r, input, a0, a1, a2, a3);
        Store(y, i + 1, r, input, b0, b1, b2, b3);
    }

    void Store(float[] y, int i, int r, MatrixInput input, Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3)
    {
        int o = i * Rows + r;
        (y[o], y[o + 1], y[o + 2], y[o + 3]) = (Vector512.Sum(a0) + OddBlock(r, input, i), Vector512.Sum(a1) + OddBlock(r + 1, input, i),
            Vector512.Sum(a2) + OddBlock(r + 2, input, i), Vector512.Sum(a3) + OddBlock(r + 3, input, i));
    }

    /// <summary>A row's block pair (32 bytes at <paramref name="at"/>) as 64 unsigned 4-bit weights: the low nibbles of
    /// both blocks, then the high ones — the order <see cref="MatrixInput.ForBytes"/> lays the activations out in.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<byte> Nibbles(ref byte q, nuint at, Vector512<ushort> shift)
    {
        var pair = Vector256.LoadUnsafe(ref q, at);
        var both = Avx512F.InsertVector256(pair.ToVector512Unsafe(), pair, 1);
        return Avx512BW.ShiftRightLogicalVariable(both.AsUInt16(), shift).AsByte() & Vector512.Create((byte)0x0F);
    }

    /// <summary>64 weights by 64 activations: 16 lanes of four exact products each, less the offset's share, scaled into the accumulator.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Step(Vector512<byte> w, Vector512<sbyte> x, Vector512<int> offset, Vector512<float> scale, Vector512<float> acc) =>
        Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(w, x), Vector512.Create((short)1)) - offset), scale, acc);

    /// <summary>The last block of a row of an odd number of blocks (0 otherwise).</summary>
    float OddBlock(int r, MatrixInput input, int i) => _blocks % 2 == 0 ? 0 : BlockDot(r, _blocks - 1, input, i);

    /// <summary>One row in scalar code (rows outside quads, CPUs without AVX-512): each block's product, summed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    float Dot1(int r, MatrixInput input, int i)
    {
        float sum = 0;
        for (int b = 0; b < _blocks; b++) sum += BlockDot(r, b, input, i);
        return sum;
    }

    /// <summary>Block b of row r against vector i in integers, then scaled by the weight's and the activations' scales.</summary>
    float BlockDot(int r, int b, MatrixInput input, int i)
    {
        var (at, s) = Locate(r, b);
        int dot = 0;
        for (int k = 0; k < Block; k++) dot += Value(ref _q[at], k) * input.Bytes[i * Cols + MatrixInput.BytePosition(b, k, _blocks)];
        return dot * (_scale[s] * input.BlockScales[i * _blocks + b]);
    }
}
