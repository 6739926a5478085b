using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using TorchSharp.Modules;

namespace GptSharp.Models;

/// <summary>
/// One Transformer block, pre-norm: x + attn(norm(x)), then x + mlp(norm(x)); or PaLM's parallel form,
/// x + attn(norm(x)) + mlp(norm(x)) with one norm.
/// </summary>
public sealed class Block : Module<Tensor, Tensor>
{
    readonly bool _parallel;
    readonly Module<Tensor, Tensor> ln_1;
    readonly Module<Tensor, Tensor>? ln_2;
    readonly SelfAttention attn;
    readonly Module<Tensor, Tensor> mlp;

    public Block(GptConfig config) : base(nameof(Block))
    {
        _parallel = config.ParallelBlock;
        ln_1 = MakeNorm(config);
        ln_2 = config.ParallelBlock ? null : MakeNorm(config);
        attn = new SelfAttention(config);
        mlp = config.Activation == ActivationKind.SwiGlu ? new SwiGluMlp(config) : new DenseMlp(config);
        RegisterComponents();
    }

    /// <summary>The two projections that write into the residual stream (scaled at initialisation).</summary>
    public IEnumerable<Parameter> ResidualProjections() =>
        [attn.OutputProjection.Weight, (mlp is SwiGluMlp s ? s.OutputProjection : ((DenseMlp)mlp).OutputProjection).Weight];

    public static Module<Tensor, Tensor> MakeNorm(GptConfig config) => config.Norm == NormKind.RmsNorm
        ? new RmsNorm(config.Width, config.NormEpsilon)
        : LayerNorm(config.Width, config.NormEpsilon, elementwise_affine: true, bias: config.Bias);

    public override Tensor forward(Tensor x) => Forward(x, null, null, 0, 0);

    public Tensor Forward(Tensor x, Rotary? rotary, IAttentionCache? cache, int layer, int start)
    {
        using var scope = NewDisposeScope();
        Tensor result;
        if (_parallel)
        {
            var normed = ln_1.forward(x);
            result = x + attn.Forward(normed, rotary, cache, layer, start) + mlp.forward(normed);
        }
        else
        {
            x = x + attn.Forward(ln_1.forward(x), rotary, cache, layer, start);
            result = x + mlp.forward(ln_2!.forward(x));
        }
        return result.MoveToOuterDisposeScope();
    }
}
