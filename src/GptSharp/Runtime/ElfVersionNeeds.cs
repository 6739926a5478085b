// ELF symbol-version requirements: read them, and mark as weak those the system cannot satisfy when that is safe.
//
// This one file serves twice: the library compiles it (GPTSHARP_LIBRARY defined) for `gptsharp doctor` and the tests,
// and MSBuild compiles it inline (RoslynCodeTaskFactory, see Directory.Build.targets) as the build task that makes
// TorchSharp's native library load on systems whose libstdc++ is older than the one it was linked against.
// It therefore keeps to netstandard2.0 APIs and older C#.
#nullable disable
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;

namespace GptSharp.Runtime
{
    /// <summary>One <c>Vernaux</c> entry of an ELF <c>.gnu.version_r</c> section: a version that a needed library must define.</summary>
    public sealed class ElfVersionNeed
    {
        public ElfVersionNeed(string file, string version, ushort flags, ushort index, long flagsOffset)
        {
            File = file; Version = version; Flags = flags; Index = index; FlagsOffset = flagsOffset;
        }

        /// <summary>The needed library, e.g. <c>libstdc++.so.6</c>.</summary>
        public string File { get; }
        /// <summary>The version name, e.g. <c>GLIBCXX_3.4.32</c>.</summary>
        public string Version { get; }
        /// <summary><c>vna_flags</c>; bit <see cref="ElfVersionNeeds.WeakFlag"/> marks a weak requirement.</summary>
        public ushort Flags { get; }
        /// <summary><c>vna_other</c>: the version index that symbols in <c>.gnu.version</c> refer to.</summary>
        public ushort Index { get; }
        /// <summary>Byte offset of <c>vna_flags</c> in the file.</summary>
        public long FlagsOffset { get; }
        public bool IsWeak => (Flags & ElfVersionNeeds.WeakFlag) != 0;
        public override string ToString() => File + ":" + Version + (IsWeak ? " (weak)" : "");
    }

    /// <summary>What <see cref="ElfVersionNeeds.WeakenMissing"/> did to one file.</summary>
    public sealed class ElfWeakenResult
    {
        public ElfWeakenResult(IList<ElfVersionNeed> weakened, IList<ElfVersionNeed> alreadyWeak, IList<string> unsafeReasons)
        {
            Weakened = weakened; AlreadyWeak = alreadyWeak; UnsafeReasons = unsafeReasons;
        }

        /// <summary>Requirements that were strong, missing from the system, and have now been marked weak.</summary>
        public IList<ElfVersionNeed> Weakened { get; }
        /// <summary>Missing requirements that were weak already (a second run finds these).</summary>
        public IList<ElfVersionNeed> AlreadyWeak { get; }
        /// <summary>Missing requirements left strong because a relocation uses a symbol of that version.</summary>
        public IList<string> UnsafeReasons { get; }
    }

    /// <summary>
    /// Reads and edits symbol-version data of 64-bit little-endian ELF shared objects. A version requirement may be
    /// marked weak (<c>VER_FLG_WEAK</c>) only when no relocation references a symbol of that version: then the
    /// dynamic loader never needs the symbol, and a weak requirement that the system lacks no longer stops the load.
    /// </summary>
    public static class ElfVersionNeeds
    {
        public const ushort WeakFlag = 0x2;
        const uint ShtRela = 4, ShtRel = 9, ShtDynsym = 11;
        const uint ShtGnuVerdef = 0x6ffffffd, ShtGnuVerneed = 0x6ffffffe, ShtGnuVersym = 0x6fffffff;

        sealed class Section
        {
            public int Index; public uint Type; public long Offset; public long Size; public uint Link; public uint Info; public long EntrySize;
        }

        /// <summary>All version requirements of an ELF file.</summary>
        public static IList<ElfVersionNeed> Read(byte[] elf, string fileNameForErrors)
        {
            var sections = ReadSections(elf, fileNameForErrors);
            var result = new List<ElfVersionNeed>();
            foreach (var verneed in sections.Where(s => s.Type == ShtGnuVerneed))
            {
                var strtab = sections[(int)verneed.Link];
                long entry = verneed.Offset;
                for (uint i = 0; i < verneed.Info; i++)
                {
                    ushort count = U16(elf, entry + 2);
                    string file = CString(elf, strtab.Offset + U32(elf, entry + 4));
                    long aux = entry + U32(elf, entry + 8);
                    for (int j = 0; j < count; j++)
                    {
                        ushort flags = U16(elf, aux + 4);
                        ushort other = U16(elf, aux + 6);
                        string name = CString(elf, strtab.Offset + U32(elf, aux + 8));
                        result.Add(new ElfVersionNeed(file, name, flags, other, aux + 4));
                        uint nextAux = U32(elf, aux + 12);
                        if (nextAux == 0) break;
                        aux += nextAux;
                    }
                    uint next = U32(elf, entry + 12);
                    if (next == 0) break;
                    entry += next;
                }
            }
            return result;
        }

