using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Models;

/// <summary>
/// Low-rank adaptation settings: adapters of rank <see cref="Rank"/> scaled by <see cref="Alpha"/> / rank on the
/// linear layers named in <see cref="Targets"/> (attention <c>c_attn</c>, <c>c_proj</c>; MLP <c>c_fc</c>, or
/// <c>gate_proj</c>, <c>up_proj</c>, <c>down_proj</c>); everything else is frozen.
/// </summary>
public sealed record LoraConfig(int Rank = 8, double Alpha = 16, string Targets = "c_attn,c_proj,c_fc,gate_proj,up_proj,down_proj")
{
    public IReadOnlyList<string> TargetNames => Targets.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    public LoraConfig Validate()
    {
        if (Rank < 1) throw new ArgumentOutOfRangeException(nameof(Rank), Rank, "The LoRA rank must be at least 1.");
        if (Alpha <= 0) throw new ArgumentOutOfRangeException(nameof(Alpha), Alpha, "The LoRA alpha must be positive.");
        string[] known = ["c_attn", "c_proj", "c_fc", "gate_proj", "up_proj", "down_proj"];
        var unknown = TargetNames.Except(known).ToList();
        if (TargetNames.Count == 0 || unknown.Count > 0)
            throw new ArgumentException($"LoRA targets '{Targets}': expected some of {string.Join(", ", known)}.", nameof(Targets));
        return this;
    }
}

/// <summary>Attaches LoRA adapters to a model and folds them back into its weights.</summary>
public static class Lora
{
    /// <summary>
    /// Freezes every parameter of <paramref name="model"/>, then adds a trainable adapter to each <see cref="Dense"/> layer
    /// whose name ends in a target. Returns the number of trainable (adapter) parameters.
    /// </summary>
    public static long Attach(nn.Module model, LoraConfig config)
    {
        config.Validate();
        foreach (var p in model.parameters()) p.requires_grad = false;
        var targets = config.TargetNames;
        int attached = 0;
        foreach (var (name, module) in model.named_modules())
        {
            if (module is not Dense dense || !targets.Any(t => name == t || name.EndsWith("." + t, StringComparison.Ordinal))) continue;
            dense.AttachAdapter(config.Rank, config.Alpha);
            attached++;
        }
        if (attached == 0) throw new ArgumentException($"No layer of this model matches the LoRA targets '{config.Targets}'.", nameof(config));
        return model.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
    }

    /// <summary>
    /// Folds adapters found in a saved state (<c>X.lora_A</c>, <c>X.lora_B</c>, <c>X.lora_scale</c>) into <c>X.weight</c>,
    /// for a model without adapters: W + scale·B·A. Returns the state without the adapter tensors.
    /// </summary>
    public static Dictionary<string, Tensor> Merge(IReadOnlyDictionary<string, Tensor> state)
    {
        var merged = state.Where(kv => !kv.Key.Contains(".lora_")).ToDictionary(kv => kv.Key, kv => kv.Value);
        foreach (string key in state.Keys.Where(k => k.EndsWith(".lora_A", StringComparison.Ordinal)))
        {
            string prefix = key[..^".lora_A".Length];
            merged[$"{prefix}.weight"] = state[$"{prefix}.weight"] + state[$"{prefix}.lora_scale"] * state[$"{prefix}.lora_B"].mm(state[key]);
        }
        return merged;
    }
}
