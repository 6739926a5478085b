using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace GptSharp.Inference.Cpu;

/// <summary>
/// The MLP activations of the CPU engine, vectorised: per token a GPT-2 block evaluates 4·C of them, and one
/// <see cref="MathF.Tanh"/> each cost as much as a layer's attention. Vector and scalar lanes use the same formulas, so
/// a value does not depend on where in the row it falls.
/// </summary>
internal static class Activations
{
    const float Sqrt2OverPi = 0.7978845608028654f, Cubic = 0.044715f;

    /// <summary>GPT-2's tanh GELU, 0.5·v·(1 + tanh(√(2/π)(v + 0.044715 v³))), with tanh(u) = sign(u)(1 − e)/(1 + e),
    /// e = exp(−2|u|): e never overflows, and a large negative v gives exactly 0, as the reference does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void GeluTanh(ReadOnlySpan<float> source, Span<float> target)
    {
        int k = 0, n = source.Length;
        ref float s = ref MemoryMarshal.GetReference(source), t = ref MemoryMarshal.GetReference(target);
        if (Vector512.IsHardwareAccelerated)
            for (; k + 16 <= n; k += 16)
            {
                var v = Vector512.LoadUnsafe(ref s, (nuint)k);
                var u = Vector512.Create(Sqrt2OverPi) * (v + Vector512.Create(Cubic) * v * v * v);
                var e = Vector512.Exp(Vector512.Create(-2f) * Vector512.Abs(u));
                var tanh = Vector512.CopySign((Vector512<float>.One - e) / (Vector512<float>.One + e), u);
                (Vector512.Create(0.5f) * v * (Vector512<float>.One + tanh)).StoreUnsafe(ref t, (nuint)k);
            }
        else if (Vector256.IsHardwareAccelerated)
            for (; k + 8 <= n; k += 8)
            {
                var v = Vector256.LoadUnsafe(ref s, (nuint)k);
                var u = Vector256.Create(Sqrt2OverPi) * (v + Vector256.Create(Cubic) * v * v * v);
                var e = Vector256.Exp(Vector256.Create(-2f) * Vector256.Abs(u));
                var tanh = Vector256.CopySign((Vector256<float>.One - e) / (Vector256<float>.One + e), u);
                (Vector256.Create(0.5f) * v * (Vector256<float>.One + tanh)).StoreUnsafe(ref t, (nuint)k);
            }
        for (; k < n; k++)
        {
            float v = Unsafe.Add(ref s, k), u = Sqrt2OverPi * (v + Cubic * v * v * v), e = MathF.Exp(-2f * MathF.Abs(u));
            Unsafe.Add(ref t, k) = 0.5f * v * (1 + MathF.CopySign((1 - e) / (1 + e), u));
        }
    }

    /// <summary>SwiGLU: silu(gate)·up = gate / (1 + exp(−gate)) · up.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SwiGlu(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> target)
    {
        int k = 0, n = gate.Length;
        ref float g = ref MemoryMarshal.GetReference(gate), u = ref MemoryMarshal.GetReference(up), t = ref MemoryMarshal.GetReference(target);
        if (Vector512.IsHardwareAccelerated)
            for (; k + 16 <= n; k += 16)
            {
                var v = Vector512.LoadUnsafe(ref g, (nuint)k);
                (v / (Vector512<float>.One + Vector512.Exp(-v)) * Vector512.LoadUnsafe(ref u, (nuint)k)).StoreUnsafe(ref t, (nuint)k);
            }
        else if (Vector256.IsHardwareAccelerated)
            for (; k + 8 <= n; k += 8)
            {
                var v = Vector256.LoadUnsafe(ref g, (nuint)k);
                (v / (Vector256<float>.One + Vector256.Exp(-v)) * Vector256.LoadUnsafe(ref u, (nuint)k)).StoreUnsafe(ref t, (nuint)k);
            }
        for (; k < n; k++)
        {
            float v = Unsafe.Add(ref g, k);
            Unsafe.Add(ref t, k) = v / (1 + MathF.Exp(-v)) * Unsafe.Add(ref u, k);
        }
    }

    /// <summary>ReLU²: max(v, 0)².</summary>
    public static void ReluSquared(ReadOnlySpan<float> source, Span<float> target)
    {
        for (int k = 0; k < source.Length; k++)
        {
            float v = MathF.Max(source[k], 0);
            target[k] = v * v;
        }
    }
}
