using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace GptSharp.Inference.Cpu;

/// <summary>
/// n activation vectors readied once per product for one weight format's kernel, before the product is split across
/// threads. F32 and BF16 read the activations as they are. F16 reads them times 2^112, so its widening can skip the
/// multiplication that rebases F16's exponent. Q8_0 reads them rounded to 16-bit integers, one scale per
/// vector, so a block's dot product is integer arithmetic (llama.cpp rounds activations to 8 bits, at half that
/// precision); Q4_0 reads them as llama.cpp does, 8 bits with a scale per block of 32 (<see cref="ForBytes"/>). A product's row i is multiplied by <see cref="OutputScale"/>[i] at the end. Buffers grow to the largest
/// product and are reused: nothing is allocated per token.
/// </summary>
internal sealed class MatrixInput
{
    /// <summary>2^112: an F16 weight's bits moved under F32's read as the weight times 2^−112.</summary>
    public const float F16Rebase = 5.192297e33f;

    public int N { get; private set; }
    public int Cols { get; private set; }
    /// <summary>The activations as the kernel reads them (F32, F16 and BF16).</summary>
    public float[] Floats { get; private set; } = [];
    /// <summary>The activations as 16-bit integers (Q8_0).</summary>
    public short[] Ints { get; private set; } = [];
    public float[] OutputScale { get; private set; } = [];
    /// <summary>The activations as 8-bit integers per block of 32 (Q4_0), in <see cref="BytePosition"/>'s order.</summary>
    public sbyte[] Bytes { get; private set; } = [];
    /// <summary>Per vector and block: the scale of its 8-bit integers (max|x| / 127).</summary>
    public float[] BlockScales { get; private set; } = [];
    /// <summary>Per vector and block pair, 16 lanes: 8 × the sum of the four activations each lane of the Q4_0 kernel
    /// multiplies (the weights' offset of 8, taken off in integers). Never empty, so a kernel may take a reference to
    /// its first element for rows of a single block.</summary>
    public int[] Corrections { get; private set; } = [0];
    /// <summary>Per vector and block pair, 16 lanes: the activation scale of the block each lane belongs to (never empty, as above).</summary>
    public float[] ScalePatterns { get; private set; } = [0];
    float[] _scaled = [];

    /// <summary>The activations as they are.</summary>
    public void Plain(float[] x, int n, int cols)
    {
        Begin(n, cols);
        Floats = x;
        OutputScale.AsSpan(0, n).Fill(1);
    }

    /// <summary>
    /// The activations times 2^112, or times 2^(112 − e) with the rows' results times 2^e where a vector holds values of
    /// 2^16 or more (which 2^112 would overflow). Scaling by powers of two is exact: F16 products equal w·x as F32 computes it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void ForF16(float[] x, int n, int cols)
    {
        Begin(n, cols);
        if (_scaled.Length < n * cols) _scaled = new float[n * cols];
        for (int i = 0; i < n; i++)
        {
            var source = x.AsSpan(i * cols, cols);
            float max = MaxAbs(source);
            int e = float.IsFinite(max) && max >= 65536 ? MathF.ILogB(max) - 15 : 0;   // NaN and ∞ carried through as they are
            OutputScale[i] = MathF.ScaleB(1, e);
            Scale(source, MathF.ScaleB(1, 112 - e), _scaled.AsSpan(i * cols, cols));
        }
        Floats = _scaled;
    }

    /// <summary>Each vector as round(x · 32767 / max|x|), its result scaled back by max|x| / 32767.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void ForIntegers(float[] x, int n, int cols)
    {
        Begin(n, cols);
        if (Ints.Length < n * cols) Ints = new short[n * cols];
        for (int i = 0; i < n; i++)
        {
            var source = x.AsSpan(i * cols, cols);
            var target = Ints.AsSpan(i * cols, cols);
            float max = MaxAbs(source);
            if (!float.IsFinite(max) || max == 0)
            {
                target.Clear();
                OutputScale[i] = max == 0 ? 0 : float.NaN;   // NaN and ∞ in, NaN out (as F32 arithmetic gives)
                continue;
            }
            OutputScale[i] = max / 32767;
            Quantize(source, 32767 / max, target);
        }
    }

    /// <summary>
    /// Each block of 32 activations as round(x · 127 / max|x|) (ties to even), its scale max|x| / 127 — llama.cpp's 8-bit
    /// activations for 4-bit weights. Blocks are laid out in pairs as the Q4_0 kernel reads them (<see cref="BytePosition"/>);
    /// a block holding NaN or ∞ gets a NaN scale, so its products are NaN.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void ForBytes(float[] x, int n, int cols)
    {
        Begin(n, cols);
        OutputScale.AsSpan(0, n).Fill(1);
        int blocks = cols / 32, pairs = blocks / 2;
        if (Bytes.Length < n * cols) Bytes = new sbyte[n * cols];
        if (BlockScales.Length < n * blocks) BlockScales = new float[n * blocks];
        if (Corrections.Length < n * pairs * 16) Corrections = new int[n * pairs * 16];
        if (ScalePatterns.Length < n * pairs * 16) ScalePatterns = new float[n * pairs * 16];
        Span<sbyte> block = stackalloc sbyte[32];
        for (int i = 0; i < n; i++)
        {
            for (int b = 0; b < blocks; b++)
            {
                var source = x.AsSpan(i * cols + b * 32, 32);
                float max = MaxAbs(source);
                bool usable = float.IsFinite(max) && max > 0;
                BlockScales[i * blocks + b] = usable ? max / 127 : max == 0 ? 0 : float.NaN;
                if (usable) QuantizeBytes(source, 127 / max, block);
                else block.Clear();
                // Each half of the block is 16 bytes in a row at BytePosition's place.
                block[..16].CopyTo(Bytes.AsSpan(i * cols + BytePosition(b, 0, blocks), 16));
                block[16..].CopyTo(Bytes.AsSpan(i * cols + BytePosition(b, 16, blocks), 16));
            }
            for (int p = 0; p < pairs; p++)
            {
                int lanes = (i * pairs + p) * 16;
                for (int j = 0; j < 16; j++)
                {
                    int at = i * cols + p * 64 + 4 * j;
                    Corrections[lanes + j] = 8 * (Bytes[at] + Bytes[at + 1] + Bytes[at + 2] + Bytes[at + 3]);
                    ScalePatterns[lanes + j] = BlockScales[i * blocks + 2 * p + (j / 4) % 2];
                }
            }
        }
    }

