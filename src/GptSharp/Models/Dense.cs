using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace GptSharp.Models;

/// <summary>
/// A linear layer, y = x·Wᵀ + b with W stored [out, in] as torch's Linear (so tensor names stay <c>weight</c> and
/// <c>bias</c>), that can carry a LoRA adapter: y += (α / r)·(x·Aᵀ)·Bᵀ with A [r, in] and B [out, r], B starting at zero
/// so an attached adapter changes nothing until it is trained.
/// </summary>
public sealed class Dense : Module<Tensor, Tensor>
{
    readonly Parameter weight;
    readonly Parameter? bias;
    Parameter? lora_A, lora_B;
    Tensor? lora_scale;

    public Dense(long inFeatures, long outFeatures, bool hasBias = true) : base(nameof(Dense))
    {
        weight = Parameter(empty(outFeatures, inFeatures));
        bias = hasBias ? Parameter(zeros(outFeatures)) : null;
        using (no_grad())
        {
            // torch's Linear initialisation, draw for draw, so models start exactly as they did with Linear layers.
            init.kaiming_uniform_(weight, Math.Sqrt(5));
            if (bias is not null) init.uniform_(bias, -1 / Math.Sqrt(inFeatures), 1 / Math.Sqrt(inFeatures));
        }
        RegisterComponents();
    }

    public Parameter Weight => weight;
    public Parameter? Bias => bias;
    public bool HasAdapter => lora_A is not null;

    /// <summary>Adds a rank-<paramref name="rank"/> adapter scaled by α / r (A ~ N(0, 1/in), B = 0).</summary>
    public void AttachAdapter(int rank, double alpha)
    {
        if (HasAdapter) throw new InvalidOperationException("This layer already has an adapter.");
        ArgumentOutOfRangeException.ThrowIfLessThan(rank, 1);
        long inFeatures = weight.shape[1], outFeatures = weight.shape[0];
        lora_A = Parameter((randn(rank, inFeatures) / Math.Sqrt(inFeatures)).to(weight.device));
        lora_B = Parameter(zeros(outFeatures, rank, device: weight.device));
        lora_scale = tensor(alpha / rank, device: weight.device);
        register_parameter(nameof(lora_A), lora_A);
        register_parameter(nameof(lora_B), lora_B);
        register_buffer(nameof(lora_scale), lora_scale);
    }

    /// <summary>The weight with the adapter folded in: W + (α / r)·B·A (W itself without an adapter).</summary>
    public Tensor MergedWeight() => HasAdapter ? weight + lora_scale! * lora_B!.mm(lora_A!) : weight;

    public override Tensor forward(Tensor x)
    {
        var y = functional.linear(x, weight, bias);
        return HasAdapter ? y + functional.linear(functional.linear(x, lora_A!), lora_B!) * lora_scale! : y;
    }
}
