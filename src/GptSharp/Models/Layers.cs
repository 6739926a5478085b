using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace GptSharp.Models;

/// <summary>Root-mean-square normalisation (Llama): x / rms(x) × weight, no centring, no bias.</summary>
public sealed class RmsNorm : Module<Tensor, Tensor>
{
    readonly double _eps;
    readonly Parameter weight;

    public RmsNorm(long width, double eps) : base(nameof(RmsNorm))
    {
        _eps = eps;
        weight = Parameter(ones(width));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var normalised = x * rsqrt(x.pow(2).mean([-1], keepdim: true) + _eps);
        return (normalised * weight).MoveToOuterDisposeScope();
    }
}

/// <summary>Rotary position embedding tables (cos, sin) for every position up to the context length.</summary>
public sealed class Rotary : Module<Tensor, Tensor>
{
    readonly Tensor cos, sin; // (ContextLength, HeadDim/2)

    public Rotary(GptConfig config) : base(nameof(Rotary))
    {
        int half = config.HeadDim / 2;
        var inverseFrequency = pow(config.RotaryBase, -arange(0, half, ScalarType.Float64) / half);
        if (config.RopeScaling is { } scaling) inverseFrequency = Llama3(inverseFrequency, scaling);
        var angles = outer(arange(0, config.ContextLength, ScalarType.Float64), inverseFrequency);
        cos = angles.cos().to(ScalarType.Float32);
        sin = angles.sin().to(ScalarType.Float32);
        register_buffer(nameof(cos), cos, persistent: false);
        register_buffer(nameof(sin), sin, persistent: false);
    }

    /// <summary>
    /// Llama 3's frequencies: wavelengths longer than OriginalContext / LowFrequencyFactor are stretched by Factor,
    /// shorter than OriginalContext / HighFrequencyFactor kept, and those between blended linearly in context / wavelength.
    /// </summary>
    public static Tensor Llama3(Tensor inverseFrequency, RopeScaling scaling)
    {
        var wavelength = 2 * Math.PI / inverseFrequency;
        var smooth = (scaling.OriginalContext / wavelength - scaling.LowFrequencyFactor) / (scaling.HighFrequencyFactor - scaling.LowFrequencyFactor);
        var blended = (1 - smooth) * inverseFrequency / scaling.Factor + smooth * inverseFrequency;
        var longWave = wavelength > scaling.OriginalContext / scaling.LowFrequencyFactor;
        var shortWave = wavelength < scaling.OriginalContext / scaling.HighFrequencyFactor;
        return where(longWave, inverseFrequency / scaling.Factor, where(shortWave, inverseFrequency, blended));
    }

    /// <summary>Rotates (B, H, T, HeadDim) queries or keys for positions [start, start + T), halves layout (as Llama).</summary>
    public Tensor Apply(Tensor x, int start) => Rotate(x, cos.narrow(0, start, x.shape[2]), sin.narrow(0, start, x.shape[2]));

    /// <summary>Rotates (B, H, T, HeadDim) queries or keys for per-row positions (B, T) (a left-padded batch).</summary>
    public Tensor Apply(Tensor x, Tensor positions) =>
        Rotate(x, cos.index_select(0, positions.flatten()).view(positions.shape[0], 1, positions.shape[1], -1),
                  sin.index_select(0, positions.flatten()).view(positions.shape[0], 1, positions.shape[1], -1));

    static Tensor Rotate(Tensor x, Tensor c, Tensor s)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[3] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        return cat([x1 * c - x2 * s, x2 * c + x1 * s], -1).MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x) => Apply(x, 0);
}

/// <summary>
/// Multi-head self-attention with optional grouped-query heads, rotary positions and a KV cache: causal for GPT,
/// or bidirectional over the non-padding keys for BERT (<see cref="ForwardBidirectional"/>).
/// </summary>
public sealed class SelfAttention : Module<Tensor, Tensor>
{
    readonly GptConfig _config;
    readonly Dense c_attn, c_proj;
    readonly RmsNorm? q_norm, k_norm;

    public SelfAttention(GptConfig config) : base(nameof(SelfAttention))
    {
        _config = config;
        c_attn = new Dense(config.Width, (config.Heads + 2 * config.KvHeads) * config.HeadDim, config.Bias || config.QkvBias);
        c_proj = new Dense(config.Heads * config.HeadDim, config.Width, config.Bias);
        if (config.QkNorm) (q_norm, k_norm) = (new RmsNorm(config.HeadDim, config.NormEpsilon), new RmsNorm(config.HeadDim, config.NormEpsilon));
        RegisterComponents();
    }

    public Dense OutputProjection => c_proj;

    public override Tensor forward(Tensor x) => Forward(x, null, null, 0, 0);