        /// <summary>The version names an ELF file defines (its <c>.gnu.version_d</c>), e.g. every <c>GLIBCXX_*</c> of libstdc++.</summary>
        public static ISet<string> ReadDefinitions(byte[] elf, string fileNameForErrors)
        {
            var sections = ReadSections(elf, fileNameForErrors);
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (var verdef in sections.Where(s => s.Type == ShtGnuVerdef))
            {
                var strtab = sections[(int)verdef.Link];
                long entry = verdef.Offset;
                for (uint i = 0; i < verdef.Info; i++)
                {
                    ushort count = U16(elf, entry + 6);
                    if (count > 0)
                        names.Add(CString(elf, strtab.Offset + U32(elf, entry + U32(elf, entry + 12))));
                    uint next = U32(elf, entry + 16);
                    if (next == 0) break;
                    entry += next;
                }
            }
            return names;
        }

        /// <summary>Names of dynamic symbols bound to <paramref name="versionIndex"/> that some relocation references.</summary>
        public static IList<string> RelocatedSymbolsOfVersion(byte[] elf, ushort versionIndex, string fileNameForErrors)
        {
            var sections = ReadSections(elf, fileNameForErrors);
            var dynsym = sections.FirstOrDefault(s => s.Type == ShtDynsym);
            var versym = sections.FirstOrDefault(s => s.Type == ShtGnuVersym);
            if (dynsym == null || versym == null) return new List<string>();
            var strtab = sections[(int)dynsym.Link];
            long symbolCount = dynsym.Size / 24;

            var referenced = new HashSet<long>();
            foreach (var rel in sections.Where(s => (s.Type == ShtRela || s.Type == ShtRel) && s.Link == dynsym.Index))
            {
                long entrySize = rel.EntrySize != 0 ? rel.EntrySize : (rel.Type == ShtRela ? 24 : 16);
                for (long at = rel.Offset; at + entrySize <= rel.Offset + rel.Size; at += entrySize)
                    referenced.Add((long)(U64(elf, at + 8) >> 32));
            }

            var names = new List<string>();
            for (long symbol = 1; symbol < symbolCount; symbol++)
            {
                if ((U16(elf, versym.Offset + symbol * 2) & 0x7fff) != versionIndex || !referenced.Contains(symbol)) continue;
                names.Add(CString(elf, strtab.Offset + U32(elf, dynsym.Offset + symbol * 24)));
            }
            return names;
        }

        /// <summary>
        /// Marks weak every requirement on <paramref name="library"/> whose version is not in <paramref name="available"/>,
        /// provided no relocation uses a symbol of that version. Edits <paramref name="elf"/> in place; idempotent.
        /// </summary>
        public static ElfWeakenResult WeakenMissing(byte[] elf, string library, ISet<string> available, string fileNameForErrors)
        {
            var weakened = new List<ElfVersionNeed>();
            var alreadyWeak = new List<ElfVersionNeed>();
            var unsafeReasons = new List<string>();
            foreach (var need in Read(elf, fileNameForErrors))
            {
                if (need.File != library || available.Contains(need.Version)) continue;
                if (need.IsWeak) { alreadyWeak.Add(need); continue; }
                var used = RelocatedSymbolsOfVersion(elf, need.Index, fileNameForErrors);
                if (used.Count > 0)
                {
                    unsafeReasons.Add(need.Version + " is used by relocated symbol(s) " + string.Join(", ", used.Take(5)));
                    continue;
                }
                ushort flags = (ushort)(need.Flags | WeakFlag);
                elf[need.FlagsOffset] = (byte)(flags & 0xff);
                elf[need.FlagsOffset + 1] = (byte)(flags >> 8);
                weakened.Add(new ElfVersionNeed(need.File, need.Version, flags, need.Index, need.FlagsOffset));
            }
            return new ElfWeakenResult(weakened, alreadyWeak, unsafeReasons);
        }

        /// <summary>
        /// The libstdc++ the dynamic loader would pick for a plain <c>dlopen</c>: <c>LD_LIBRARY_PATH</c> first, then the
        /// usual system folders. Null where none is found (e.g. not Linux).
        /// </summary>
        public static string FindSystemLibrary(string soname)
        {
            var folders = new List<string>();
            string ldPath = Environment.GetEnvironmentVariable("LD_LIBRARY_PATH");
            if (!string.IsNullOrEmpty(ldPath)) folders.AddRange(ldPath.Split(':').Where(p => p.Length > 0));
            folders.AddRange(new[]
            {
                "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                "/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib",
            });
            foreach (var folder in folders)
            {
                string candidate = Path.Combine(folder, soname);
                if (System.IO.File.Exists(candidate)) return candidate;
            }
            return null;
        }

