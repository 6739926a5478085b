using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace GptSharp.Inference.Cpu;

/// <summary>
/// The MLP activations of the CPU engine, vectorised: per token a GPT-2 block evaluates 4·C of them, and one
/// <see cref="MathF.Tanh"/> each cost as much as a layer's attention. A row's tail goes through one zero-padded vector,
/// so every value is computed the same way wherever it falls — a product split across threads at any row, or not split,
/// activates to the same bits.
/// </summary>
internal static class Activations
{
    /// <summary>GPT-2's tanh GELU, 0.5·v·(1 + tanh(√(2/π)(v + 0.044715 v³))), with tanh(u) = sign(u)(1 − e)/(1 + e),
    /// e = exp(−2|u|): e never overflows, and a large negative v gives exactly 0, as the reference does.</summary>
    public static void GeluTanh(ReadOnlySpan<float> source, Span<float> target) => Map<GeluTanhOp>(source, source, target);

    /// <summary>SwiGLU: silu(gate)·up = gate / (1 + exp(−gate)) · up.</summary>
    public static void SwiGlu(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> target) => Map<SwiGluOp>(gate, up, target);

    /// <summary>ReLU²: max(v, 0)².</summary>
    public static void ReluSquared(ReadOnlySpan<float> source, Span<float> target) => Map<ReluSquaredOp>(source, source, target);

    interface IActivation
    {
        static abstract Vector512<float> Apply(Vector512<float> x, Vector512<float> y);
        static abstract Vector256<float> Apply(Vector256<float> x, Vector256<float> y);
        static abstract float Apply(float x, float y);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Map<TOp>(ReadOnlySpan<float> x, ReadOnlySpan<float> y, Span<float> target) where TOp : struct, IActivation
    {
        int k = 0, n = x.Length;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; k + 16 <= n; k += 16) TOp.Apply(Vector512.Create(x.Slice(k, 16)), Vector512.Create(y.Slice(k, 16))).CopyTo(target.Slice(k, 16));
            if (k == n) return;
            Span<float> a = stackalloc float[16], b = stackalloc float[16];
            x[k..].CopyTo(a);
            y[k..].CopyTo(b);
            TOp.Apply(Vector512.Create(a), Vector512.Create(b)).CopyTo(a);
            a[..(n - k)].CopyTo(target[k..]);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            for (; k + 8 <= n; k += 8) TOp.Apply(Vector256.Create(x.Slice(k, 8)), Vector256.Create(y.Slice(k, 8))).CopyTo(target.Slice(k, 8));
            if (k == n) return;
            Span<float> a = stackalloc float[8], b = stackalloc float[8];
            x[k..].CopyTo(a);
            y[k..].CopyTo(b);
            TOp.Apply(Vector256.Create(a), Vector256.Create(b)).CopyTo(a);
            a[..(n - k)].CopyTo(target[k..]);
        }
        else
            for (; k < n; k++) target[k] = TOp.Apply(x[k], y[k]);
    }

    const float Sqrt2OverPi = 0.7978845608028654f, Cubic = 0.044715f;

    struct GeluTanhOp : IActivation
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Apply(Vector512<float> v, Vector512<float> _)
        {
            var u = Vector512.Create(Sqrt2OverPi) * (v + Vector512.Create(Cubic) * v * v * v);
            var e = Vector512.Exp(Vector512.Create(-2f) * Vector512.Abs(u));
            var tanh = Vector512.CopySign((Vector512<float>.One - e) / (Vector512<float>.One + e), u);
            return Vector512.Create(0.5f) * v * (Vector512<float>.One + tanh);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Apply(Vector256<float> v, Vector256<float> _)
        {
            var u = Vector256.Create(Sqrt2OverPi) * (v + Vector256.Create(Cubic) * v * v * v);
            var e = Vector256.Exp(Vector256.Create(-2f) * Vector256.Abs(u));
            var tanh = Vector256.CopySign((Vector256<float>.One - e) / (Vector256<float>.One + e), u);
            return Vector256.Create(0.5f) * v * (Vector256<float>.One + tanh);
        }

        public static float Apply(float v, float _)
        {
            float u = Sqrt2OverPi * (v + Cubic * v * v * v), e = MathF.Exp(-2f * MathF.Abs(u));
            return 0.5f * v * (1 + MathF.CopySign((1 - e) / (1 + e), u));
        }
    }

    struct SwiGluOp : IActivation
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Apply(Vector512<float> gate, Vector512<float> up) => gate / (Vector512<float>.One + Vector512.Exp(-gate)) * up;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Apply(Vector256<float> gate, Vector256<float> up) => gate / (Vector256<float>.One + Vector256.Exp(-gate)) * up;
        public static float Apply(float gate, float up) => gate / (1 + MathF.Exp(-gate)) * up;
    }

    struct ReluSquaredOp : IActivation
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Apply(Vector512<float> v, Vector512<float> _) => Vector512.Max(v, Vector512<float>.Zero) * Vector512.Max(v, Vector512<float>.Zero);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Apply(Vector256<float> v, Vector256<float> _) => Vector256.Max(v, Vector256<float>.Zero) * Vector256.Max(v, Vector256<float>.Zero);
        public static float Apply(float v, float _) => MathF.Max(v, 0) * MathF.Max(v, 0);
    }
}
