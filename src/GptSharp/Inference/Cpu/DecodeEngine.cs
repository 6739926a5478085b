using System.Runtime.Intrinsics.X86;
using GptSharp.Models;

namespace GptSharp.Inference.Cpu;

/// <summary>
/// Which engine decodes: libtorch (<c>torch</c>: the reference, any device, best for large batches) or the CPU engine
/// with weights in F32 (<c>cpu</c>, equal to libtorch up to float rounding), F16, BF16, Q8_0 or Q4_0. <c>auto</c> is the CPU
/// engine in F32 wherever it runs (a CPU device, a decoder model) for batches of up to <see cref="AutoRowLimit"/> rows,
/// libtorch elsewhere: measured 2–4× faster at batch 1.
/// </summary>
public static class DecodeEngine
{
    public const string Auto = "auto", Torch = "torch";

    /// <summary>The most rows <c>auto</c> decodes on the CPU engine; larger batches go to libtorch. Measured (bench --
    /// rollout, and gpt2-124m steps at 60 cached tokens): the engine's step is faster at every batch up to 128 rows —
    /// on the speedrun's model 4–7× at 1–4 rows, 1.5–3× at 16, 2.0–2.4× at 32, 1.5–1.8× at 64, 1.3× at 128; on
    /// gpt2-124m 1.7× at 16, 1.6× at 32, 1.4× at 64, 1.5× at 128. Beyond 128 it was not measured.</summary>
    public const int AutoRowLimit = 128;

    /// <summary>Every name <c>--engine</c> takes.</summary>
    public static IReadOnlyList<string> Names { get; } = [Auto, Torch, "cpu", "cpu-f16", "cpu-bf16", "cpu-q8_0", "cpu-q4_0"];

    /// <summary>Why <paramref name="engine"/> is not an engine name (listing the names), or null when it is.</summary>
    public static string? Problem(string engine, string option = "--engine") =>
        Names.Contains(engine) ? null : $"{option} must be one of {string.Join(", ", Names)}, not '{engine}'.";

    /// <summary>Every name <c>--kv</c> takes: how the CPU engine's cache stores keys and values.</summary>
    public static IReadOnlyList<string> KvNames { get; } = ["f32", "f16", "q8_0"];

    /// <summary>Why <paramref name="kv"/> is not a cache format for <paramref name="engine"/> (naming the formats), or null.</summary>
    public static string? KvProblem(string? kv, string engine) =>
        kv is null ? null
        : !KvNames.Contains(kv) ? $"--kv must be one of {string.Join(", ", KvNames)}, not '{kv}'."
        : engine == Torch ? "--kv sets the CPU engine's cache; --engine torch keeps libtorch's own (F32). Use --engine auto or cpu-*."
        : null;

    /// <summary>The cache format <c>--kv</c> names, or null for the engine's default (F32 beside F32 weights, F16 beside smaller ones).</summary>
    public static KvFormat? Kv(string? kv) => kv switch
    {
        null => null,
        "f32" => KvFormat.F32,
        "f16" => KvFormat.F16,
        "q8_0" => KvFormat.Q8_0,
        _ => throw new ArgumentException($"Unknown cache format '{kv}': expected one of {string.Join(", ", KvNames)}."),
    };

    /// <summary>The CPU engine's weight format an engine name asks for, or null for libtorch; throws naming the choices.</summary>
    public static WeightFormat? Format(string engine, GptConfig config, string device = "cpu")
    {
        bool cpuFits = device == "cpu" && config.Activation != ActivationKind.Gelu;
        return engine switch
        {
            Auto => cpuFits ? WeightFormat.F32 : null,
            Torch => null,
            "cpu" or "cpu-f16" or "cpu-bf16" or "cpu-q8_0" or "cpu-q4_0" when !cpuFits =>
                throw new ArgumentException($"--engine {engine} runs on the CPU only, for decoder models; the model is on '{device}'. Use --engine torch."),
            "cpu" => WeightFormat.F32,
            "cpu-f16" => WeightFormat.F16,
            "cpu-bf16" => WeightFormat.BF16,
            "cpu-q8_0" => WeightFormat.Q8_0,
            "cpu-q4_0" => WeightFormat.Q4_0,
            _ => throw new ArgumentException($"Unknown engine '{engine}': expected one of {string.Join(", ", Names)}."),
        };
    }

    /// <summary>Why the CPU engine will be slow for this format on this processor, or null: without AVX-512 only F32 has
    /// a vector kernel (256-bit); the 16-bit formats need AVX-512F, the block formats' integer products AVX-512BW, or
    /// fall back to scalar code.</summary>
    public static string? SlowPathWarning(WeightFormat format) =>
        format == WeightFormat.F32 || Avx512F.IsSupported && (Avx512BW.IsSupported || format is WeightFormat.F16 or WeightFormat.BF16) ? null
        : $"This processor has no AVX-512{(Avx512F.IsSupported ? "BW" : "")}: {format} weights run on scalar code, several times slower than F32 (--engine cpu).";
}
