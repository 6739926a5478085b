using GptSharp.Models;
namespace GptSharp.Encoders;

/// <summary>
/// Shape of a BERT encoder: token + position + segment embeddings, post-norm Transformer layers with bidirectional
/// attention and exact GELU, an MLM head tied to the token embeddings, and (for fine-tuning) a pooler and classifier.
/// </summary>
public sealed record BertConfig
{
    public int VocabSize { get; init; } = 8192;
    /// <summary>Longest input in tokens, [CLS] and [SEP] included (BERT's max_position_embeddings).</summary>
    public int ContextLength { get; init; } = 128;
    public int Layers { get; init; } = 4;
    public int Heads { get; init; } = 4;
    public int Width { get; init; } = 128;
    public double MlpRatio { get; init; } = 4;
    /// <summary>Dropout on embeddings, attention probabilities and sub-layer outputs (BERT: 0.1).</summary>
    public double Dropout { get; init; } = 0.1;
    /// <summary>Segment (token type) ids: 2 in BERT, for sentence pairs.</summary>
    public int Segments { get; init; } = 2;
    public double NormEpsilon { get; init; } = 1e-12;

    public int HeadDim => Width / Heads;

    /// <summary>Throws naming the first field that is out of range or inconsistent.</summary>
    public BertConfig Validate()
    {
        if (VocabSize < 8) throw new ArgumentOutOfRangeException(nameof(VocabSize), VocabSize, "VocabSize must be at least 8.");
        if (ContextLength < 3) throw new ArgumentOutOfRangeException(nameof(ContextLength), ContextLength, "ContextLength must be at least 3 ([CLS], one token, [SEP]).");
        if (Layers < 1) throw new ArgumentOutOfRangeException(nameof(Layers), Layers, "Layers must be at least 1.");
        if (Heads < 1 || Width % Heads != 0) throw new ArgumentOutOfRangeException(nameof(Heads), Heads, $"Width {Width} must be divisible by Heads.");
        if (MlpRatio <= 0) throw new ArgumentOutOfRangeException(nameof(MlpRatio), MlpRatio, "MlpRatio must be positive.");
        if (Dropout is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout, "Dropout must be in [0, 1).");
        if (Segments < 1) throw new ArgumentOutOfRangeException(nameof(Segments), Segments, "Segments must be at least 1.");
        return this;
    }

    /// <summary>The shared Transformer blocks' settings for this encoder (bias, LayerNorm, exact GELU, full attention heads).</summary>
    public GptConfig BlockConfig() => new()
    {
        VocabSize = VocabSize, ContextLength = ContextLength, Layers = Layers, Heads = Heads, KvHeads = Heads, Width = Width,
        MlpRatio = MlpRatio, Dropout = Dropout, Activation = ActivationKind.Gelu, Bias = true, NormEpsilon = NormEpsilon,
    };

    /// <summary>Named presets: <c>tiny</c> (~2M parameters with an 8K vocab), <c>small</c> (~20M), <c>base</c> (BERT-base's shape).</summary>
    public static BertConfig Preset(string name, int vocabSize) => name switch
    {
        "tiny" => new BertConfig { VocabSize = vocabSize, ContextLength = 128, Layers = 4, Heads = 4, Width = 128 },
        "small" => new BertConfig { VocabSize = vocabSize, ContextLength = 256, Layers = 6, Heads = 8, Width = 512 },
        "base" => new BertConfig { VocabSize = vocabSize, ContextLength = 512, Layers = 12, Heads = 12, Width = 768 },
        _ => throw new ArgumentException($"Unknown BERT preset '{name}': expected tiny, small or base.", nameof(name)),
    };
}
