using GptSharp.Models;
using static TorchSharp.torch;

namespace GptSharp.Inference.Cpu;

/// <summary>
/// A LoRA adapter kept apart from the base weights, for serving many adapters on one base: each adapted product gains
/// scale·B·(A·x) for the rows that use this adapter (rank r: two thin products per row), so one batch decodes rows of
/// different adapters and the base is held once. Built from a LoRA run's <c>lora_A</c>, <c>lora_B</c>, <c>lora_scale</c>.
/// </summary>
public sealed class CpuAdapter
{
    /// <summary>One adapted part of a product: rows [RowOffset, RowOffset + B's rows) of the output gain Scale·B·(A·x).</summary>
    sealed record Part(int RowOffset, int Rank, int Inputs, int Outputs, float[] A, float[] B, float Scale);

    /// <summary>The products an adapter can touch in a block.</summary>
    public enum Product { Qkv, Out, Up, Down }

    readonly Part[][][] _parts;   // [layer][product] → parts

    readonly int _maxRank;

    CpuAdapter(string name, Part[][][] parts, long parameters)
    {
        (Name, _parts, Parameters) = (name, parts, parameters);
        _maxRank = parts.SelectMany(l => l).SelectMany(p => p).Max(p => p.Rank);
    }

    public string Name { get; }
    /// <summary>Adapter values held (A and B of every part).</summary>
    public long Parameters { get; }

    /// <summary>
    /// Checks one of a LoRA run's frozen weights against the served base's: an adapter is only meaningful on the weights it
    /// was trained with, so one from another base is refused, naming the weight and, when they differ, both shapes.
    /// </summary>
    public static void CheckBaseWeight(string name, string weight, Tensor theirs, IReadOnlyDictionary<string, Tensor> baseState)
    {
        if (!baseState.TryGetValue(weight, out var value))
            throw new InvalidDataException($"Adapter '{name}' was trained on another base: it has '{weight}', which the served model has not.");
        if (!theirs.shape.SequenceEqual(value.shape))
            throw new InvalidDataException($"Adapter '{name}' was trained on another base: '{weight}' is [{string.Join(", ", theirs.shape)}] there, [{string.Join(", ", value.shape)}] here.");
        if (!theirs.to(value.dtype).allclose(value, 0, 0))
            throw new InvalidDataException($"Adapter '{name}' was trained on another base: its '{weight}' differs from the served model's.");
    }

    /// <summary>
    /// Builds an adapter from a LoRA run's <c>lora_*</c> tensors for a base of <paramref name="config"/>: every <c>X.lora_A</c>
    /// must sit on a product the base has, with shapes that fit it (errors name the tensor and both shapes).
    /// </summary>
    public static CpuAdapter From(string name, GptConfig config, IReadOnlyDictionary<string, Tensor> state)
    {
        int c = config.Width, hd = config.HeadDim, hidden = config.MlpHidden;
        int qkvWidth = (config.Heads + 2 * config.KvHeads) * hd;
        bool swiGlu = config.Activation == ActivationKind.SwiGlu;
        var parts = Enumerable.Range(0, config.Layers).Select(_ => Enumerable.Range(0, 4).Select(_ => new List<Part>()).ToArray()).ToArray();
        long parameters = 0;
        int found = 0;
        foreach (string key in state.Keys.Where(k => k.EndsWith(".lora_A", StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            string prefix = key[..^".lora_A".Length];
            var pieces = prefix.Split('.');
            if (pieces.Length != 4 || pieces[0] != "h" || !int.TryParse(pieces[1], out int layer) || layer < 0 || layer >= config.Layers)
                throw new InvalidDataException($"Adapter '{name}': '{key}' is on no block of the base ({config.Layers} layers).");
            var (product, offset, outputs, inputs) = $"{pieces[2]}.{pieces[3]}" switch
            {
                "attn.c_attn" => (Product.Qkv, 0, qkvWidth, c),
                "attn.c_proj" => (Product.Out, 0, c, config.Heads * hd),
                "mlp.c_fc" when !swiGlu => (Product.Up, 0, hidden, c),
                "mlp.gate_proj" when swiGlu => (Product.Up, 0, hidden, c),
                "mlp.up_proj" when swiGlu => (Product.Up, hidden, hidden, c),
                "mlp.c_proj" when !swiGlu => (Product.Down, 0, c, hidden),
                "mlp.down_proj" when swiGlu => (Product.Down, 0, c, hidden),
                _ => throw new InvalidDataException($"Adapter '{name}': '{key}' adapts '{prefix}', which this base's layout does not have."),
            };
            var a = state[key];
            var b = state.TryGetValue($"{prefix}.lora_B", out var bt) ? bt : throw new InvalidDataException($"Adapter '{name}': '{prefix}.lora_B' is missing.");
            if (a.dim() != 2 || b.dim() != 2 || a.shape[1] != inputs || b.shape[0] != outputs || b.shape[1] != a.shape[0])
                throw new InvalidDataException($"Adapter '{name}': '{prefix}' has A [{string.Join(", ", a.shape)}] and B [{string.Join(", ", b.shape)}]; " +
                                               $"this base needs A [r, {inputs}] and B [{outputs}, r].");
            float scale = state.TryGetValue($"{prefix}.lora_scale", out var s) ? s.to(ScalarType.Float32).item<float>() : 1f;
            int rank = (int)a.shape[0];
            parts[layer][(int)product].Add(new Part(offset, rank, inputs, outputs, Floats(a), Floats(b), scale));
            parameters += a.numel() + b.numel();
            found++;
        }
        if (found == 0) throw new InvalidDataException($"Adapter '{name}' holds no LoRA tensors (X.lora_A): train it with --lora-rank.");
        return new CpuAdapter(name, [.. parts.Select(l => l.Select(p => p.ToArray()).ToArray())], parameters);
    }

    static float[] Floats(Tensor t) => t.detach().cpu().to(ScalarType.Float32).contiguous().data<float>().ToArray();

    /// <summary>Whether the adapter touches this product of this layer.</summary>
    public bool Adapts(int layer, Product product) => _parts[layer][(int)product].Length > 0;

    /// <summary>Adds this adapter's term to one row's output: y += Scale·B·(A·x).</summary>
    public void Apply(int layer, Product product, ReadOnlySpan<float> x, Span<float> y)
    {
        Span<float> buffer = stackalloc float[_maxRank];
        foreach (var part in _parts[layer][(int)product])
        {
            var down = buffer[..part.Rank];
            for (int r = 0; r < part.Rank; r++) down[r] = Kernels.Dot(part.A.AsSpan(r * part.Inputs, part.Inputs), x);
            for (int o = 0; o < part.Outputs; o++)
                y[part.RowOffset + o] += part.Scale * Kernels.Dot(part.B.AsSpan(o * part.Rank, part.Rank), down);
        }
    }
}
