using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace GptSharp.Inference.Cpu;

/// <summary>How the CPU engine stores a weight matrix: as it trained (F32), halved (F16, BF16), or in 8-bit blocks of 32
/// with one scale each (Q8_0, GGUF's format; the scale rounded to F16 as GGUF stores it).</summary>
public enum WeightFormat { F32, F16, BF16, Q8_0 }

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
            WeightFormat.F32 => new F32Matrix(data, rows, cols),
            WeightFormat.BF16 => new Bf16Matrix(data, rows, cols),
            WeightFormat.F16 => new F16Matrix(data, rows, cols),
            WeightFormat.Q8_0 => cols % Q8Matrix.Block == 0 ? new Q8Matrix(data, rows, cols)
                : throw new NotSupportedException($"{name}: Q8_0 needs rows whose length divides into blocks of {Q8Matrix.Block}; this one has {cols}. Use f16, bf16 or f32."),
            _ => throw new ArgumentOutOfRangeException(nameof(format), format, "Unknown weight format."),
        };
    }
}

/// <summary>F32 weights.</summary>
internal sealed class F32Matrix(float[] data, int rows, int cols) : WeightMatrix(rows, cols)
{
    readonly float[] _w = data;

    public override WeightFormat Format => WeightFormat.F32;
    public override long Bytes => (long)_w.Length * 4;
    public override void ReadRow(int r, Span<float> destination) => _w.AsSpan(r * Cols, Cols).CopyTo(destination);

    public override void Multiply(float[] x, int n, float[] y, int rowStart, int rowEnd)
    {
        int cols = Cols, r = rowStart;
        for (; r + 4 <= rowEnd; r += 4)
            for (int i = 0; i < n; i++)
            {
                var (a, b, c, d) = Dot4(ref _w[r * cols], cols, ref x[i * cols]);
                int o = i * Rows + r;
                (y[o], y[o + 1], y[o + 2], y[o + 3]) = (a, b, c, d);
            }
        for (; r < rowEnd; r++)
            for (int i = 0; i < n; i++) y[i * Rows + r] = Kernels.Dot(_w.AsSpan(r * cols, cols), x.AsSpan(i * cols, cols));
    }

    /// <summary>Four consecutive rows (stride <paramref name="cols"/>) against one vector.</summary>
    static (float, float, float, float) Dot4(ref float w, int cols, ref float x)
    {
        int k = 0;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        if (Vector512.IsHardwareAccelerated && cols >= 16)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; k + 16 <= cols; k += 16)
            {
                var v = Vector512.LoadUnsafe(ref x, (nuint)k);
                a0 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref w, (nuint)k), v, a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref w, (nuint)(cols + k)), v, a1);
                a2 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref w, (nuint)(2 * cols + k)), v, a2);
                a3 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref w, (nuint)(3 * cols + k)), v, a3);
            }
            (s0, s1, s2, s3) = (Vector512.Sum(a0), Vector512.Sum(a1), Vector512.Sum(a2), Vector512.Sum(a3));
        }
        else if (Vector256.IsHardwareAccelerated && cols >= 8)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; k + 8 <= cols; k += 8)
            {
                var v = Vector256.LoadUnsafe(ref x, (nuint)k);
                a0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref w, (nuint)k), v, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref w, (nuint)(cols + k)), v, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref w, (nuint)(2 * cols + k)), v, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref w, (nuint)(3 * cols + k)), v, a3);
            }
            (s0, s1, s2, s3) = (Vector256.Sum(a0), Vector256.Sum(a1), Vector256.Sum(a2), Vector256.Sum(a3));
        }
        for (; k < cols; k++)
        {
            float v = Unsafe.Add(ref x, k);
            s0 += Unsafe.Add(ref w, k) * v;
            s1 += Unsafe.Add(ref w, cols + k) * v;
            s2 += Unsafe.Add(ref w, 2 * cols + k) * v;
            s3 += Unsafe.Add(ref w, 3 * cols + k) * v;
        }
        return (s0, s1, s2, s3);
    }
}

/// <summary>
/// Weights of 16 bits (BF16, F16), widened to F32 in registers: half the bytes of F32 per token. BF16 is F32's upper
/// half; F16's 5-bit exponent is moved into F32's by a shift and one multiplication (exact for normal and subnormal
/// values; packing refuses infinities and NaNs, and values beyond F16's range).
/// </summary>
internal abstract class HalfWidthMatrix : WeightMatrix
{
    protected readonly ushort[] _w;

