using GptSharp.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace GptSharp.Encoders;

/// <summary>
/// BERT's encoder: embeddings (token + position + segment, then LayerNorm and dropout) and post-norm layers built from
/// the shared attention and MLP blocks, attention unmasked except for padding. Tensor names map one-to-one onto a
/// Hugging Face <c>BertModel</c> (see docs/bert.md, "BERT tensor names"); only attention's q, k, v are fused here.
/// </summary>
public sealed class Bert : Module<Tensor, Tensor>
{
    readonly Embedding word_embeddings, position_embeddings, token_type_embeddings;
    readonly LayerNorm embeddings_norm;
    readonly Dropout drop;
    readonly ModuleList<BertLayer> layers;

    public Bert(BertConfig config) : base(nameof(Bert))
    {
        Config = config.Validate();
        var blocks = config.BlockConfig();
        word_embeddings = Embedding(config.VocabSize, config.Width);
        position_embeddings = Embedding(config.ContextLength, config.Width);
        token_type_embeddings = Embedding(config.Segments, config.Width);
        embeddings_norm = LayerNorm(config.Width, config.NormEpsilon);
        drop = Dropout(config.Dropout);
        layers = new ModuleList<BertLayer>([.. Enumerable.Range(0, config.Layers).Select(_ => new BertLayer(blocks))]);
        RegisterComponents();
        using var noGrad = no_grad();
        foreach (var (name, parameter) in named_parameters())
        {
            if (name.EndsWith("bias")) init.zeros_(parameter);
            else if (parameter.dim() >= 2) init.normal_(parameter, 0, 0.02); // BERT's initializer_range
        }
    }

    public BertConfig Config { get; }
    public Embedding TokenEmbedding => word_embeddings;

    /// <summary>BERT's initialisation of a head's layers: weights N(0, 0.02), zero biases.</summary>
    internal static void Initialise(params Linear[] linears)
    {
        using var noGrad = no_grad();
        foreach (var linear in linears)
        {
            init.normal_(linear.weight!, 0, 0.02);
            init.zeros_(linear.bias!);
        }
    }

    /// <summary>tokens (B, T) → hidden states (B, T, C), every token attending to every other.</summary>
    public override Tensor forward(Tensor tokens) => Hidden(tokens, null, null);