        static List<Section> ReadSections(byte[] elf, string name)
        {
            if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
                throw new InvalidDataException(name + ": not an ELF file (bad magic at offset 0)");
            if (elf[4] != 2 || elf[5] != 1)
                throw new InvalidDataException(name + ": only 64-bit little-endian ELF is supported (EI_CLASS=" + elf[4] + ", EI_DATA=" + elf[5] + ")");
            long shoff = (long)U64(elf, 0x28);
            int shentsize = U16(elf, 0x3a), shnum = U16(elf, 0x3c);
            if (shentsize < 64 || shoff <= 0 || shoff + (long)shentsize * shnum > elf.Length)
                throw new InvalidDataException(name + ": section header table out of range (offset " + shoff + ", " + shnum + " entries)");
            var sections = new List<Section>(shnum);
            for (int i = 0; i < shnum; i++)
            {
                long h = shoff + (long)i * shentsize;
                var s = new Section
                {
                    Index = i, Type = U32(elf, h + 4), Offset = (long)U64(elf, h + 24), Size = (long)U64(elf, h + 32),
                    Link = U32(elf, h + 40), Info = U32(elf, h + 44), EntrySize = (long)U64(elf, h + 56),
                };
                if (s.Type != 8 /* SHT_NOBITS */ && s.Offset + s.Size > elf.Length)
                    throw new InvalidDataException(name + ": section " + i + " extends past the end of the file (offset " + s.Offset + ")");
                sections.Add(s);
            }
            return sections;
        }

        static ushort U16(byte[] b, long at) { Check(b, at, 2); return (ushort)(b[at] | b[at + 1] << 8); }
        static uint U32(byte[] b, long at) { Check(b, at, 4); return BitConverter.ToUInt32(b, (int)at); }
        static ulong U64(byte[] b, long at) { Check(b, at, 8); return BitConverter.ToUInt64(b, (int)at); }
        static void Check(byte[] b, long at, int width)
        {
            if (at < 0 || at + width > b.Length) throw new InvalidDataException("ELF read at offset " + at + " is past the end of the file");
        }
        static string CString(byte[] b, long at)
        {
            long end = at;
            while (end < b.Length && b[end] != 0) end++;
            return Encoding.ASCII.GetString(b, (int)at, (int)(end - at));
        }
    }
}

#if !GPTSHARP_LIBRARY
namespace GptSharp.Build
{
    using GptSharp.Runtime;
    using Microsoft.Build.Framework;
    using Microsoft.Build.Utilities;

    /// <summary>
    /// MSBuild task: for each native file, marks weak the version requirements on <see cref="Library"/> that the system's
    /// copy lacks, when no relocation needs them. Writes through a temp file and a rename, so a hard link into the NuGet
    /// cache is never written through. Does nothing where the system library has every version (or is not found).
    /// </summary>
    public class WeakenMissingElfVersions : Task
    {
        [Required] public ITaskItem[] Files { get; set; }
        public string Library { get; set; } = "libstdc++.so.6";

        public override bool Execute()
        {
            string system = ElfVersionNeeds.FindSystemLibrary(Library);
            if (system == null)
            {
                Log.LogMessage(MessageImportance.Low, "GptSharp: no system " + Library + " found; native files left as they are.");
                return true;
            }
            var available = ElfVersionNeeds.ReadDefinitions(System.IO.File.ReadAllBytes(system), system);
            foreach (var item in Files)
            {
                string path = item.ItemSpec;
                byte[] elf = System.IO.File.ReadAllBytes(path);
                var result = ElfVersionNeeds.WeakenMissing(elf, Library, available, path);
                foreach (var reason in result.UnsafeReasons)
                    Log.LogWarning("GptSharp: " + path + ": cannot relax " + reason + "; it needs a newer " + Library + " than " + system + ".");
                if (result.Weakened.Count == 0) continue;
                string temp = path + ".gptsharp-tmp";
                System.IO.File.WriteAllBytes(temp, elf);
                System.IO.File.Replace(temp, path, null);
                Log.LogMessage(MessageImportance.High, "GptSharp: " + Path.GetFileName(path) + ": marked weak " +
                    string.Join(", ", result.Weakened.Select(n => n.Version)) + " (missing from " + system + ", no relocation uses it)");
            }
            return !Log.HasLoggedErrors;
        }
    }
}
#endif