    /// <summary>Every query sees every key whose <paramref name="keyMask"/> (B, T) is true: x (B, T, C) → (B, T, C).</summary>
    public Tensor ForwardBidirectional(Tensor x, Tensor keyMask)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        int h = _config.Heads, hd = _config.HeadDim;
        var qkv = c_attn.forward(x).view(b, t, 3, h, hd).permute(2, 0, 3, 1, 4); // (3, B, H, T, hd)
        var mask = keyMask.view(b, 1, 1, t);                                     // broadcast over heads and queries
        var y = functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], mask, training ? _config.Dropout : 0);
        y = y.transpose(1, 2).contiguous().view(b, t, h * hd);
        return c_proj.forward(y).MoveToOuterDisposeScope();
    }

    /// <summary>x: (B, T, C) → (B, T, C), causal. With a cache, keys/values of earlier tokens come from it.</summary>
    public Tensor Forward(Tensor x, Rotary? rotary, IAttentionCache? cache, int layer, int start)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        int h = _config.Heads, kvh = _config.KvHeads, hd = _config.HeadDim;
        var qkv = c_attn.forward(x);
        var q = qkv.narrow(-1, 0, h * hd).view(b, t, h, hd).transpose(1, 2);            // (B, H, T, hd)
        var k = qkv.narrow(-1, h * hd, kvh * hd).view(b, t, kvh, hd).transpose(1, 2);   // (B, KvH, T, hd)
        var v = qkv.narrow(-1, (h + kvh) * hd, kvh * hd).view(b, t, kvh, hd).transpose(1, 2);
        if (q_norm is not null) (q, k) = (q_norm.forward(q), k_norm!.forward(k));
        var positions = cache?.StepPositions;
        if (rotary is not null)
        {
            q = positions is null ? rotary.Apply(q, start) : rotary.Apply(q, positions);
            k = positions is null ? rotary.Apply(k, start) : rotary.Apply(k, positions);
        }
        var paddingMask = cache?.StepMask;
        if (cache is not null) (k, v) = cache.Append(layer, k, v);
        if (kvh != h)
        {
            k = k.repeat_interleave(h / kvh, dim: 1);
            v = v.repeat_interleave(h / kvh, dim: 1);
        }
        long keys = k.shape[2];
        Tensor? mask = null;
        bool causal = false;
        if (paddingMask is not null) mask = paddingMask; // a left-padded batch: causal and never a padding key
        else if (t == keys) causal = true;     // the whole sequence at once
        else if (t > 1)                         // a chunk after cached tokens: query i sees keys up to start + i
            mask = arange(keys, device: x.device).unsqueeze(0) <= (arange(t, device: x.device) + (keys - t)).unsqueeze(1);
        var y = functional.scaled_dot_product_attention(q, k, v, mask, training ? _config.Dropout : 0, causal);
        y = y.transpose(1, 2).contiguous().view(b, t, h * hd);
        return c_proj.forward(y).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The ungated MLP: Linear → activation → Linear. GPT-2 uses GELU's tanh approximation, BERT the exact erf GELU,
/// the Primer/speedrun variant relu(x)².
/// </summary>
public sealed class DenseMlp : Module<Tensor, Tensor>
{
    readonly Dense c_fc, c_proj;

    readonly ActivationKind _activation;

    public DenseMlp(GptConfig config) : base(nameof(DenseMlp))
    {
        if (config.Activation == ActivationKind.SwiGlu) throw new ArgumentException("SwiGLU is gated: use SwiGluMlp.", nameof(config));
        _activation = config.Activation;
        c_fc = new Dense(config.Width, config.MlpHidden, config.Bias);
        c_proj = new Dense(config.MlpHidden, config.Width, config.Bias);
        RegisterComponents();
    }

    public Dense OutputProjection => c_proj;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var hidden = c_fc.forward(x);
        var activated = _activation switch
        {
            ActivationKind.ReluSquared => functional.relu(hidden).square(),
            ActivationKind.Gelu => functional.gelu(hidden, TorchSharp.Modules.GELU.Approximate.none),
            _ => functional.gelu(hidden, TorchSharp.Modules.GELU.Approximate.tanh),
        };
        return c_proj.forward(activated).MoveToOuterDisposeScope();
    }
}

/// <summary>Llama/PaLM's gated MLP: down(silu(gate(x)) × up(x)).</summary>
public sealed class SwiGluMlp : Module<Tensor, Tensor>
{
    readonly Dense gate_proj, up_proj, down_proj;

    public SwiGluMlp(GptConfig config) : base(nameof(SwiGluMlp))
    {
        gate_proj = new Dense(config.Width, config.MlpHidden, config.Bias);
        up_proj = new Dense(config.Width, config.MlpHidden, config.Bias);
        down_proj = new Dense(config.MlpHidden, config.Width, config.Bias);
        RegisterComponents();
    }

    public Dense OutputProjection => down_proj;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return down_proj.forward(functional.silu(gate_proj.forward(x)) * up_proj.forward(x)).MoveToOuterDisposeScope();
    }
}
