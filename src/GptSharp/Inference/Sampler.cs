using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Inference;

/// <summary>
/// A row's source of randomness for sampling, from its seed: a SplitMix64 stream for logits on the CPU (drawn in C#, no
/// tensor operation per token) and, made when first needed, a libtorch generator for logits on another device.
/// </summary>
public sealed class SamplingRandom(long seed)
{
    ulong _state = (ulong)seed;
    torch.Generator? _generator;
    double[] _scratch = [];
    int[] _order = [];

    /// <summary>A uniform draw in [0, 1).</summary>
    public double NextDouble()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return ((z ^ (z >> 31)) >> 11) * (1.0 / (1UL << 53));
    }

    internal torch.Generator GeneratorOn(Device device) => _generator ??= new torch.Generator((ulong)seed, device);
    internal double[] Scratch(int length) => _scratch.Length >= length ? _scratch : _scratch = new double[length];
    internal int[] Order(int length) => _order.Length >= length ? _order : _order = new int[length];
}

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
    public static int Sample(Tensor logits, IReadOnlyCollection<int> context, SamplingOptions options, SamplingRandom? random,
        IReadOnlyList<int>? produced = null, bool[]? allowed = null) => SampleWithProbability(logits, context, options, random, produced, allowed, out _);

    /// <summary>As <see cref="Sample"/>, also giving the probability the drawn token had under the distribution it was drawn from (1 when greedy; NaN
    /// when the draw ran on libtorch, off the CPU).</summary>
    internal static int SampleWithProbability(Tensor logits, IReadOnlyCollection<int> context, SamplingOptions options, SamplingRandom? random,
        IReadOnlyList<int>? produced, bool[]? allowed, out double probability)
    {
        probability = double.NaN;
        if (logits.device_type == DeviceType.CPU && logits.dtype == ScalarType.Float32 && logits.dim() == 1)
        {
            if (options.Temperature == 0 && allowed is null && options.RepetitionPenalty == 1.0 && options.PresencePenalty == 0 && options.FrequencyPenalty == 0)
            {
                probability = 1;   // greedy: the distribution is one-hot
                return Greedy(logits);
            }
            using var contiguous = logits.is_contiguous() ? null : logits.contiguous();
            return SampleInPlace(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>((contiguous ?? logits).bytes), context, options,
                random ?? new SamplingRandom(options.Seed), produced, allowed, out probability);
        }
        var generator = (random ?? new SamplingRandom(options.Seed)).GeneratorOn(logits.device);
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
    /// What the tensor path computes, in C# over the logits' own storage (float64 arithmetic, the same penalties, mask,
    /// top-k, top-p and shifted temperature), drawing from <paramref name="random"/>'s stream: sampling a token costs no
    /// tensor operation, which matters when a rollout samples hundreds of rows per step.
    /// </summary>
    static int SampleInPlace(ReadOnlySpan<float> source, IReadOnlyCollection<int> context, SamplingOptions options, SamplingRandom random,
        IReadOnlyList<int>? produced, bool[]? allowed, out double probability)
    {
        var x = random.Scratch(source.Length).AsSpan(0, source.Length);
        var (best, sum) = Weights(source, context, options, random, produced, allowed, x);
        int token = options.Temperature == 0 ? best : Draw(x, sum, random.NextDouble(), best);
        probability = options.Temperature == 0 ? 1 : x[token] / sum;
        return token;
    }

    /// <summary>
    /// The probability of every token as <see cref="Sample"/> would draw it from (V) logits: penalties, mask, temperature,
    /// top-k and top-p applied; one-hot at the first largest logit when the temperature is 0. Speculative decoding checks
    /// drafted tokens against it.
    /// </summary>
    public static double[] Distribution(ReadOnlySpan<float> logits, IReadOnlyCollection<int> context, SamplingOptions options,
        IReadOnlyList<int>? produced = null, bool[]? allowed = null)
    {
        var x = new double[logits.Length];
        var (best, sum) = Weights(logits, context, options, new SamplingRandom(0), produced, allowed, x);
        if (options.Temperature == 0)
        {
            Array.Clear(x);
            x[best] = 1;
            return x;
        }
        for (int k = 0; k < x.Length; k++) x[k] /= sum;
        return x;
    }

    /// <summary>A token drawn from <paramref name="weights"/> (≥ 0, summing to <paramref name="sum"/>) by the uniform draw <paramref name="u"/> in [0, 1).</summary>
    internal static int Draw(ReadOnlySpan<double> weights, double sum, double u, int fallback)
    {
        double target = u * sum, running = 0;
        int last = fallback;
        for (int k = 0; k < weights.Length; k++)
        {
            if (weights[k] == 0) continue;
            running += weights[k];
            last = k;
            if (target < running) return k;
        }
        return last;   // u fell past the rounding of the running sum
    }

    /// <summary>Writes each token's unnormalised weight to <paramref name="x"/> (V); returns the first largest logit's token and the weights' sum (the
    /// top token weighs 1, so the sum is ≥ 1; with temperature 0 only the token is computed).</summary>
    static (int Best, double Sum) Weights(ReadOnlySpan<float> source, IReadOnlyCollection<int> context, SamplingOptions options, SamplingRandom random,
        IReadOnlyList<int>? produced, bool[]? allowed, Span<double> x)
    {
        int vocab = source.Length;
        for (int k = 0; k < vocab; k++)
        {
            if (!float.IsFinite(source[k])) throw new InvalidOperationException("The model produced non-finite logits (NaN or infinity); its weights are broken.");
            x[k] = source[k];
        }
        if (options.RepetitionPenalty != 1.0)
            foreach (int t in context.Distinct()) x[t] = x[t] > 0 ? x[t] / options.RepetitionPenalty : x[t] * options.RepetitionPenalty;
        if ((options.PresencePenalty != 0 || options.FrequencyPenalty != 0) && produced is { Count: > 0 })
            foreach (var group in produced.GroupBy(t => t)) x[group.Key] -= options.PresencePenalty + options.FrequencyPenalty * group.Count();
        if (allowed is not null)
        {
            if (allowed.Length != vocab) throw new ArgumentException($"The constraint covers {allowed.Length} tokens; the model has {vocab}.", nameof(allowed));
            if (!allowed.Contains(true)) throw new InvalidOperationException("The output constraint allows no token here: the vocabulary cannot spell what it requires.");
            for (int k = 0; k < vocab; k++) if (!allowed[k]) x[k] = double.NegativeInfinity;
        }
        int best = 0;
        for (int k = 1; k < vocab; k++) if (x[k] > x[best]) best = k;
        if (options.Temperature == 0) return (best, 1);
        double top = x[best];
        for (int k = 0; k < vocab; k++) x[k] = (x[k] - top) / options.Temperature;   // <= 0 everywhere, 0 at the top
        if (options.TopK > 0 && options.TopK < vocab)
        {
            double kth = KthLargest(x, options.TopK);
            for (int k = 0; k < vocab; k++) if (x[k] < kth) x[k] = double.NegativeInfinity;
        }
        if (options.TopP < 1.0)
        {
            // Candidates by falling logit; keep tokens until the mass before them reaches p, and always the first.
            var order = random.Order(vocab).AsSpan(0, vocab);
            int candidates = 0;
            for (int k = 0; k < vocab; k++) if (x[k] > double.NegativeInfinity) order[candidates++] = k;
            var kept = order[..candidates];
            var keys = new double[candidates];
            for (int i = 0; i < candidates; i++) keys[i] = -x[kept[i]];
            keys.AsSpan().Sort(kept);
            double total = 0;
            foreach (int k in kept) total += Math.Exp(x[k]);
            double before = 0;
            for (int i = 0; i < candidates; i++)
            {
                double p = Math.Exp(x[kept[i]]) / total;
                if (i > 0 && before >= options.TopP) x[kept[i]] = double.NegativeInfinity;
                before += p;
            }
        }
        double sum = 0;
        for (int k = 0; k < vocab; k++) sum += x[k] = Math.Exp(x[k]);
        return (best, sum);
    }

    /// <summary>The k-th largest of <paramref name="values"/> (k ≥ 1), by a min-heap of the k largest seen.</summary>
    static double KthLargest(ReadOnlySpan<double> values, int k)
    {
        var heap = new double[k];
        int size = 0;
        foreach (double v in values)
        {
            if (size < k)
            {
                int i = size++;
                while (i > 0 && heap[(i - 1) / 2] > v) { heap[i] = heap[(i - 1) / 2]; i = (i - 1) / 2; }
                heap[i] = v;
            }
            else if (v > heap[0])
            {
                int i = 0;
                while (true)
                {
                    int child = 2 * i + 1;
                    if (child >= k) break;
                    if (child + 1 < k && heap[child + 1] < heap[child]) child++;
                    if (heap[child] >= v) break;
                    heap[i] = heap[child];
                    i = child;
                }
                heap[i] = v;
            }
        }
        return heap[0];
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
