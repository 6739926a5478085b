using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace GptSharp.Models;

/// <summary>
/// A decoder-only Transformer language model: token (+ learned position) embeddings, a stack of causal blocks, a final
/// norm and a projection to vocabulary logits (tied to the token embedding for GPT-2). Parameter names follow GPT-2's
/// (wte, wpe, h.N.ln_1, h.N.attn.c_attn, ...) so that weights map onto Hugging Face layouts.
/// </summary>
public sealed class Gpt : Module<Tensor, Tensor>
{
    readonly Embedding wte;
    readonly Embedding? wpe;
    readonly Dropout drop;
    readonly ModuleList<Block> h;
    readonly Module<Tensor, Tensor> ln_f;
    readonly Linear? lm_head;
    readonly Rotary? rotary;

    public Gpt(GptConfig config) : base(nameof(Gpt))
    {
        Config = config.Validate();
        wte = Embedding(config.VocabSize, config.Width);
        wpe = config.Positions == PositionKind.Learned ? Embedding(config.ContextLength, config.Width) : null;
        drop = Dropout(config.Dropout);
        h = new ModuleList<Block>([.. Enumerable.Range(0, config.Layers).Select(_ => new Block(config))]);
        ln_f = Block.MakeNorm(config);
        lm_head = config.TiedEmbeddings ? null : Linear(config.Width, config.VocabSize, hasBias: false);
        rotary = config.Positions == PositionKind.Rotary ? new Rotary(config) : null;
        RegisterComponents();
        InitialiseWeights();
    }

    public GptConfig Config { get; }

    /// <summary>Parameters, counting a tied embedding once.</summary>
    public long ParameterCount => parameters().Sum(p => p.numel());

    /// <summary>Parameters without the position embedding (the N in the 6·N·tokens FLOP estimate).</summary>
    public long NonEmbeddingParameterCount => ParameterCount - (wpe?.weight!.numel() ?? 0);

    void InitialiseWeights()
    {
        // GPT-2: N(0, 0.02) for matrices and embeddings, zero biases, residual projections scaled by 1/sqrt(2·layers).
        using var noGrad = no_grad();
        foreach (var (name, parameter) in named_parameters())
        {
            if (name.EndsWith("bias")) init.zeros_(parameter);
            else if (parameter.dim() >= 2) init.normal_(parameter, 0, 0.02);
        }
        double residualStd = 0.02 / Math.Sqrt(2 * Config.Layers);
        foreach (var block in h)
            foreach (var projection in block.ResidualProjections()) init.normal_(projection, 0, residualStd);
    }

    public override Tensor forward(Tensor tokens) => Forward(tokens, null);

    /// <summary>tokens: (B, T) int64 → logits (B, T, Vocab). With a cache, T new tokens follow the cached ones.</summary>
    public Tensor Forward(Tensor tokens, IAttentionCache? cache)
    {
        using var scope = NewDisposeScope();
        return Project(Hidden(tokens, cache)).MoveToOuterDisposeScope();
    }

    /// <summary>hidden (…, Width) → logits (…, Vocab): the vocabulary projection alone, for callers that need the logits
    /// of some positions only (RL scores the answer's tokens, not the prompt's).</summary>
    public Tensor Project(Tensor hidden) => lm_head is not null ? lm_head.forward(hidden) : functional.linear(hidden, wte.weight!);

    /// <summary>tokens: (B, T) → the final normalised hidden states (B, T, Width), before the vocabulary projection.</summary>
    public Tensor Hidden(Tensor tokens, IAttentionCache? cache = null)
    {
        using var scope = NewDisposeScope();
        long t = tokens.shape[1];
        int start = cache?.Length ?? 0;
        if (start + t > Config.ContextLength)
            throw new ArgumentException($"{start + t} tokens exceed the context length {Config.ContextLength}.", nameof(tokens));
        cache?.BeginStep((int)t);
        var x = wte.forward(tokens);
        if (wpe is not null)
            x = x + wpe.forward(cache?.StepPositions ?? arange(start, start + t, dtype: ScalarType.Int64, device: tokens.device));
        x = drop.forward(x);
        for (int layer = 0; layer < h.Count; layer++) x = h[layer].Forward(x, rotary, cache, layer, start);
        cache?.Advance((int)t);
        return ln_f.forward(x).MoveToOuterDisposeScope();
    }

    /// <summary>Mean next-token cross-entropy; targets equal to <paramref name="ignoreIndex"/> do not count.</summary>
    public static Tensor Loss(Tensor logits, Tensor targets, long ignoreIndex = -1) =>
        functional.cross_entropy(logits.view(-1, logits.shape[^1]), targets.view(-1), ignore_index: ignoreIndex);
}