    protected HalfWidthMatrix(ushort[] bits, int rows, int cols) : base(rows, cols) => _w = bits;

    public override long Bytes => (long)_w.Length * 2;

    /// <summary>32 stored values as two F32 vectors.</summary>
    protected abstract (Vector512<float> Low, Vector512<float> High) Widen(Vector512<ushort> bits);
    protected abstract float Widen(ushort bits);

    public override void ReadRow(int r, Span<float> destination)
    {
        for (int k = 0; k < Cols; k++) destination[k] = Widen(_w[r * Cols + k]);
    }

    public override void Multiply(float[] x, int n, float[] y, int rowStart, int rowEnd)
    {
        int cols = Cols, r = rowStart;
        for (; r + 2 <= rowEnd; r += 2)
            for (int i = 0; i < n; i++)
            {
                var (a, b) = Dot2(r, ref x[i * cols]);
                (y[i * Rows + r], y[i * Rows + r + 1]) = (a, b);
            }
        for (; r < rowEnd; r++)
            for (int i = 0; i < n; i++) y[i * Rows + r] = Dot1(r, ref x[i * cols]);
    }

    (float, float) Dot2(int r, ref float x)
    {
        int cols = Cols, k = 0;
        ref ushort w = ref _w[r * cols];
        float s0 = 0, s1 = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> a0 = default, a1 = default;
            for (; k + 32 <= cols; k += 32)
            {
                var x0 = Vector512.LoadUnsafe(ref x, (nuint)k);
                var x1 = Vector512.LoadUnsafe(ref x, (nuint)(k + 16));
                var (l0, h0) = Widen(Vector512.LoadUnsafe(ref w, (nuint)k));
                var (l1, h1) = Widen(Vector512.LoadUnsafe(ref w, (nuint)(cols + k)));
                a0 = Vector512.FusedMultiplyAdd(l0, x0, Vector512.FusedMultiplyAdd(h0, x1, a0));
                a1 = Vector512.FusedMultiplyAdd(l1, x0, Vector512.FusedMultiplyAdd(h1, x1, a1));
            }
            (s0, s1) = (Vector512.Sum(a0), Vector512.Sum(a1));
        }
        for (; k < cols; k++)
        {
            float v = Unsafe.Add(ref x, k);
            s0 += Widen(Unsafe.Add(ref w, k)) * v;
            s1 += Widen(Unsafe.Add(ref w, cols + k)) * v;
        }
        return (s0, s1);
    }

    float Dot1(int r, ref float x)
    {
        float s = 0;
        for (int k = 0; k < Cols; k++) s += Widen(_w[r * Cols + k]) * Unsafe.Add(ref x, k);
        return s;
    }
}

internal sealed class Bf16Matrix(float[] data, int rows, int cols) : HalfWidthMatrix(Pack(data), rows, cols)
{
    public override WeightFormat Format => WeightFormat.BF16;

    /// <summary>Round to nearest even, as torch's BF16 conversion does.</summary>
    static ushort[] Pack(float[] data)
    {
        var bits = new ushort[data.Length];
        for (int i = 0; i < data.Length; i++)
        {
            uint u = BitConverter.SingleToUInt32Bits(data[i]);
            bits[i] = (ushort)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
        }
        return bits;
    }

    protected override (Vector512<float>, Vector512<float>) Widen(Vector512<ushort> bits)
    {
        var (low, high) = Vector512.Widen(bits);
        return (Vector512.ShiftLeft(low, 16).AsSingle(), Vector512.ShiftLeft(high, 16).AsSingle());
    }

    protected override float Widen(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);
}

internal sealed class F16Matrix(float[] data, int rows, int cols) : HalfWidthMatrix(Pack(data), rows, cols)
{
    public override WeightFormat Format => WeightFormat.F16;

    static ushort[] Pack(float[] data)
    {
        var bits = new ushort[data.Length];
        for (int i = 0; i < data.Length; i++)
        {
            var half = (Half)data[i];
            if (!Half.IsFinite(half))
                throw new NotSupportedException($"A weight ({data[i]:G6}) does not fit F16's range (±65504); use bf16 or f32.");
            bits[i] = BitConverter.HalfToUInt16Bits(half);
        }
        return bits;
    }

