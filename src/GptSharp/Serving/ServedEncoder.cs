using System.Text.Json;
using GptSharp.Encoders;
using GptSharp.Runs;
using GptSharp.Tokenization;
using Microsoft.Extensions.AI;

namespace GptSharp.Serving;

/// <summary>Something that turns token ids into one vector: a served GPT (<see cref="ServedModel"/>) or BERT (<see cref="ServedEncoder"/>).</summary>
public interface IEmbeddingModel
{
    string Name { get; }
    GptTokenizer Tokenizer { get; }
    /// <summary>The vectors' length.</summary>
    int Width { get; }
    long Created { get; }
    /// <summary>The embedding of a text's tokens; more than the model reads is an <see cref="ArgumentException"/> with both counts, never cut.</summary>
    float[] Embed(int[] tokens);
}

/// <summary>Microsoft.Extensions.AI's embeddings from any <see cref="IEmbeddingModel"/>.</summary>
static class EmbeddingGeneration
{
    /// <summary>Each text's vector; one the model cannot read whole is refused, naming its index.</summary>
    public static GeneratedEmbeddings<Embedding<float>> Embed(IEmbeddingModel model, IEnumerable<string> values, CancellationToken cancellation)
    {
        var embeddings = new GeneratedEmbeddings<Embedding<float>>();
        int index = 0;
        foreach (string value in values)
        {
            cancellation.ThrowIfCancellationRequested();
            float[] vector;
            try { vector = model.Embed(model.Tokenizer.Encode(value)); }
            catch (ArgumentException e) { throw new ArgumentException($"Text {index}: {e.Message}", nameof(values), e); }
            embeddings.Add(new Embedding<float>(vector) { ModelId = model.Name, CreatedAt = DateTimeOffset.UtcNow });
            index++;
        }
        return embeddings;
    }
}

/// <summary>
/// A BERT run (a <c>bert pretrain</c> or <c>bert finetune</c> folder) served for embeddings: each input as
/// <c>[CLS] tokens [SEP]</c>, its final hidden states pooled (<see cref="Pooling"/>). Also an
/// <see cref="IEmbeddingGenerator{TInput, TEmbedding}"/> for use in process.
/// </summary>
public sealed class ServedEncoder : IEmbeddingModel, IEmbeddingGenerator<string, Embedding<float>>
{
    readonly IDisposable _owner;   // the masked-LM or classifier model the encoder belongs to
    readonly Lock _gate = new();   // one forward pass at a time: requests embed on their own threads

    ServedEncoder(string name, string runDirectory, Bert encoder, IDisposable owner, GptTokenizer tokenizer, Pooling pooling)
    {
        (Name, RunDirectory, Encoder, _owner, Tokenizer, Pooling) = (name, runDirectory, encoder, owner, tokenizer, pooling);
        Created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    }

    public string Name { get; }
    public string RunDirectory { get; }
    public Bert Encoder { get; }
    public GptTokenizer Tokenizer { get; }
    public Pooling Pooling { get; }
    public long Created { get; }
    public int Width => Encoder.Config.Width;
    /// <summary>Tokens of text one input may hold: the context less [CLS] and [SEP].</summary>
    public int MaxTokens => Encoder.Config.ContextLength - 2;

    /// <summary>Whether a run folder holds a BERT (its model.json is a BERT config, or a classifier's with one inside).</summary>
    public static bool IsEncoderRun(string runDirectory)
    {
        if (Checkpoint.Find(runDirectory) is null) return false;
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(Checkpoint.Require(runDirectory), "model.json")));
        return config.RootElement.TryGetProperty("Segments", out _) || config.RootElement.TryGetProperty("Bert", out _);
    }

    /// <summary>Loads <c>name=folder</c> or a folder (named by its last path component).</summary>
    public static ServedEncoder Load(string spec, Pooling pooling = Pooling.Mean)
    {
        var (name, path) = ServedModel.NameAndPath(spec);
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(Checkpoint.Require(path), "model.json")));
        if (config.RootElement.TryGetProperty("Bert", out _))
        {
            var (classifier, _, tokenizer) = BertFinetuneRun.Load(path);
            return new ServedEncoder(name, path, classifier.Encoder, classifier, tokenizer, pooling);
        }
        var (maskedLm, tokens) = BertPretrainRun.Load(path);
        return new ServedEncoder(name, path, maskedLm.Encoder, maskedLm, tokens, pooling);
    }

    public float[] Embed(int[] tokens)
    {
        if (tokens.Length > MaxTokens)
            throw new ArgumentException($"{tokens.Length} tokens; '{Name}' embeds at most {MaxTokens} (its context of {Encoder.Config.ContextLength} less [CLS] and [SEP]).", nameof(tokens));
        if (tokens.Length == 0) throw new ArgumentException("No tokens to embed.", nameof(tokens));
        lock (_gate) return BertEmbeddings.Embed(Encoder, [[Tokenizer.BosId, .. tokens, Tokenizer.EosId]], Tokenizer.PadId, Pooling)[0];
    }

    public Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        Task.FromResult(EmbeddingGeneration.Embed(this, values, cancellationToken));

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(EmbeddingGeneratorMetadata) ? new EmbeddingGeneratorMetadata("gptsharp", null, Name, Width)
        : serviceType.IsInstanceOfType(this) ? this
        : null;

    public void Dispose() => _owner.Dispose();
}
