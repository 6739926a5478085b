using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GptSharp.Inference.Cpu;

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
