using System.Diagnostics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;

namespace GptSharp.Runtime;

/// <summary>State of the libstdc++ compatibility fix for TorchSharp's native library.</summary>
/// <param name="NativePath">The libLibTorchSharp file beside the program, or null where there is none.</param>
/// <param name="Status">One line: not needed / applied / missing.</param>
public sealed record CompatStatus(string? NativePath, string Status);

/// <summary>Facts about this machine and the torch build, for <c>gptsharp doctor</c> and benchmark headers.</summary>
public static class SystemReport
{
    public static string TorchSharpVersion => typeof(torch).Assembly.GetName().Version?.ToString() ?? "unknown";
    public static string LibTorchVersion => torch.__version__;

    /// <summary>CPU instruction-set extensions the runtime reports.</summary>
    public static IReadOnlyList<string> CpuFeatures()
    {
        var features = new List<string>();
        if (Avx.IsSupported) features.Add("AVX");
        if (Avx2.IsSupported) features.Add("AVX2");
        if (Fma.IsSupported) features.Add("FMA");
        if (Avx512F.IsSupported) features.Add("AVX-512F");
        if (Avx512BW.IsSupported) features.Add("AVX-512BW");
        if (System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported) features.Add("NEON");
        return features;
    }

    /// <summary>The CPU model name from /proc/cpuinfo, where there is one.</summary>
    public static string CpuModel()
    {
        if (File.Exists("/proc/cpuinfo"))
            foreach (string line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("model name", StringComparison.Ordinal)) return line[(line.IndexOf(':') + 1)..].Trim();
        return Environment.GetEnvironmentVariable("PROCESSOR_IDENTIFIER") ?? "unknown";
    }

    /// <summary>Whether the GLIBCXX requirement of the copied native library had to be, and was, relaxed.</summary>
    public static CompatStatus LibTorchSharpCompat(string? baseDirectory = null)
    {
        baseDirectory ??= AppContext.BaseDirectory;
        if (!OperatingSystem.IsLinux()) return new CompatStatus(null, "not needed (not Linux)");
        string? native = new[] { Path.Combine(baseDirectory, "libLibTorchSharp.so") }
            .Concat(Directory.Exists(Path.Combine(baseDirectory, "runtimes"))
                ? Directory.GetFiles(Path.Combine(baseDirectory, "runtimes"), "libLibTorchSharp.so", SearchOption.AllDirectories) : [])
            .FirstOrDefault(File.Exists);
        if (native is null) return new CompatStatus(null, "libLibTorchSharp.so not found beside the program");
        string? system = ElfVersionNeeds.FindSystemLibrary("libstdc++.so.6");
        var available = system is null ? new HashSet<string>() : ElfVersionNeeds.ReadDefinitions(File.ReadAllBytes(system), system);
        var missing = ElfVersionNeeds.Read(File.ReadAllBytes(native), native)
            .Where(n => n.File == "libstdc++.so.6" && !available.Contains(n.Version)).ToList();
        if (missing.Count == 0) return new CompatStatus(native, $"not needed ({system ?? "libstdc++"} has every version required)");
        string names = string.Join(", ", missing.Select(n => n.Version));
        return missing.All(n => n.IsWeak)
            ? new CompatStatus(native, $"applied: {names} marked weak (missing from {system})")
            : new CompatStatus(native, $"MISSING: {names} required but absent from {system}; rebuild the project");
    }

    /// <summary>Matmul throughput in GFLOP/s (float32 unless <paramref name="dtype"/> says otherwise), measured for about <paramref name="seconds"/>.</summary>
    public static double MatmulGflops(int size = 1024, double seconds = 1.0, torch.ScalarType dtype = torch.ScalarType.Float32)
    {
        using var scope = torch.NewDisposeScope();
        var a = torch.randn(size, size).to(dtype);
        var b = torch.randn(size, size).to(dtype);
        torch.matmul(a, b).Dispose(); // warm-up
        var watch = Stopwatch.StartNew();
        long runs = 0;
        while (watch.Elapsed.TotalSeconds < seconds)
        {
            torch.matmul(a, b).Dispose();
            runs++;
        }
        return 2.0 * size * size * size * runs / watch.Elapsed.TotalSeconds / 1e9;
    }
}
