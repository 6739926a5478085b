using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Runtime;

/// <summary>
/// Reads and writes the safetensors format: an 8-byte little-endian header length, a JSON header mapping each tensor
/// name to its dtype, shape and byte range, then the raw little-endian tensor bytes. No code runs on load (unlike
/// pickle), so a checkpoint from anyone is safe to open.
/// </summary>
public static class SafeTensors
{
    static readonly Dictionary<ScalarType, (string Name, int Size)> Types = new()
    {
        [ScalarType.Float32] = ("F32", 4), [ScalarType.Float16] = ("F16", 2), [ScalarType.BFloat16] = ("BF16", 2),
        [ScalarType.Float64] = ("F64", 8), [ScalarType.Int64] = ("I64", 8), [ScalarType.Int32] = ("I32", 4),
        [ScalarType.Byte] = ("U8", 1), [ScalarType.Int8] = ("I8", 1), [ScalarType.Bool] = ("BOOL", 1),
    };

    /// <summary>Writes tensors (in name order) and string metadata to <paramref name="path"/>, atomically.</summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Save(path, tensors.Select(kv => (kv.Key, kv.Value.dtype, kv.Value.shape)).ToList(), name => (tensors[name], false), metadata);

    /// <summary>
    /// Writes tensors described by <paramref name="layout"/> whose data <paramref name="fetch"/> supplies one at a time,
    /// in name order (so a caller can produce each tensor just before it is written — received from another process,
    /// say — and have it disposed right after, when fetch says it is owned).
    /// </summary>
    public static void Save(string path, IReadOnlyList<(string Name, ScalarType Type, long[] Shape)> layout,
        Func<string, (Tensor Tensor, bool Dispose)> fetch, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
        {
            var meta = new JsonObject();
            foreach (var (key, value) in metadata) meta[key] = value;
            header["__metadata__"] = meta;
        }
        var ordered = layout.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        long offset = 0;
        foreach (var (name, dtype, shape) in ordered)
        {
            if (!Types.TryGetValue(dtype, out var type)) throw new NotSupportedException($"Tensor '{name}': dtype {dtype} has no safetensors code here.");
            long size = shape.Aggregate(1L, (a, b) => a * b) * type.Size;
            header[name] = new JsonObject
            {
                ["dtype"] = type.Name,
                ["shape"] = new JsonArray([.. shape.Select(d => (JsonNode)d)]),
                ["data_offsets"] = new JsonArray(offset, offset + size),
            };
            offset += size;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8; // the data starts 8-byte aligned; the header is padded with spaces
        AtomicFile.Write(path, stream =>
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
            stream.Write(length);
            stream.Write(json);
            for (int i = json.Length; i < padded; i++) stream.WriteByte((byte)' ');
            foreach (var (name, dtype, shape) in ordered)
            {
                var (tensor, dispose) = fetch(name);
                try
                {
                    if (tensor.dtype != dtype || !tensor.shape.SequenceEqual(shape))
                        throw new InvalidOperationException($"Tensor '{name}' arrived as {tensor.dtype} [{string.Join(", ", tensor.shape)}], not the announced {dtype} [{string.Join(", ", shape)}].");
                    using var scope = NewDisposeScope(); // the detached and copied handles too, not only the last
                    stream.Write(tensor.detach().cpu().contiguous().bytes);
                }
                finally
                {
                    if (dispose) tensor.Dispose();
                }
            }
        });
    }

