using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Inference;

/// <summary>How the next token is drawn from a row of logits.</summary>
public static class Sampler
{
    /// <summary>
    /// Chooses a token from (Vocab) logits. Safe for every valid option: the arithmetic runs in float64 on logits shifted
    /// so that the largest is 0, so a temperature of 1e-300 is greedy instead of inf/inf, and top-p always keeps the most
    /// likely token. Non-finite logits (a broken model) are an error, never a NaN draw.
    /// </summary>
    /// <param name="produced">The answer so far (for the presence and frequency penalties).</param>
    /// <param name="allowed">Per vocabulary token, whether it may be chosen (a constraint); null allows every token.</param>
    public static int Sample(Tensor logits, IReadOnlyCollection<int> context, SamplingOptions options, torch.Generator? generator,
        IReadOnlyList<int>? produced = null, bool[]? allowed = null)
    {
        if (options.Temperature == 0 && allowed is null && options.RepetitionPenalty == 1.0 && options.PresencePenalty == 0 && options.FrequencyPenalty == 0
            && logits.device_type == DeviceType.CPU && logits.dtype == ScalarType.Float32 && logits.dim() == 1)
            return Greedy(logits);
        using var scope = NewDisposeScope();
        logits = logits.to(ScalarType.Float64).clone();
        if (!logits.isfinite().all().item<bool>())
            throw new InvalidOperationException("The model produced non-finite logits (NaN or infinity); its weights are broken.");
        if (options.RepetitionPenalty != 1.0 && context.Count > 0)
        {
            var seen = tensor(context.Distinct().Select(t => (long)t).ToArray(), device: logits.device);
            var values = logits.index_select(0, seen);
            logits.index_copy_(0, seen, where(values > 0, values / options.RepetitionPenalty, values * options.RepetitionPenalty));
        }
        if ((options.PresencePenalty != 0 || options.FrequencyPenalty != 0) && produced is { Count: > 0 })
        {
            var counts = produced.GroupBy(t => t).ToArray();
            var ids = tensor(counts.Select(g => (long)g.Key).ToArray(), device: logits.device);
            var penalties = tensor(counts.Select(g => -(options.PresencePenalty + options.FrequencyPenalty * g.Count())).ToArray(), device: logits.device);
            logits.index_add_(0, ids, penalties, 1);
        }
        if (allowed is not null)
        {
            if (allowed.Length != logits.shape[0]) throw new ArgumentException($"The constraint covers {allowed.Length} tokens; the model has {logits.shape[0]}.", nameof(allowed));
            if (!allowed.Contains(true)) throw new InvalidOperationException("The output constraint allows no token here: the vocabulary cannot spell what it requires.");
            logits = logits.masked_fill(logical_not(tensor(allowed, device: logits.device)), double.NegativeInfinity);
        }
        if (options.Temperature == 0) return (int)logits.argmax().item<long>();
        logits = (logits - logits.max()) / options.Temperature;   // <= 0 everywhere, 0 at the top: -inf at worst, never NaN
        if (options.TopK > 0 && options.TopK < logits.shape[0])
        {
            var kth = logits.topk(options.TopK).values[-1];
            logits = logits.masked_fill(logits < kth, double.NegativeInfinity);
        }
        if (options.TopP < 1.0)
        {
            var (sorted, order) = logits.sort(descending: true);
            var probabilities = sorted.softmax(0);
            var drop = (probabilities.cumsum(0) - probabilities) >= options.TopP; // keep tokens until the mass before them reaches p
            drop[0] = false;                                                        // and always the most likely one
            logits = logits.index_put_(tensor(double.NegativeInfinity, ScalarType.Float64, device: logits.device), order.masked_select(drop));
        }
        return (int)multinomial(logits.softmax(0), 1, generator: generator).item<long>();
    }

    /// <summary>
    /// The first largest logit, read in place: greedy decoding on the CPU calls no tensor operation per token (each
    /// would wake libtorch's thread pool, whose spinning threads then compete with the CPU engine's).
    /// </summary>
    static int Greedy(Tensor logits)
    {
        using var contiguous = logits.is_contiguous() ? null : logits.contiguous();
        var source = contiguous ?? logits;
        ReadOnlySpan<float> values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(source.bytes);   // the storage itself, no copy
        int best = 0;
        float top = float.NegativeInfinity;
        for (int k = 0; k < values.Length; k++)
        {
            float v = values[k];
            if (!float.IsFinite(v)) throw new InvalidOperationException("The model produced non-finite logits (NaN or infinity); its weights are broken.");
            if (v > top) (top, best) = (v, k);
        }
        return best;
    }
}
