using GptSharp.Runtime;
using System.Text.Json;
using GptSharp.Tokenization;

namespace GptSharp.Data;

/// <summary>Settings for turning corpora into train/val token shards.</summary>
/// <param name="Corpora">Embedded corpus names or file paths.</param>
/// <param name="ValidationFraction">Share of documents held out, chosen per document from the seed.</param>
/// <param name="Seed">Decides the split.</param>
/// <param name="MaxDocuments">Take at most this many documents from each corpus (0: all).</param>
public sealed record ShardOptions(IReadOnlyList<string> Corpora, double ValidationFraction = 0.02, long Seed = 1337, int MaxDocuments = 0)
{
    public void Validate()
    {
        if (Corpora.Count == 0) throw new ArgumentException("At least one corpus is needed.", nameof(Corpora));
        if (ValidationFraction is <= 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(ValidationFraction), ValidationFraction, "ValidationFraction must be in (0, 1).");
        if (MaxDocuments < 0) throw new ArgumentOutOfRangeException(nameof(MaxDocuments), MaxDocuments, "MaxDocuments must be 0 (all) or positive.");
    }
}

/// <summary>What <see cref="ShardBuilder.Build"/> wrote; saved as <c>meta.json</c> beside the shards.</summary>
public sealed record ShardSummary(
    string Tokenizer, int VocabSize, IReadOnlyList<string> Corpora, long TrainDocuments, long ValDocuments,
    long TrainTokens, long ValTokens, long TextBytes, double Seconds)
{
    public const string TrainFile = "train.bin";
    public const string ValFile = "val.bin";
    public const string MetaFile = "meta.json";

    /// <summary>UTF-8 bytes of text per token: how well the tokenizer compresses this data.</summary>
    public double BytesPerToken => TextBytes / (double)Math.Max(1, TrainTokens + ValTokens - TrainDocuments - ValDocuments);

    public static ShardSummary Load(string directory)
    {
        string path = Path.Combine(directory, MetaFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"No prepared data in '{directory}': {MetaFile} is missing (run `gptsharp data prepare`).", path);
        return JsonSerializer.Deserialize<ShardSummary>(File.ReadAllText(path)) ?? throw new InvalidDataException($"{path}: empty JSON.");
    }
}

/// <summary>
/// Tokenizes corpora into <c>train.bin</c> and <c>val.bin</c>: each document becomes <c>&lt;|bos|&gt;</c> followed by its
/// tokens. Documents are encoded in parallel batches and written in their original order.
/// </summary>
public static class ShardBuilder
{
    public static ShardSummary Build(GptTokenizer tokenizer, string tokenizerReference, ShardOptions options, string outDirectory,
        Action<long>? onDocuments = null)
    {
        options.Validate();
        var started = System.Diagnostics.Stopwatch.StartNew();
        Directory.CreateDirectory(outDirectory);
        var train = new List<ReadOnlyMemory<int>>();
        var val = new List<ReadOnlyMemory<int>>();
        long trainDocs = 0, valDocs = 0, trainTokens = 0, valTokens = 0, textBytes = 0, done = 0;

        foreach (string corpus in options.Corpora)
        {
            int index = 0;
            IEnumerable<Document> documents = Corpus.Read(corpus);
            if (options.MaxDocuments > 0) documents = documents.Take(options.MaxDocuments);
            foreach (var batch in documents.Chunk(1024))
            {
                var encoded = new int[batch.Length][];
                Parallel.For(0, batch.Length, i =>
                {
                    int[] ids = tokenizer.Encode(batch[i].Text);
                    var withBos = new int[ids.Length + 1];
                    withBos[0] = tokenizer.BosId;
                    ids.CopyTo(withBos, 1);
                    encoded[i] = withBos;
                });
                for (int i = 0; i < batch.Length; i++, index++)
                {
                    textBytes += System.Text.Encoding.UTF8.GetByteCount(batch[i].Text);
                    if (IsValidation(options.Seed, corpus, index, options.ValidationFraction))
                    {
                        val.Add(encoded[i]); valDocs++; valTokens += encoded[i].Length;
                    }
                    else
                    {
                        train.Add(encoded[i]); trainDocs++; trainTokens += encoded[i].Length;
                    }
                }
                onDocuments?.Invoke(done += batch.Length);
            }
        }
        if (trainDocs == 0 || valDocs == 0)
            throw new InvalidDataException($"The split left {trainDocs} training and {valDocs} validation documents; both need at least one. Add documents or change the validation fraction.");

        TokenShard.Write(Path.Combine(outDirectory, ShardSummary.TrainFile), tokenizer.VocabSize, train);
        TokenShard.Write(Path.Combine(outDirectory, ShardSummary.ValFile), tokenizer.VocabSize, val);
        var summary = new ShardSummary(tokenizerReference, tokenizer.VocabSize, options.Corpora, trainDocs, valDocs, trainTokens, valTokens,
            textBytes, Math.Round(started.Elapsed.TotalSeconds, 2));
        AtomicFile.WriteAllText(Path.Combine(outDirectory, ShardSummary.MetaFile), JsonSerializer.Serialize(summary, new JsonSerializerOptions { WriteIndented = true }));
        return summary;
    }

    /// <summary>A fixed pseudo-random choice per (seed, corpus, document index), independent of run and machine.</summary>
    public static bool IsValidation(long seed, string corpus, int index, double fraction)
    {
        ulong x = (ulong)seed ^ 0x9E3779B97F4A7C15UL;
        foreach (char c in corpus) x = (x ^ c) * 0x100000001B3UL;
        x ^= (ulong)index * 0xBF58476D1CE4E5B9UL;
        x ^= x >> 30; x *= 0xBF58476D1CE4E5B9UL; x ^= x >> 27; x *= 0x94D049BB133111EBUL; x ^= x >> 31;
        return (x >> 11) * (1.0 / (1UL << 53)) < fraction;
    }
}
