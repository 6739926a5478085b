using System.Globalization;
using System.IO.Compression;
using System.Text;

namespace GptSharp.Data;

/// <summary>A tone class of classical prosody: level (平) or oblique (仄).</summary>
public enum ToneClass { Level, Oblique }

/// <summary>
/// The 14 rhyme groups of the modern standard (中華新韻), named by their first character: Mandarin finals that rhyme
/// today. <see cref="Zhi"/> holds the apical vowel of zhi/chi/shi/ri/zi/ci/si, <see cref="Qi"/> i, ü and er.
/// </summary>
public enum RhymeGroup { Ma, Bo, Jie, Kai, Wei, Hao, You, Han, Wen, Tang, Geng, Qi, Zhi, Gu }

/// <summary>One Mandarin reading of a character: its syllable without tone, its tone (1–4, 5 neutral), class and group.</summary>
public sealed record Reading(string Syllable, int Tone, RhymeGroup? Group)
{
    /// <summary>Tones 1 and 2 are level, 3 and 4 oblique (the modern standard); the neutral tone counts as either.</summary>
    public IEnumerable<ToneClass> Classes => Tone switch
    {
        1 or 2 => [ToneClass.Level],
        3 or 4 => [ToneClass.Oblique],
        _ => [ToneClass.Level, ToneClass.Oblique],
    };

    /// <summary>A reading as the phonology file writes it: syllable letters (v for ü) and a tone digit, e.g. <c>guang1</c>.</summary>
    public static Reading Parse(string text)
    {
        if (text.Length < 2 || text[^1] is < '1' or > '5' || !text[..^1].All(c => c is >= 'a' and <= 'z'))
            throw new FormatException($"'{text}' is not a reading (letters a–z, then a tone digit 1–5).");
        string syllable = text[..^1];
        return new Reading(syllable, text[^1] - '0', GroupOf(syllable));
    }

    static readonly string[] Initials = ["zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r", "z", "c", "s"];

    /// <summary>The rhyme group of a toneless syllable, from its final; null for syllables outside the groups (ng, hm).</summary>
    public static RhymeGroup? GroupOf(string syllable)
    {
        string initial = Initials.FirstOrDefault(syllable.StartsWith) ?? "";
        string final = syllable[initial.Length..];
        if (initial.Length == 0 && final.Length > 0 && final[0] is 'y' or 'w') final = Glide(final);
        if (initial is "j" or "q" or "x" && final.StartsWith('u')) final = "v" + final[1..];   // ju is jü
        if (final == "i" && initial is "zh" or "ch" or "sh" or "r" or "z" or "c" or "s") return RhymeGroup.Zhi;
        return final switch
        {
            "a" or "ia" or "ua" => RhymeGroup.Ma,
            "o" or "e" or "uo" or "io" => RhymeGroup.Bo,
            "ie" or "ve" or "ue" => RhymeGroup.Jie,
            "ai" or "uai" => RhymeGroup.Kai,
            "ei" or "ui" or "uei" => RhymeGroup.Wei,
            "ao" or "iao" => RhymeGroup.Hao,
            "ou" or "iu" or "iou" => RhymeGroup.You,
            "an" or "ian" or "uan" or "van" => RhymeGroup.Han,
            "en" or "in" or "un" or "uen" or "vn" => RhymeGroup.Wen,
            "ang" or "iang" or "uang" => RhymeGroup.Tang,
            "eng" or "ing" or "ong" or "iong" or "ueng" => RhymeGroup.Geng,
            "i" or "v" or "er" => RhymeGroup.Qi,
            "u" => RhymeGroup.Gu,
            _ => null,
        };
    }

    // y and w spell the medials i, u and ü where no initial stands before them.
    static string Glide(string final) => final switch
    {
        "yi" => "i", "yin" => "in", "ying" => "ing", "yu" => "v", "yue" => "ve", "yuan" => "van", "yun" => "vn",
        "wu" => "u", "weng" => "ueng",
        _ when final[0] == 'y' => "i" + final[1..],
        _ => "u" + final[1..],
    };
}

/// <summary>
/// Every Mandarin reading of each CJK character, read from <c>data/phonology.tsv.gz</c> (built from the npm package
/// pinyin-pro by <c>scripts/build-phonology.mjs</c>). A polyphonic character keeps all its readings: a rule of verse is
/// met when some reading meets it.
/// </summary>
public sealed class Phonology
{
    readonly Dictionary<string, Reading[]> _readings;

    Phonology(Dictionary<string, Reading[]> readings) => _readings = readings;

    /// <summary>Characters in the table.</summary>
    public int Count => _readings.Count;

    /// <summary>The readings of one character (a string of one text element), or an empty list when the table lacks it.</summary>
    public IReadOnlyList<Reading> Of(string character) => _readings.TryGetValue(character, out var readings) ? readings : [];

    /// <summary>Whether the table has the character.</summary>
    public bool Knows(string character) => _readings.ContainsKey(character);

    /// <summary>The table shipped in <c>data/</c> (read once per process: it is read-only).</summary>
    public static Phonology Embedded() => EmbeddedTable.Value;

    static readonly Lazy<Phonology> EmbeddedTable = new(() => Load(Path.Combine(Corpus.DataDirectory(), "phonology.tsv.gz")));

    /// <summary>Reads a gzipped table; a damaged file is an <see cref="InvalidDataException"/> naming it (and the line).</summary>
    public static Phonology Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no phonology table (build it with node scripts/build-phonology.mjs).", path);
        var readings = new Dictionary<string, Reading[]>(StringComparer.Ordinal);
        int number = 0;
        try
        {
            using var reader = new StreamReader(new GZipStream(File.OpenRead(path), CompressionMode.Decompress), new UTF8Encoding(false, throwOnInvalidBytes: true));
            for (string? line; (line = reader.ReadLine()) is not null;)
            {
                number++;
                if (line.Length == 0 || line[0] == '#') continue;
                string[] fields = line.Split('\t');
                if (fields.Length != 2 || fields[0].Length == 0 || new StringInfo(fields[0]).LengthInTextElements != 1)
                    throw new InvalidDataException($"{path}:{number}: expected a character, a tab and its readings.");
                Reading[] parsed;
                try { parsed = [.. fields[1].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(Reading.Parse)]; }
                catch (FormatException e) { throw new InvalidDataException($"{path}:{number}: {e.Message}"); }
                if (parsed.Length == 0 || !readings.TryAdd(fields[0], parsed))
                    throw new InvalidDataException($"{path}:{number}: '{fields[0]}' has no readings or is listed twice.");
            }
        }
        catch (Exception e) when (e is InvalidDataException or DecoderFallbackException or EndOfStreamException or IOException && e is not FileNotFoundException)
        {
            throw e is InvalidDataException && e.Message.StartsWith(path, StringComparison.Ordinal) ? e
                : new InvalidDataException($"{path}: damaged or truncated ({e.Message.ReplaceLineEndings(" ")}).", e);
        }
        if (readings.Count == 0) throw new InvalidDataException($"{path}: no characters.");
        return new Phonology(readings);
    }
}
