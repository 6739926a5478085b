using GptSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Inference;

/// <summary>One sequence of a batched generation: its prompt, sampling, token callback and cancellation.</summary>
public sealed record BatchRow(int[] Prompt, SamplingOptions Options, Action<int>? OnToken = null, CancellationToken Cancellation = default,
    Func<IEnumerable<int>, string>? Decode = null);

/// <summary>
/// Generates for several prompts at once: prompts are left-padded to one length (padding is never attended to and
/// positions count from each row's first token), prefilled in one pass, then every step decodes one token for every
/// row in a single forward — the weights are read once per step for the whole batch, which is what makes batching pay
/// when decoding is bound by memory bandwidth. Each row keeps its own sampler, stop conditions and cancellation; a
/// finished or cancelled row rides along until the batch ends. Greedy output equals <see cref="TokenGenerator"/>'s.
/// </summary>
public static class BatchGenerator
{
    /// <summary>Results in row order; a cancelled row's result holds the tokens it got before it was cancelled.</summary>
    public static IReadOnlyList<(Generation Generation, bool Cancelled)> Generate(Gpt model, IReadOnlyList<BatchRow> rows)
    {
        if (rows.Count == 0) return [];
        var config = model.Config;
        foreach (var row in rows)
        {
            row.Options.Validate();
            if (row.Prompt.Length == 0) throw new ArgumentException("A prompt is empty: give at least one token (e.g. <|bos|>).", nameof(rows));
            if (row.Prompt.Length >= config.ContextLength)
                throw new ArgumentException($"A prompt has {row.Prompt.Length} tokens; the context length is {config.ContextLength}.", nameof(rows));
            foreach (int id in row.Prompt)
                if ((uint)id >= (uint)config.VocabSize) throw new ArgumentOutOfRangeException(nameof(rows), id, $"Token id {id} is outside the vocabulary [0, {config.VocabSize}).");
        }
        int b = rows.Count, longest = rows.Max(r => r.Prompt.Length);
        int[] padding = [.. rows.Select(r => longest - r.Prompt.Length)];
        var inputs = new long[b * longest];
        for (int i = 0; i < b; i++)
            for (int j = 0; j < rows[i].Prompt.Length; j++) inputs[i * longest + padding[i] + j] = rows[i].Prompt[j];

        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = no_grad();
            var device = model.parameters().First().device;
            using var cache = new KvCache(config, b, device, leftPadding: padding);
            var generators = rows.Select(r => new torch.Generator((ulong)r.Options.Seed, device)).ToArray();
            var contexts = rows.Select(r => new List<int>(r.Prompt)).ToArray();
            var produced = rows.Select(_ => new List<int>()).ToArray();
            var finish = new FinishReason[b];
            var active = new bool[b];
            var cancelled = new bool[b];
            Array.Fill(active, true);
            var next = new long[b];

            using (var scope = NewDisposeScope())
            {
                var logits = model.Forward(tensor(inputs, [b, longest], device: device), cache).select(1, -1);   // (B, V)
                while (true)
                {
                    for (int i = 0; i < b; i++)
                    {
                        if (!active[i]) continue;
                        if (rows[i].Cancellation.IsCancellationRequested) { active[i] = false; cancelled[i] = true; continue; }
                        int token = TokenGenerator.Sample(logits[i], contexts[i], rows[i].Options, generators[i]);
                        next[i] = token;
                        produced[i].Add(token);
                        contexts[i].Add(token);
                        rows[i].OnToken?.Invoke(token);
                        if (rows[i].Options.StopTokens?.Contains(token) == true) { finish[i] = FinishReason.Stop; active[i] = false; }
                        else if (rows[i].Decode is { } decode && rows[i].Options.StopSequences is { Count: > 0 } stops
                                 && stops.Any(s => decode(produced[i]).EndsWith(s, StringComparison.Ordinal))) { finish[i] = FinishReason.Stop; active[i] = false; }
                        else if (produced[i].Count >= rows[i].Options.MaxNewTokens) { finish[i] = FinishReason.Length; active[i] = false; }
                    }
                    if (!active.Any(a => a)) break;
                    if (cache.Length >= config.ContextLength)
                    {
                        for (int i = 0; i < b; i++) if (active[i]) finish[i] = FinishReason.ContextFull;
                        break;
                    }
                    using var step = NewDisposeScope();
                    logits = model.Forward(tensor(next, [b, 1], device: device), cache).select(1, 0).MoveToOuterDisposeScope();
                }
            }
            return [.. rows.Select((r, i) => (new Generation(r.Prompt, [.. produced[i]], finish[i]), cancelled[i]))];
        }
        finally
        {
            model.train(wasTraining);
        }
    }
}
