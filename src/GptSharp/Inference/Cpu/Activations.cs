using System.Numerics;
using System.Runtime.CompilerServices;

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

    /// <summary>A one-input activation by kind (tanh GELU or ReLU²; SwiGLU takes two inputs, and others none here).</summary>
    public static void Apply(Models.ActivationKind kind, ReadOnlySpan<float> source, Span<float> target)
    {
        if (kind == Models.ActivationKind.ReluSquared) ReluSquared(source, target);
        else if (kind == Models.ActivationKind.GeluTanh) GeluTanh(source, target);
    }

    interface IActivation
    {
        static abstract Vector<float> Apply(Vector<float> x, Vector<float> y);
        static abstract float Apply(float x, float y);
    }

    /// <summary>In <see cref="Vector{T}"/>'s width (256 bits, or 512 where the runtime is told to prefer it): the
    /// activations are a few percent of a token, not worth a kernel per width.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Map<TOp>(ReadOnlySpan<float> x, ReadOnlySpan<float> y, Span<float> target) where TOp : struct, IActivation
    {
        int k = 0, n = x.Length, width = Vector<float>.Count;
        if (!Vector.IsHardwareAccelerated)
        {
            for (; k < n; k++) target[k] = TOp.Apply(x[k], y[k]);
            return;
        }
        for (; k + width <= n; k += width) TOp.Apply(new Vector<float>(x.Slice(k, width)), new Vector<float>(y.Slice(k, width))).CopyTo(target.Slice(k, width));
        if (k == n) return;
        Span<float> a = stackalloc float[width], b = stackalloc float[width];
        x[k..].CopyTo(a);
        y[k..].CopyTo(b);
        TOp.Apply(new Vector<float>(a), new Vector<float>(b)).CopyTo(a);
        a[..(n - k)].CopyTo(target[k..]);
    }

    const float Sqrt2OverPi = 0.7978845608028654f, Cubic = 0.044715f;

    struct GeluTanhOp : IActivation
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector<float> Apply(Vector<float> v, Vector<float> _)
        {
            var u = new Vector<float>(Sqrt2OverPi) * (v + new Vector<float>(Cubic) * v * v * v);
            var e = Vector.Exp(new Vector<float>(-2f) * Vector.Abs(u));
            var tanh = Vector.CopySign((Vector<float>.One - e) / (Vector<float>.One + e), u);
            return new Vector<float>(0.5f) * v * (Vector<float>.One + tanh);
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
        public static Vector<float> Apply(Vector<float> gate, Vector<float> up) => gate / (Vector<float>.One + Vector.Exp(-gate)) * up;
        public static float Apply(float gate, float up) => gate / (1 + MathF.Exp(-gate)) * up;
    }

    struct ReluSquaredOp : IActivation
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector<float> Apply(Vector<float> v, Vector<float> _) => Vector.Max(v, Vector<float>.Zero) * Vector.Max(v, Vector<float>.Zero);
        public static float Apply(float v, float _) => MathF.Max(v, 0) * MathF.Max(v, 0);
    }
}