    /// <param name="tokens">(B, T) token ids.</param>
    /// <param name="segments">(B, T) segment ids, or null for all 0.</param>
    /// <param name="keyMask">(B, T) true where a token is real, or null when nothing is padding.</param>
    public Tensor Hidden(Tensor tokens, Tensor? segments, Tensor? keyMask)
    {
        using var scope = NewDisposeScope();
        long b = tokens.shape[0], t = tokens.shape[1];
        if (t > Config.ContextLength)
            throw new ArgumentException($"Input of {t} tokens is longer than the context length {Config.ContextLength}; truncate it first.", nameof(tokens));
        var positions = arange(t, device: tokens.device).unsqueeze(0);
        var x = word_embeddings.forward(tokens) + position_embeddings.forward(positions)
              + token_type_embeddings.forward(segments ?? zeros_like(tokens));
        x = drop.forward(embeddings_norm.forward(x));
        keyMask ??= ones(b, t, ScalarType.Bool, tokens.device);
        foreach (var layer in layers) x = layer.Forward(x, keyMask);
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>One BERT layer, post-norm: x = norm(x + attn(x)); x = norm(x + mlp(x)).</summary>
public sealed class BertLayer : Module<Tensor, Tensor>
{
    readonly SelfAttention attn;
    readonly DenseMlp mlp;
    readonly LayerNorm ln_attn, ln_mlp;
    readonly Dropout drop;

    public BertLayer(GptConfig blocks) : base(nameof(BertLayer))
    {
        attn = new SelfAttention(blocks);
        mlp = new DenseMlp(blocks);
        ln_attn = LayerNorm(blocks.Width, blocks.NormEpsilon);
        ln_mlp = LayerNorm(blocks.Width, blocks.NormEpsilon);
        drop = Dropout(blocks.Dropout);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => Forward(x, ones(x.shape[0], x.shape[1], ScalarType.Bool, x.device));

    public Tensor Forward(Tensor x, Tensor keyMask)
    {
        using var scope = NewDisposeScope();
        x = ln_attn.forward(x + drop.forward(attn.ForwardBidirectional(x, keyMask)));
        return ln_mlp.forward(x + drop.forward(mlp.forward(x))).MoveToOuterDisposeScope();
    }
}

/// <summary>BERT with its masked-LM head: dense → GELU → LayerNorm → logits through the tied token embeddings (+ bias).</summary>
public sealed class BertForMaskedLm : Module<Tensor, Tensor>
{
    readonly Bert bert;
    readonly Linear transform;
    readonly LayerNorm transform_norm;
    readonly Parameter decoder_bias;

    public BertForMaskedLm(BertConfig config) : base(nameof(BertForMaskedLm))
    {
        bert = new Bert(config);
        transform = Linear(config.Width, config.Width);
        transform_norm = LayerNorm(config.Width, config.NormEpsilon);
        decoder_bias = Parameter(zeros(config.VocabSize));
        RegisterComponents();
        Bert.Initialise(transform);
    }

    public Bert Encoder => bert;
    public BertConfig Config => bert.Config;

    /// <summary>tokens (B, T) → logits (B, T, V).</summary>
    public override Tensor forward(Tensor tokens) => Logits(tokens, null);

    public Tensor Logits(Tensor tokens, Tensor? keyMask)
    {
        using var scope = NewDisposeScope();
        return Head(bert.Hidden(tokens, null, keyMask)).MoveToOuterDisposeScope();
    }

    /// <summary>The MLM head alone: hidden states (…, C) → logits (…, V). Training applies it to masked positions only.</summary>
    public Tensor Head(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        var h = transform_norm.forward(functional.gelu(transform.forward(hidden)));
        return functional.linear(h, bert.TokenEmbedding.weight!, decoder_bias).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// BERT with a sequence classifier. <see cref="Pooling.Cls"/>: the pooler (dense + tanh on the [CLS] position), dropout,
/// a linear layer to the labels, as BERT was published. <see cref="Pooling.Mean"/>: dropout and the linear layer on the mean
/// of the real tokens' final states — a direct path from every token to the label, which a bag of words has too.
/// </summary>
public sealed class BertForClassification : Module<Tensor, Tensor>
{
    readonly Bert bert;
    readonly Linear? pooler;
    readonly Linear classifier;
    readonly Dropout drop;

    public BertForClassification(BertConfig config, int labels, Pooling pooling = Pooling.Cls) : base(nameof(BertForClassification))
    {
        if (labels < 2) throw new ArgumentOutOfRangeException(nameof(labels), labels, "A classifier needs at least two labels.");
        bert = new Bert(config);
        Pooling = pooling;
        if (pooling == Pooling.Cls) pooler = Linear(config.Width, config.Width);
        classifier = Linear(config.Width, labels);
        drop = Dropout(config.Dropout);
        RegisterComponents();
        if (pooler is not null) Bert.Initialise(pooler);
        Bert.Initialise(classifier);
    }

    public Bert Encoder => bert;
    public BertConfig Config => bert.Config;
    public Pooling Pooling { get; }

    /// <summary>tokens (B, T) → label logits (B, labels).</summary>
    public override Tensor forward(Tensor tokens) => Logits(tokens, null);

    public Tensor Logits(Tensor tokens, Tensor? keyMask)
    {
        using var scope = NewDisposeScope();
        var hidden = bert.Hidden(tokens, null, keyMask);   // (B, T, C)
        var pooled = pooler is not null ? tanh(pooler.forward(hidden.select(1, 0))) : BertEmbeddings.Pool(hidden, keyMask, Pooling.Mean);
        return classifier.forward(drop.forward(pooled)).MoveToOuterDisposeScope();
    }
}
