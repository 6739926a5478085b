using GptSharp.Runtime;
using GptSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Inference;

/// <summary>
/// Autoregressive generation with a KV cache: one forward pass over the prompt (prefill), then one token per step.
/// Prompts of a batch are generated one after another, each with its own cache, so different lengths need no padding.
/// </summary>
public sealed class TokenGenerator(Gpt model)
{
    /// <summary>
    /// Generates a continuation of each prompt. <paramref name="onToken"/> receives (prompt index, token id) as soon as
    /// each token is chosen; <paramref name="decode"/>, when given, lets stop sequences be checked.
    /// </summary>
    public IReadOnlyList<Generation> Generate(IReadOnlyList<int[]> prompts, SamplingOptions options,
        Action<int, int>? onToken = null, Func<IEnumerable<int>, string>? decode = null, CancellationToken cancellation = default)
    {
        options.Validate();
        var results = new List<Generation>(prompts.Count);
        for (int i = 0; i < prompts.Count; i++)
        {
            int index = i;
            results.Add(GenerateOne(prompts[i], options with { Seed = options.Seed + i }, token => onToken?.Invoke(index, token), decode, cancellation));
        }
        return results;
    }

    Generation GenerateOne(int[] prompt, SamplingOptions options, Action<int> onToken, Func<IEnumerable<int>, string>? decode, CancellationToken cancellation)
    {
        var config = model.Config;
        if (prompt.Length == 0) throw new ArgumentException("The prompt is empty: give at least one token (e.g. <|bos|>).", nameof(prompt));
        if (prompt.Length > config.ContextLength)
        {
            if (!options.TruncatePrompt)
                throw new ArgumentException($"The prompt has {prompt.Length} tokens but the context length is {config.ContextLength}. Shorten it or allow truncation (keeps the last {config.ContextLength}).", nameof(prompt));
            prompt = prompt[^config.ContextLength..];
        }
        foreach (int id in prompt)
            if ((uint)id >= (uint)config.VocabSize) throw new ArgumentOutOfRangeException(nameof(prompt), id, $"Token id {id} is outside the vocabulary [0, {config.VocabSize}).");

        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = no_grad();
            var device = model.parameters().First().device;
            using var cache = new KvCache(config, 1, device);
            var generator = new torch.Generator((ulong)options.Seed, device);
            var context = new List<int>(prompt);
            var produced = new List<int>();
            var finish = FinishReason.Length;
            using (var scope = NewDisposeScope())
            {
                var logits = model.Forward(tensor(prompt.Select(t => (long)t).ToArray(), device: device).unsqueeze(0), cache);
                int next = Sample(logits[0, -1], context, options, generator);
                while (true)
                {
                    produced.Add(next);
                    context.Add(next);
                    onToken(next);
                    if (options.StopTokens?.Contains(next) == true) { finish = FinishReason.Stop; break; }
                    if (decode is not null && options.StopSequences is { Count: > 0 } stops && StopText.Find(decode(produced), stops) >= 0)
                    { finish = FinishReason.Stop; break; }
                    if (produced.Count >= options.MaxNewTokens) break;
                    if (cache.Length >= config.ContextLength) { finish = FinishReason.ContextFull; break; }
                    cancellation.ThrowIfCancellationRequested();
                    if (produced.Count % 32 == 0) TorchRuntime.ReleaseStepGarbage();
                    using var step = NewDisposeScope();
                    logits = model.Forward(tensor(new long[] { next }, device: device).unsqueeze(0), cache);
                    next = Sample(logits[0, -1], context, options, generator);
                }
            }
            return new Generation(prompt, [.. produced], finish);
        }
        finally
        {
            model.train(wasTraining);
        }
    }

    /// <summary>
    /// Chooses a token from (Vocab) logits. Safe for every valid option: the arithmetic runs in float64 on logits shifted
    /// so that the largest is 0, so a temperature of 1e-300 is greedy instead of inf/inf, and top-p always keeps the most
    /// likely token. Non-finite logits (a broken model) are an error, never a NaN draw.
    /// </summary>
    public static int Sample(Tensor logits, IReadOnlyCollection<int> context, SamplingOptions options, torch.Generator? generator)
    {
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
}
