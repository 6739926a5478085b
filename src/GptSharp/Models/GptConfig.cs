namespace GptSharp.Models;

/// <summary>Normalisation layer of a block.</summary>
public enum NormKind { LayerNorm, RmsNorm }
/// <summary>How token positions enter the model.</summary>
public enum PositionKind { Learned, Rotary }
/// <summary>
/// The MLP's non-linearity: GPT-2's tanh-approximated GELU, Llama/PaLM's gated SiLU, BERT's exact GELU, or the squared
/// ReLU of the Primer paper (relu(x)², ungated; the modded-nanogpt and nanochat speedruns use it).
/// </summary>
public enum ActivationKind { GeluTanh, SwiGlu, Gelu, ReluSquared }

/// <summary>
/// Llama 3's rotary scaling (<c>rope_scaling</c> type <c>llama3</c>): long wavelengths are divided by
/// <see cref="Factor"/>, short ones kept, those between blended, relative to <see cref="OriginalContext"/>.
/// </summary>
public sealed record RopeScaling(double Factor, double LowFrequencyFactor, double HighFrequencyFactor, int OriginalContext);

/// <summary>
/// Shape and layout of a decoder-only Transformer. Two families come from the same blocks: GPT-2 (LayerNorm with
/// bias, learned positions, GELU, tied embeddings) and PaLM/Llama (RMSNorm, rotary positions, SwiGLU, grouped-query
/// attention, no bias, optionally PaLM's parallel attention + MLP block).
/// </summary>
public sealed record GptConfig
{
    public int VocabSize { get; init; } = 8192;
    public int ContextLength { get; init; } = 256;
    public int Layers { get; init; } = 4;
    public int Heads { get; init; } = 4;
    /// <summary>Key/value heads; fewer than <see cref="Heads"/> is grouped-query attention, 1 is multi-query.</summary>
    public int KvHeads { get; init; } = 4;
    public int Width { get; init; } = 128;
    /// <summary>MLP hidden width = <see cref="MlpRatio"/> × <see cref="Width"/> (for SwiGLU, two thirds of that, rounded up to 8).</summary>
    public double MlpRatio { get; init; } = 4;
    public double Dropout { get; init; }
    public NormKind Norm { get; init; } = NormKind.LayerNorm;
    public PositionKind Positions { get; init; } = PositionKind.Learned;
    public ActivationKind Activation { get; init; } = ActivationKind.GeluTanh;
    public bool Bias { get; init; } = true;
    public bool TiedEmbeddings { get; init; } = true;
    /// <summary>PaLM's block: attention and MLP read the same normalised input and their outputs are summed.</summary>
    public bool ParallelBlock { get; init; }
    public double RotaryBase { get; init; } = 10000;
    /// <summary>Llama 3's rotary scaling; null: plain rotary frequencies.</summary>
    public RopeScaling? RopeScaling { get; init; }
    public double NormEpsilon { get; init; } = 1e-5;
    /// <summary>Head dimension when it is not Width / Heads (Qwen3, Gemma: <c>head_dim</c>); 0: Width / Heads.</summary>
    public int HeadSize { get; init; }
    /// <summary>MLP hidden width as given (an imported model's <c>intermediate_size</c>); 0: from <see cref="MlpRatio"/>.</summary>
    public int MlpWidth { get; init; }
    /// <summary>Biases on the query, key and value projections only (Qwen2), whatever <see cref="Bias"/> says.</summary>
    public bool QkvBias { get; init; }
    /// <summary>RMSNorm over each head's queries and keys before rotary (Qwen3).</summary>
    public bool QkNorm { get; init; }

    public int HeadDim => HeadSize > 0 ? HeadSize : Width / Heads;

    public int MlpHidden => MlpWidth > 0 ? MlpWidth
        : Activation == ActivationKind.SwiGlu
        ? (int)Math.Ceiling(2.0 / 3.0 * MlpRatio * Width / 8) * 8
        : (int)Math.Round(MlpRatio * Width);