    /// <summary>Where value k of block b sits among a vector's bytes: blocks in pairs of 64 bytes — the first block's
    /// values 0–15, the second's 0–15, the first's 16–31, the second's 16–31 (the order of a pair's low nibbles, then
    /// its high ones); a last block without a partner as it is.</summary>
    public static int BytePosition(int b, int k, int blocks)
    {
        int p = b / 2;
        if (p * 2 + 1 >= blocks && blocks % 2 == 1) return p * 64 + k;
        return p * 64 + (k < 16 ? (b % 2) * 16 + k : 32 + (b % 2) * 16 + k - 16);
    }

    static void QuantizeBytes(ReadOnlySpan<float> x, float factor, Span<sbyte> target)
    {
        if (Vector512.IsHardwareAccelerated)
        {
            ref float s = ref MemoryMarshal.GetReference(x);
            var low = Vector512.ConvertToInt32(Vector512.Round(Vector512.LoadUnsafe(ref s) * factor));
            var high = Vector512.ConvertToInt32(Vector512.Round(Vector512.LoadUnsafe(ref s, 16) * factor));
            var shorts = Vector512.Narrow(low, high);
            Vector256.Narrow(shorts.GetLower(), shorts.GetUpper()).StoreUnsafe(ref MemoryMarshal.GetReference(target));
            return;
        }
        for (int k = 0; k < x.Length; k++) target[k] = (sbyte)MathF.Round(x[k] * factor);
    }

    /// <summary>Rows [rowStart, rowEnd) of each of the N results (row stride <paramref name="rows"/>) times their
    /// vector's <see cref="OutputScale"/>, which the kernels leave to the end; a scale of 1 is left alone.</summary>
    public void ScaleOutputs(float[] y, int rows, int rowStart, int rowEnd)
    {
        for (int i = 0; i < N; i++)
            if (OutputScale[i] is var scale && scale != 1)
                for (int o = i * rows + rowStart; o < i * rows + rowEnd; o++) y[o] *= scale;
    }

    void Begin(int n, int cols)
    {
        (N, Cols) = (n, cols);
        if (OutputScale.Length < n) OutputScale = new float[n];
    }

    /// <summary>The largest magnitude; NaN if any value is NaN (Max, unlike MaxNative, carries it).</summary>
    static float MaxAbs(ReadOnlySpan<float> x)
    {
        int k = 0;
        float max = 0;
        ref float r = ref MemoryMarshal.GetReference(x);
        if (Vector512.IsHardwareAccelerated && x.Length >= 16)
        {
            var m = Vector512<float>.Zero;
            for (; k + 16 <= x.Length; k += 16) m = Vector512.Max(m, Vector512.Abs(Vector512.LoadUnsafe(ref r, (nuint)k)));
            for (int j = 0; j < 16; j++) max = MathF.Max(max, m[j]);
        }
        for (; k < x.Length; k++) max = MathF.Max(max, MathF.Abs(Unsafe.Add(ref r, k)));
        return max;
    }

    static void Scale(ReadOnlySpan<float> x, float factor, Span<float> target)
    {
        int k = 0;
        ref float s = ref MemoryMarshal.GetReference(x), t = ref MemoryMarshal.GetReference(target);
        if (Vector512.IsHardwareAccelerated)
            for (; k + 16 <= x.Length; k += 16) (Vector512.LoadUnsafe(ref s, (nuint)k) * factor).StoreUnsafe(ref t, (nuint)k);
        for (; k < x.Length; k++) Unsafe.Add(ref t, k) = Unsafe.Add(ref s, k) * factor;
    }

    /// <summary>Rounded to nearest, ties to even, in vector and scalar lanes alike.</summary>
    static void Quantize(ReadOnlySpan<float> x, float factor, Span<short> target)
    {
        int k = 0;
        ref float s = ref MemoryMarshal.GetReference(x);
        ref short t = ref MemoryMarshal.GetReference(target);
        if (Vector512.IsHardwareAccelerated)
            for (; k + 32 <= x.Length; k += 32)
            {
                var low = Vector512.ConvertToInt32(Vector512.Round(Vector512.LoadUnsafe(ref s, (nuint)k) * factor));
                var high = Vector512.ConvertToInt32(Vector512.Round(Vector512.LoadUnsafe(ref s, (nuint)k + 16) * factor));
                Vector512.Narrow(low, high).StoreUnsafe(ref t, (nuint)k);
            }
        for (; k < x.Length; k++) Unsafe.Add(ref t, k) = (short)MathF.Round(Unsafe.Add(ref s, k) * factor);
    }
}
