using GptSharp.Runtime;
using System.Reflection;

namespace GptSharp.Tests;

public class ElfCompatTests
{
    const string Library = "libstdc++.so.6";
    const string Needed = "GLIBCXX_3.4.32";

    static string NuGetOriginal()
    {
        string root = typeof(ElfCompatTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "NuGetPackageRoot").Value!;
        return Path.Combine(root, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
    }

    static string CopiedNative() => Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");

    [Fact]
    public void BuildOutputHasTheRequirementWeakExactlyWhenTheSystemLacksIt()
    {
        if (!OperatingSystem.IsLinux()) return;
        string system = ElfVersionNeeds.FindSystemLibrary(Library)!;
        bool systemHasIt = ElfVersionNeeds.ReadDefinitions(File.ReadAllBytes(system), system).Contains(Needed);
        var need = ElfVersionNeeds.Read(File.ReadAllBytes(CopiedNative()), CopiedNative()).Single(n => n.Version == Needed);
        Assert.Equal(Library, need.File);
        Assert.Equal(!systemHasIt, need.IsWeak);
    }

    [Fact]
    public void NuGetCacheCopyIsNeverPatched()
    {
        if (!OperatingSystem.IsLinux()) return;
        var need = ElfVersionNeeds.Read(File.ReadAllBytes(NuGetOriginal()), NuGetOriginal()).Single(n => n.Version == Needed);
        Assert.False(need.IsWeak);
    }

    [Fact]
    public void WeakeningChangesOnlyTheFlagOfMissingSafeVersionsAndIsIdempotent()
    {
        if (!OperatingSystem.IsLinux()) return;
        byte[] original = File.ReadAllBytes(NuGetOriginal());
        byte[] elf = (byte[])original.Clone();
        var available = new HashSet<string> { "GLIBCXX_3.4", "GLIBCXX_3.4.30" }; // pretend an old libstdc++
        var allNeeds = ElfVersionNeeds.Read(original, "original").Where(n => n.File == Library).ToList();

        var first = ElfVersionNeeds.WeakenMissing(elf, Library, available, "copy");

        Assert.Contains(first.Weakened, n => n.Version == Needed);
        // Versions whose symbols relocations use must be refused, not weakened.
        Assert.NotEmpty(first.UnsafeReasons);
        Assert.DoesNotContain(first.Weakened, n => n.Version == "GLIBCXX_3.4.29");
        int changedBytes = original.Zip(elf).Count(p => p.First != p.Second);
        Assert.Equal(first.Weakened.Count, changedBytes); // one flag byte per weakened entry
        foreach (var need in ElfVersionNeeds.Read(elf, "copy").Where(n => n.File == Library))
            Assert.Equal(first.Weakened.Any(w => w.Version == need.Version) || allNeeds.Single(a => a.Version == need.Version).IsWeak, need.IsWeak);

        byte[] once = (byte[])elf.Clone();
        var second = ElfVersionNeeds.WeakenMissing(elf, Library, available, "copy");
        Assert.Empty(second.Weakened);
        Assert.Equal(first.Weakened.Select(n => n.Version), second.AlreadyWeak.Select(n => n.Version));
        Assert.Equal(once, elf);
    }

    [Fact]
    public void TheGlibcxx3432SymbolHasNoRelocation()
    {
        if (!OperatingSystem.IsLinux()) return;
        byte[] elf = File.ReadAllBytes(NuGetOriginal());
        var need = ElfVersionNeeds.Read(elf, "original").Single(n => n.Version == Needed);
        Assert.Empty(ElfVersionNeeds.RelocatedSymbolsOfVersion(elf, need.Index, "original"));
        var used = ElfVersionNeeds.Read(elf, "original").Single(n => n.Version == "GLIBCXX_3.4.29");
        Assert.NotEmpty(ElfVersionNeeds.RelocatedSymbolsOfVersion(elf, used.Index, "original"));
    }

    [Fact]
    public void NonElfInputIsAClearError()
    {
        var error = Assert.Throws<InvalidDataException>(() => ElfVersionNeeds.Read("not an elf file at all, just text......................................."u8.ToArray(), "notes.txt"));
        Assert.Contains("notes.txt", error.Message);
        Assert.Contains("magic", error.Message);
    }

    [Fact]
    public void DoctorReportsTheFixState()
    {
        if (!OperatingSystem.IsLinux()) return;
        var status = SystemReport.LibTorchSharpCompat();
        Assert.NotNull(status.NativePath);
        Assert.DoesNotContain("MISSING", status.Status);
    }

    [Fact]
    public void TorchLoadsAndComputes()
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        var a = TorchSharp.torch.tensor(new float[] { 1, 2, 3, 4 }).reshape(2, 2);
        var product = TorchSharp.torch.matmul(a, a);
        Assert.Equal(new float[] { 7, 10, 15, 22 }, product.data<float>().ToArray());
    }
}