    /// <summary>Throws naming the first field that is out of range or inconsistent.</summary>
    public GptConfig Validate()
    {
        static void Positive(int value, string name)
        {
            if (value <= 0) throw new ArgumentOutOfRangeException(name, value, $"{name} must be positive.");
        }
        Positive(VocabSize, nameof(VocabSize));
        Positive(ContextLength, nameof(ContextLength));
        Positive(Layers, nameof(Layers));
        Positive(Heads, nameof(Heads));
        Positive(KvHeads, nameof(KvHeads));
        Positive(Width, nameof(Width));
        if (HeadSize < 0 || MlpWidth < 0) throw new ArgumentOutOfRangeException(nameof(HeadSize), "HeadSize and MlpWidth must be 0 (derived) or positive.");
        if (HeadSize == 0 && Width % Heads != 0) throw new ArgumentException($"Width ({Width}) must be divisible by Heads ({Heads}), or HeadSize given.", nameof(Width));
        if (RopeScaling is { } scaling && (Positions != PositionKind.Rotary || !(scaling.Factor >= 1) || !(scaling.LowFrequencyFactor > 0)
                || !(scaling.HighFrequencyFactor > scaling.LowFrequencyFactor) || scaling.OriginalContext <= 0))
            throw new ArgumentException("RopeScaling needs rotary positions, Factor >= 1, 0 < LowFrequencyFactor < HighFrequencyFactor and a positive OriginalContext.", nameof(RopeScaling));
        if (Heads % KvHeads != 0) throw new ArgumentException($"Heads ({Heads}) must be divisible by KvHeads ({KvHeads}).", nameof(KvHeads));
        if (Positions == PositionKind.Rotary && HeadDim % 2 != 0) throw new ArgumentException($"Rotary positions need an even head dimension; Width/Heads is {HeadDim}.", nameof(Positions));
        if (!(MlpRatio is > 0 and <= 64)) throw new ArgumentOutOfRangeException(nameof(MlpRatio), MlpRatio, "MlpRatio must be in (0, 64].");
        if (!(RotaryBase > 0) || !(NormEpsilon > 0)) throw new ArgumentOutOfRangeException(nameof(RotaryBase), "RotaryBase and NormEpsilon must be positive.");
        if (Dropout is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout, "Dropout must be in [0, 1).");
        return this;
    }

    /// <summary>GPT-2 layout at a given size.</summary>
    public static GptConfig Gpt2(int vocab, int context, int layers, int heads, int width) => new()
    {
        VocabSize = vocab, ContextLength = context, Layers = layers, Heads = heads, KvHeads = heads, Width = width,
    };

    /// <summary>Llama/PaLM layout at a given size.</summary>
    public static GptConfig Llama(int vocab, int context, int layers, int heads, int kvHeads, int width) => new()
    {
        VocabSize = vocab, ContextLength = context, Layers = layers, Heads = heads, KvHeads = kvHeads, Width = width,
        Norm = NormKind.RmsNorm, Positions = PositionKind.Rotary, Activation = ActivationKind.SwiGlu, Bias = false, TiedEmbeddings = false,
    };

    /// <summary>
    /// Named presets: <c>tiny</c> (~2M parameters with an 8K vocab; minutes on 2 cores), <c>small</c> (~25M),
    /// <c>gpt2-124m</c> (GPT-2 small, with the GPT-2 vocabulary unless another is given). Suffix <c>-llama</c> for the
    /// Llama/PaLM family at the same size (tiny-llama, small-llama).
    /// </summary>
    public static GptConfig Preset(string name, int vocabSize) => name switch
    {
        "tiny" => Gpt2(vocabSize, 128, 4, 4, 128),
        "tiny-llama" => Llama(vocabSize, 128, 4, 4, 2, 128),
        "small" => Gpt2(vocabSize, 256, 6, 8, 512),
        "small-llama" => Llama(vocabSize, 256, 6, 8, 4, 512),
        "gpt2-124m" => Gpt2(vocabSize, 1024, 12, 12, 768),
        _ => throw new ArgumentException($"Unknown preset '{name}': expected tiny, tiny-llama, small, small-llama or gpt2-124m.", nameof(name)),
    };
}
