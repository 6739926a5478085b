using GptSharp.Runtime;
using System.Text;

namespace GptSharp.Interop;

/// <summary>GGML tensor types GptSharp writes: F32, F16, Q8_0 (blocks of 32 signed bytes with an F16 scale, 34 bytes)
/// and Q4_0 (blocks of 32 four-bit values with an F16 scale, 18 bytes).</summary>
public enum GgmlType : uint { F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8 }

/// <summary>
/// Writes the GGUF container (version 3) that llama.cpp and its bindings load: a header, typed key/value metadata,
/// tensor descriptions, then the tensor bytes, each aligned to <see cref="Alignment"/>. All integers little-endian.
/// </summary>
/// <remarks>
/// A tensor's dimensions are listed innermost first (ggml's <c>ne</c>): a PyTorch [out, in] matrix is [in, out] here,
/// with the same bytes.
/// </remarks>
public sealed class GgufWriter
{
    public const uint Magic = 0x46554747; // "GGUF" read as a little-endian uint32
    public const uint Version = 3;
    public const int Alignment = 32;

    /// <summary>GGUF's value type codes.</summary>
    public enum ValueType : uint { UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12 }

    readonly List<(string Key, ValueType Type, object Value)> _metadata = [];
    readonly List<(string Name, long[] Dims, GgmlType Type, byte[] Data)> _tensors = [];

    public GgufWriter Add(string key, string value) => AddValue(key, ValueType.String, value);
    public GgufWriter Add(string key, uint value) => AddValue(key, ValueType.UInt32, value);
    public GgufWriter Add(string key, int value) => AddValue(key, ValueType.Int32, value);
    public GgufWriter Add(string key, float value) => AddValue(key, ValueType.Float32, value);
    public GgufWriter Add(string key, bool value) => AddValue(key, ValueType.Bool, value);
    public GgufWriter Add(string key, IReadOnlyList<string> values) => AddValue(key, ValueType.Array, values);
    public GgufWriter Add(string key, IReadOnlyList<int> values) => AddValue(key, ValueType.Array, values);

    GgufWriter AddValue(string key, ValueType type, object value)
    {
        if (_metadata.Any(m => m.Key == key)) throw new ArgumentException($"GGUF key '{key}' is set twice.", nameof(key));
        _metadata.Add((key, type, value));
        return this;
    }

    /// <summary>Adds a tensor; <paramref name="dims"/> innermost first, <paramref name="data"/> its raw bytes.</summary>
    public GgufWriter AddTensor(string name, long[] dims, GgmlType type, byte[] data)
    {
        long elements = dims.Aggregate(1L, (a, b) => a * b);
        long expected = type switch { GgmlType.F32 => elements * 4, GgmlType.F16 => elements * 2, GgmlType.Q4_0 => elements / 32 * 18, _ => elements / 32 * 34 };
        if (type is GgmlType.Q8_0 or GgmlType.Q4_0 && dims[0] % 32 != 0) throw new ArgumentException($"Tensor '{name}': {type} needs rows of a multiple of 32 values; its rows have {dims[0]}.", nameof(dims));
        if (data.LongLength != expected) throw new ArgumentException($"Tensor '{name}': {data.LongLength} bytes for {type} [{string.Join(", ", dims)}], expected {expected}.", nameof(data));
        if (_tensors.Any(t => t.Name == name)) throw new ArgumentException($"Tensor '{name}' is added twice.", nameof(name));
        _tensors.Add((name, dims, type, data));
        return this;
    }

    /// <summary>Writes the file atomically: a kill mid-write leaves any earlier file intact.</summary>
    public void Save(string path) => AtomicFile.Write(path, stream =>
    {
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(Version);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_metadata.Count);
        foreach (var (key, type, value) in _metadata)
        {
            WriteString(w, key);
            w.Write((uint)type);
            WriteValue(w, type, value);
        }
        long offset = 0;
        foreach (var (name, dims, type, data) in _tensors)
        {
            WriteString(w, name);
            w.Write((uint)dims.Length);
            foreach (long d in dims) w.Write((ulong)d);
            w.Write((uint)type);
            w.Write((ulong)offset);
            offset = Aligned(offset + data.LongLength);
        }
        Pad(w);
        foreach (var (_, _, _, data) in _tensors)
        {
            w.Write(data);
            Pad(w);
        }
    });

    static long Aligned(long n) => (n + Alignment - 1) / Alignment * Alignment;

    static void Pad(BinaryWriter w)
    {
        w.Flush();
        long position = w.BaseStream.Position;
        for (long i = position; i < Aligned(position); i++) w.Write((byte)0);
    }

    static void WriteString(BinaryWriter w, string s)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    static void WriteValue(BinaryWriter w, ValueType type, object value)
    {
        switch (value)
        {
            case string s: WriteString(w, s); break;
            case uint u: w.Write(u); break;
            case int i: w.Write(i); break;
            case float f: w.Write(f); break;
            case bool b: w.Write((byte)(b ? 1 : 0)); break;
            case IReadOnlyList<string> strings:
                w.Write((uint)ValueType.String);
                w.Write((ulong)strings.Count);
                foreach (string s in strings) WriteString(w, s);
                break;
            case IReadOnlyList<int> ints:
                w.Write((uint)ValueType.Int32);
                w.Write((ulong)ints.Count);
                foreach (int i in ints) w.Write(i);
                break;
            default: throw new NotSupportedException($"GGUF value of type {type} ({value.GetType().Name}) is not written here.");
        }
    }
}
