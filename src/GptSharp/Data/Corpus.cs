using System.IO.Compression;
using System.Text;
using System.Text.Json;

namespace GptSharp.Data;

/// <summary>One document of a corpus: its text, the record's other string fields (title, author, label, ...) and, for JSON lines, its line number.</summary>
public sealed record Document(string Text, IReadOnlyDictionary<string, string> Fields, int Line = 0)
{
    public string? Field(string name) => Fields.TryGetValue(name, out var value) ? value : null;
}

/// <summary>
/// Reads corpora: the embedded ones by name (<see cref="EmbeddedNames"/>) or a user's files. A file may be JSON lines
/// with a <c>text</c> field (<c>.jsonl</c>, <c>.jsonl.gz</c>) or plain UTF-8 text (<c>.txt</c>, <c>.txt.gz</c>), where a
/// blank line separates documents. Every error names the file and, where it applies, the line.
/// </summary>
public static class Corpus
{
    /// <summary>The corpora shipped in <c>data/</c>.</summary>
    public static IReadOnlyList<string> EmbeddedNames { get; } = ["tang", "songci", "sotu", "moby-dick", "spam", "brown"];

    /// <summary>The folder with the embedded corpora: beside the program, or found walking up from the current folder.</summary>
    public static string DataDirectory()
    {
        string beside = Path.Combine(AppContext.BaseDirectory, "data");
        if (File.Exists(Path.Combine(beside, "tang.jsonl.gz"))) return beside;
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "data");
            if (File.Exists(Path.Combine(candidate, "tang.jsonl.gz"))) return candidate;
        }
        throw new DirectoryNotFoundException($"The embedded corpora (data/tang.jsonl.gz, ...) were not found beside the program ({beside}) or above the current folder.");
    }

    /// <summary>Resolves an embedded corpus name to its file; anything else is taken as a path.</summary>
    public static string ResolvePath(string nameOrPath) =>
        EmbeddedNames.Contains(nameOrPath) ? Path.Combine(DataDirectory(), nameOrPath + ".jsonl.gz") : nameOrPath;

    /// <summary>Reads all documents of a corpus, lazily. Throws if the corpus holds no text at all.</summary>
    public static IEnumerable<Document> Read(string nameOrPath)
    {
        string path = ResolvePath(nameOrPath);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Corpus '{nameOrPath}' not found: no file at '{path}'. Embedded corpora: {string.Join(", ", EmbeddedNames)}.", path);
        return ReadFile(path);
    }

    static IEnumerable<Document> ReadFile(string path)
    {
        string lower = path.ToLowerInvariant();
        bool gz = lower.EndsWith(".gz");
        bool jsonl = lower.EndsWith(".jsonl") || lower.EndsWith(".jsonl.gz") || lower.EndsWith(".json.gz");
        int count = 0;
        foreach (var doc in jsonl ? ReadJsonLines(path, gz) : ReadPlainText(path, gz))
        {
            count++;
            yield return doc;
        }
        if (count == 0) throw new InvalidDataException($"{path}: the corpus is empty (no document with text).");
    }

    static IEnumerable<Document> ReadJsonLines(string path, bool gz)
    {
        int lineNumber = 0;
        foreach (string line in ReadLines(path, gz))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            Dictionary<string, string> fields;
            try
            {
                using var json = JsonDocument.Parse(line);
                if (json.RootElement.ValueKind != JsonValueKind.Object)
                    throw new InvalidDataException($"{path}:{lineNumber}: expected a JSON object, got {json.RootElement.ValueKind}.");
                fields = [];
                foreach (var property in json.RootElement.EnumerateObject())
                    fields[property.Name] = property.Value.ValueKind == JsonValueKind.String ? property.Value.GetString()! : property.Value.GetRawText();
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{path}:{lineNumber}: malformed JSON: {e.Message}", e);
            }
            if (!fields.TryGetValue("text", out string? text) || string.IsNullOrEmpty(text))
                throw new InvalidDataException($"{path}:{lineNumber}: field 'text' is missing or empty.");
            yield return new Document(text, fields, lineNumber);
        }
    }

    static IEnumerable<Document> ReadPlainText(string path, bool gz)
    {
        var paragraph = new StringBuilder();
        foreach (string line in ReadLines(path, gz))
        {
            if (line.Trim().Length == 0)
            {
                if (paragraph.Length > 0) yield return new Document(paragraph.ToString(), new Dictionary<string, string>());
                paragraph.Clear();
                continue;
            }
            if (paragraph.Length > 0) paragraph.Append('\n');
            paragraph.Append(line);
        }
        if (paragraph.Length > 0) yield return new Document(paragraph.ToString(), new Dictionary<string, string>());
    }

    /// <summary>Lines of a UTF-8 file; invalid UTF-8 is an error that names the line, never silently replaced.</summary>
    static IEnumerable<string> ReadLines(string path, bool gz)
    {
        using var file = File.OpenRead(path);
        using Stream stream = gz ? new GZipStream(file, CompressionMode.Decompress) : file;
        var strict = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        var buffer = new byte[1 << 16];
        var line = new List<byte>(256);
        int lineNumber = 0;
        while (true)
        {
            int read;
            try
            {
                read = stream.Read(buffer, 0, buffer.Length);
            }
            catch (InvalidDataException e)
            {
                throw new InvalidDataException($"{path}: corrupt gzip data near line {lineNumber + 1}: {e.Message}", e);
            }
            if (read == 0) break;
            for (int i = 0; i < read; i++)
            {
                if (buffer[i] != (byte)'\n') { line.Add(buffer[i]); continue; }
                yield return DecodeLine(line, ++lineNumber);
                line.Clear();
            }
        }
        if (line.Count > 0) yield return DecodeLine(line, ++lineNumber);

        string DecodeLine(List<byte> bytes, int number)
        {
            var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes);
            if (number == 1 && span.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) span = span[3..]; // byte-order mark
            if (span.Length > 0 && span[^1] == (byte)'\r') span = span[..^1];
            try
            {
                return strict.GetString(span);
            }
            catch (DecoderFallbackException e)
            {
                int offset = e.Index >= 0 ? e.Index : 0;
                throw new InvalidDataException($"{path}:{number}: invalid UTF-8 at byte {offset + 1} of the line.", e);
            }
        }
    }
}