    /// <summary>
    /// Reads every tensor (on the CPU) and the metadata. Every problem is a one-line <see cref="InvalidDataException"/>
    /// naming the file and the tensor or field: a header of the wrong JSON shape, a duplicate name, a negative or
    /// overflowing shape, a byte range outside the file, and (unless <paramref name="allowNonFinite"/>) a floating-point
    /// tensor holding NaN or infinity, which would make every later answer NaN.
    /// </summary>
    public static (Dictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) Load(string path, bool allowNonFinite = false)
    {
        var tensors = new Dictionary<string, Tensor>();
        try
        {
            var metadata = Read(path, _ => true, (name, tensor) => tensors[name] = tensor, allowNonFinite);
            return (tensors, metadata);
        }
        catch
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads the tensors <paramref name="wanted"/> picks one at a time and hands each to <paramref name="use"/>, which
    /// owns it from then on (and may dispose it at once): a model loads holding its own weights and one tensor more,
    /// never the whole file. Errors as <see cref="Load"/>'s; the header is checked whole before any tensor is read.
    /// </summary>
    /// <returns>The file's metadata.</returns>
    public static Dictionary<string, string> Read(string path, Func<string, bool> wanted, Action<string, Tensor> use, bool allowNonFinite = false)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"No safetensors file at '{path}'.", path);
        RegularFile.Require(path, "a safetensors file");
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        long fileLength = stream.Length;
        if (fileLength < 8) throw new InvalidDataException($"{path}: {fileLength} bytes is too short for a safetensors file.");
        Span<byte> lengthBytes = stackalloc byte[8];
        stream.ReadExactly(lengthBytes);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > (ulong)fileLength - 8 || headerLength > int.MaxValue) throw new InvalidDataException($"{path}: header length {headerLength} is past the end of the file.");
        byte[] headerBytes = new byte[headerLength];
        stream.ReadExactly(headerBytes);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(headerBytes);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: malformed JSON header: {OneLine(e.Message)}", e);
        }
        using var _ = document;
        var header = document.RootElement;
        if (header.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: the header is a JSON {Kind(header)}, expected an object of tensors.");
        long dataStart = 8 + (long)headerLength;
        var metadata = new Dictionary<string, string>();
        var entries = new List<(string Name, ScalarType Type, long[] Shape, long Offset, long Size)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        try
        {
            foreach (var entry in header.EnumerateObject())
            {
                string name = entry.Name;
                if (!seen.Add(name)) throw new InvalidDataException($"{path}: '{name}' appears twice in the header.");
                var node = entry.Value;
                if (name == "__metadata__")
                {
                    if (node.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: __metadata__ is a JSON {Kind(node)}, expected an object of strings.");
                    foreach (var item in node.EnumerateObject())
                        metadata[item.Name] = item.Value.ValueKind == JsonValueKind.String ? item.Value.GetString()!
                            : throw new InvalidDataException($"{path}: metadata '{item.Name}' is a JSON {Kind(item.Value)}, expected a string.");
                    continue;
                }
                string where = $"{path}: tensor '{name}'";
                if (node.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{where} is a JSON {Kind(node)}, expected an object with dtype, shape and data_offsets.");
                string dtypeName = node.TryGetProperty("dtype", out var dtype) && dtype.ValueKind == JsonValueKind.String ? dtype.GetString()!
                    : throw new InvalidDataException($"{where} needs a dtype string (F32, F16, BF16, ...).");
                var type = Types.FirstOrDefault(kv => kv.Value.Name == dtypeName);
                if (type.Value.Name is null) throw new InvalidDataException($"{where} has unsupported dtype {dtypeName}.");
                long[] shape = Integers(node, "shape", where, count: null);
                long[] offsets = Integers(node, "data_offsets", where, count: 2);
                long expected;
                try { expected = checked(shape.Aggregate(1L, (a, b) => a * b) * type.Value.Size); }
                catch (OverflowException) { throw new InvalidDataException($"{where} has shape [{string.Join(", ", shape)}], whose size overflows."); }
                if (offsets[1] - offsets[0] != expected || offsets[0] > offsets[1] || dataStart + offsets[1] > fileLength)
                    throw new InvalidDataException($"{where} ({dtypeName} {string.Join('x', shape)}) has byte range [{offsets[0]}, {offsets[1]}), which does not match its size {expected} or the file.");
                if (expected > int.MaxValue) throw new InvalidDataException($"{where} is {expected:N0} bytes; tensors over 2 GB are not read here.");
                entries.Add((name, type.Key, shape, dataStart + offsets[0], expected));
            }
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidDataException($"{path}: the header is not valid text ({e.Message})", e);
        }
        foreach (var (name, type, shape, offset, size) in entries.Where(e => wanted(e.Name)).OrderBy(e => e.Offset))
        {
            var tensor = empty(shape, type);
            try
            {
                stream.Position = offset;
                stream.ReadExactly(tensor.bytes);   // straight into the tensor's storage: no second copy of it
                if (!allowNonFinite && tensor.is_floating_point() && !tensor.isfinite().all().item<bool>())
                    throw new InvalidDataException($"{path}: tensor '{name}' holds NaN or infinite values; the weights are broken (allow them explicitly to inspect such a file).");
            }
            catch
            {
                tensor.Dispose();
                throw;
            }
            use(name, tensor);
        }
        return metadata;
    }

    static long[] Integers(JsonElement node, string field, string where, int? count)
    {
        if (!node.TryGetProperty(field, out var array) || array.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{where} needs {field} as an array of integers.");
        var values = new List<long>();
        foreach (var item in array.EnumerateArray())
            values.Add(item.ValueKind == JsonValueKind.Number && item.TryGetInt64(out long value) && value >= 0 ? value
                : throw new InvalidDataException($"{where}: {field} holds {item.GetRawText()}, expected integers of at least 0."));
        if (count is { } n && values.Count != n) throw new InvalidDataException($"{where}: {field} has {values.Count} numbers, expected {n}.");
        return [.. values];
    }

    static string Kind(JsonElement element) => element.ValueKind.ToString().ToLowerInvariant();

    static string OneLine(string text) => text.ReplaceLineEndings(" ");
}
