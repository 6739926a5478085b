using GptSharp.Runtime;
using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;

namespace GptSharp.Data;

/// <summary>
/// A binary file of token ids. Layout (little-endian): a 32-byte header — magic <c>GPTSHARD</c> (8 bytes), format
/// version (u32, = 1), token width in bytes (u32: 2 for vocabularies up to 65,536, else 4), token count (u64), vocab
/// size (u32), reserved (u32, 0) — then the tokens. Documents are separated by <c>&lt;|bos|&gt;</c>, which begins each.
/// </summary>
public static class TokenShard
{
    public const int HeaderSize = 32;
    public const int FormatVersion = 1;
    static ReadOnlySpan<byte> Magic => "GPTSHARD"u8;

    /// <summary>The header of a shard file, checked against the file's size.</summary>
    public readonly record struct Header(int Version, int TokenWidth, long TokenCount, int VocabSize);

    /// <summary>Reads and validates the header; errors name the file and the offending field and offset.</summary>
    public static Header ReadHeader(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Token shard not found: '{path}'.", path);
        long length = new FileInfo(path).Length;
        if (length < HeaderSize) throw new InvalidDataException($"{path}: {length} bytes is shorter than the {HeaderSize}-byte shard header.");
        Span<byte> header = stackalloc byte[HeaderSize];
        using (var file = File.OpenRead(path)) file.ReadExactly(header);
        if (!header[..8].SequenceEqual(Magic)) throw new InvalidDataException($"{path}: not a GptSharp token shard (bad magic at offset 0).");
        int version = BinaryPrimitives.ReadInt32LittleEndian(header[8..]);
        if (version != FormatVersion) throw new InvalidDataException($"{path}: unsupported shard version {version} at offset 8 (expected {FormatVersion}).");
        int width = BinaryPrimitives.ReadInt32LittleEndian(header[12..]);
        if (width is not (2 or 4)) throw new InvalidDataException($"{path}: token width {width} at offset 12 must be 2 or 4.");
        long count = BinaryPrimitives.ReadInt64LittleEndian(header[16..]);
        int vocab = BinaryPrimitives.ReadInt32LittleEndian(header[24..]);
        if (vocab <= 0 || (width == 2 && vocab > 65536)) throw new InvalidDataException($"{path}: vocab size {vocab} at offset 24 does not fit token width {width}.");
        long expected = HeaderSize + count * width;
        if (count < 0 || expected != length)
            throw new InvalidDataException($"{path}: header says {count} tokens of {width} bytes ({expected} bytes with header) but the file has {length} bytes; it is truncated or corrupt.");
        return new Header(version, width, count, vocab);
    }

    /// <summary>Writes tokens to a shard atomically (temp file + rename). Ids must be below <paramref name="vocabSize"/>.</summary>
    public static void Write(string path, int vocabSize, IEnumerable<ReadOnlyMemory<int>> chunks)
    {
        int width = vocabSize <= 65536 ? 2 : 4;
        AtomicFile.Write(path, stream =>
        {
            stream.Write(new byte[HeaderSize]);
            long count = 0;
            var buffer = new byte[1 << 16];
            foreach (var chunk in chunks)
            {
                var ids = chunk.Span;
                for (int start = 0; start < ids.Length; start += buffer.Length / width)
                {
                    int n = Math.Min(buffer.Length / width, ids.Length - start);
                    for (int i = 0; i < n; i++)
                    {
                        int id = ids[start + i];
                        if ((uint)id >= (uint)vocabSize) throw new ArgumentOutOfRangeException(nameof(chunks), id, $"Token id {id} is outside the vocabulary [0, {vocabSize}).");
                        if (width == 2) BinaryPrimitives.WriteUInt16LittleEndian(buffer.AsSpan(i * 2), (ushort)id);
                        else BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(i * 4), id);
                    }
                    stream.Write(buffer, 0, n * width);
                    count += n;
                }
            }
            Span<byte> header = stackalloc byte[HeaderSize];
            header.Clear();
            Magic.CopyTo(header);
            BinaryPrimitives.WriteInt32LittleEndian(header[8..], FormatVersion);
            BinaryPrimitives.WriteInt32LittleEndian(header[12..], width);
            BinaryPrimitives.WriteInt64LittleEndian(header[16..], count);
            BinaryPrimitives.WriteInt32LittleEndian(header[24..], vocabSize);
            stream.Position = 0;
            stream.Write(header);
        });
    }
}

/// <summary>A token shard mapped into memory for random access without loading it whole.</summary>
public sealed unsafe class MappedTokenShard : IDisposable
{
    readonly MemoryMappedFile _file;
    readonly MemoryMappedViewAccessor _view;
    readonly byte* _tokens;

    public MappedTokenShard(string path)
    {
        Path = path;
        Header = TokenShard.ReadHeader(path);
        _file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* start = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref start);
        _tokens = start + _view.PointerOffset + TokenShard.HeaderSize;
    }

    public string Path { get; }
    public TokenShard.Header Header { get; }
    public long Count => Header.TokenCount;

    public int this[long index]
    {
        get
        {
            if ((ulong)index >= (ulong)Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"{Path} has {Count} tokens.");
            return Header.TokenWidth == 2 ? BinaryPrimitives.ReadUInt16LittleEndian(new ReadOnlySpan<byte>(_tokens + index * 2, 2))
                                          : BinaryPrimitives.ReadInt32LittleEndian(new ReadOnlySpan<byte>(_tokens + index * 4, 4));
        }
    }

    /// <summary>Copies tokens [start, start + destination.Length) into <paramref name="destination"/>.</summary>
    public void CopyTo(long start, Span<long> destination)
    {
        if (start < 0 || start + destination.Length > Count)
            throw new ArgumentOutOfRangeException(nameof(start), start, $"Range [{start}, {start + destination.Length}) is outside {Path}'s {Count} tokens.");
        if (Header.TokenWidth == 2)
        {
            var source = new ReadOnlySpan<ushort>(_tokens + start * 2, destination.Length);
            for (int i = 0; i < source.Length; i++) destination[i] = source[i];
        }
        else
        {
            var source = new ReadOnlySpan<int>(_tokens + start * 4, destination.Length);
            for (int i = 0; i < source.Length; i++) destination[i] = source[i];
        }
    }

    public void Dispose()
    {
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }
}