    static readonly Vector512<float> ExponentShift = Vector512.Create(BitConverter.UInt32BitsToSingle(0x77800000));   // 2^112

    protected override (Vector512<float>, Vector512<float>) Widen(Vector512<ushort> bits)
    {
        var (low, high) = Vector512.Widen(bits);
        return (Convert(low), Convert(high));

        static Vector512<float> Convert(Vector512<uint> h)
        {
            // Magnitude bits moved under F32's exponent, rescaled by 2^(127−15); the sign put back on top.
            var magnitude = Vector512.ShiftLeft(h & Vector512.Create(0x7FFFu), 13).AsSingle() * ExponentShift;
            return (magnitude.AsUInt32() | Vector512.ShiftLeft(h & Vector512.Create(0x8000u), 16)).AsSingle();
        }
    }

    protected override float Widen(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);
}

/// <summary>
/// GGUF's Q8_0: each run of 32 weights as 32 signed bytes and one scale (max |w| / 127, rounded to F16), a quarter of
/// F32's bytes (34 per 32). Products widen the bytes to F32 in registers.
/// </summary>
internal sealed class Q8Matrix : WeightMatrix
{
    public const int Block = 32;
    readonly sbyte[] _q;
    readonly float[] _scale;

    public Q8Matrix(float[] data, int rows, int cols) : base(rows, cols)
    {
        _q = new sbyte[data.Length];
        _scale = new float[data.Length / Block];
        for (int b = 0; b < _scale.Length; b++)
        {
            float max = 0;
            for (int k = 0; k < Block; k++) max = Math.Max(max, Math.Abs(data[b * Block + k]));
            float scale = (float)(Half)(max / 127f);
            _scale[b] = scale;
            float inverse = scale == 0 ? 0 : 1f / (max / 127f);   // quantise with the exact scale, as GGUF does
            for (int k = 0; k < Block; k++) _q[b * Block + k] = (sbyte)Math.Round(data[b * Block + k] * inverse, MidpointRounding.AwayFromZero);
        }
    }

    public override WeightFormat Format => WeightFormat.Q8_0;
    public override long Bytes => _q.Length + _scale.Length * 2L;

    /// <summary>The stored blocks (GGUF export writes them as they are).</summary>
    internal (sbyte[] Quants, float[] Scales) Blocks => (_q, _scale);

    public override void ReadRow(int r, Span<float> destination)
    {
        for (int k = 0; k < Cols; k++) destination[k] = _q[r * Cols + k] * _scale[(r * Cols + k) / Block];
    }

    public override void Multiply(float[] x, int n, float[] y, int rowStart, int rowEnd)
    {
        for (int r = rowStart; r < rowEnd; r++)
            for (int i = 0; i < n; i++) y[i * Rows + r] = Dot(r, ref x[i * Cols]);
    }

    float Dot(int r, ref float x)
    {
        int blocks = Cols / Block, first = r * blocks;
        ref sbyte q = ref _q[r * Cols];
        if (Vector512.IsHardwareAccelerated)
        {
            var acc = Vector512<float>.Zero;
            for (int b = 0; b < blocks; b++)
            {
                var bytes = Vector256.LoadUnsafe(ref q, (nuint)(b * Block));
                var (low16, high16) = Vector256.Widen(bytes);                     // 2 × 16 shorts
                var (w0, w1) = Vector512.Widen(Vector512.Create(low16, high16));  // 2 × 16 ints
                var sum = Vector512.ConvertToSingle(w0) * Vector512.LoadUnsafe(ref x, (nuint)(b * Block));
                sum = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(w1), Vector512.LoadUnsafe(ref x, (nuint)(b * Block + 16)), sum);
                acc = Vector512.FusedMultiplyAdd(sum, Vector512.Create(_scale[first + b]), acc);
            }
            return Vector512.Sum(acc);
        }
        float s = 0;
        for (int b = 0; b < blocks; b++)
        {
            float block = 0;
            for (int k = 0; k < Block; k++) block += Unsafe.Add(ref q, b * Block + k) * Unsafe.Add(ref x, b * Block + k);
            s += block * _scale[first + b];
        }
        return s;
    }
}

/// <summary>Small vector kernels of the engine.</summary>
internal static class Kernels
{
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
