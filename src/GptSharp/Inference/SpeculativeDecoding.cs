using GptSharp.Inference.Cpu;
using GptSharp.Runs;
using GptSharp.Tokenization;
using TorchSharp;

namespace GptSharp.Inference;

/// <summary>Proposes tokens likely to follow a context, for the target model to check in one pass.</summary>
public interface IDrafter
{
    /// <summary>Up to <paramref name="count"/> tokens to follow <paramref name="context"/> (the prompt and the answer so far); none when it has no guess.</summary>
    int[] Propose(IReadOnlyList<int> context, int count);
}

/// <summary>
/// Prompt lookup: the longest suffix of the context (<paramref name="longest"/> tokens down to <paramref name="shortest"/>)
/// that occurred earlier in it proposes the tokens that followed its latest earlier occurrence. No second model; it pays
/// where answers copy their prompt or themselves (edits, code, JSON, quotations). A copy may run into the tokens it
/// drafts itself (as LZ77's copies do), so a repeating stretch drafts as far as asked, not one period at most.
/// </summary>
public sealed class NgramDrafter(int shortest = 2, int longest = 4) : IDrafter
{
    public int[] Propose(IReadOnlyList<int> context, int count)
    {
        int length = context.Count;
        for (int n = Math.Min(longest, length - 1); n >= shortest; n--)
            for (int start = length - n - 1; start >= 0; start--)   // latest earlier occurrence first
            {
                int k = 0;
                while (k < n && context[start + k] == context[length - n + k]) k++;
                if (k < n) continue;
                var drafts = new int[count];
                for (int i = 0, from = start + n; i < count; i++, from++)
                    drafts[i] = from < length ? context[from] : drafts[from - length];
                return drafts;
            }
        return [];
    }
}

/// <summary>A smaller model of the same tokenizer drafts greedily, keeping its own cache of the context it has read.</summary>
public sealed class ModelDrafter : IDrafter, IDisposable
{
    readonly CpuModel _model;
    readonly bool _owned;
    readonly CpuKvCache _cache;
    readonly List<int> _fed = [];   // the tokens in the draft model's cache, in order
    float[] _logits;

    /// <param name="owned">Dispose the model with the drafter.</param>
    public ModelDrafter(CpuModel model, bool owned = false)
    {
        (_model, _owned) = (model, owned);
        _cache = model.CreateCache(1);
        _logits = new float[model.Config.VocabSize];
    }

    public int[] Propose(IReadOnlyList<int> context, int count)
    {
        int same = 0;   // what the cache holds of this context; beyond it (rejected drafts) is overwritten
        while (same < _fed.Count && same < context.Count - 1 && _fed[same] == context[same]) same++;
        _fed.RemoveRange(same, _fed.Count - same);
        count = Math.Min(count, _model.Config.ContextLength - context.Count);
        if (count <= 0) return [];
        var drafts = new int[count];
        Feed([.. context.Skip(same)]);
        for (int i = 0; i < count; i++)
        {
            drafts[i] = ArgMax(_logits);
            if (i < count - 1) Feed([drafts[i]]);
        }
        return drafts;
    }

    void Feed(int[] tokens)
    {
        for (int start = 0; start < tokens.Length; start += 128)
        {
            int n = Math.Min(128, tokens.Length - start);
            int[] positions = [.. Enumerable.Range(_fed.Count, n)];
            _model.Forward(_cache, n, tokens[start..(start + n)], new int[n], positions, [n - 1], _logits);
            _fed.AddRange(tokens[start..(start + n)]);
        }
    }

    public void Dispose()
    {
        if (_owned) _model.Dispose();
    }

    /// <summary>
    /// A run's model packed in <paramref name="format"/> as a drafter for a model of <paramref name="tokenizer"/>; a run of
    /// another tokenizer is refused, naming both and how they differ.
    /// </summary>
    public static ModelDrafter Load(string runDirectory, GptTokenizer tokenizer, WeightFormat format)
    {
        var (model, state) = Checkpoint.LoadModel(runDirectory);
        using (model)
        {
            var draftTokenizer = GptTokenizer.Load(state.Tokenizer);
            if (tokenizer.DifferenceFrom(draftTokenizer) is { } difference)
                throw new ArgumentException($"--draft-model {runDirectory}: its tokenizer '{draftTokenizer.Spec.Name}' is not the model's '{tokenizer.Spec.Name}' ({difference}); " +
                                            "a draft model must share the tokenizer, token for token.");
            return new ModelDrafter(CpuModel.From(model, format), owned: true);
        }
    }

    static int ArgMax(float[] values)
    {
        int best = 0;
        for (int k = 1; k < values.Length; k++) if (values[k] > values[best]) best = k;
        return best;
    }
}

/// <summary>A drafter and how many tokens it drafts a pass: what speculative decoding needs besides the target model.</summary>
public sealed record Speculation(IDrafter Drafter, int Tokens) : IDisposable
{
    public void Dispose() => (Drafter as IDisposable)?.Dispose();
}

/// <summary>
/// How many tokens a row drafts next pass: the configured count, doubled (up to <see cref="SpeculativeDecoding.MaxDraftTokens"/>)
/// after every pass whose drafts were all taken, and back to the configured count after a rejection — long copies are
/// checked in few passes, while text that drafts badly pays for few wasted positions.
/// </summary>
public sealed class DraftBudget(int tokens)
{
    /// <summary>The count the budget starts at and returns to.</summary>
    public int Tokens { get; } = tokens;
    public int Next { get; private set; } = tokens;

    /// <summary>The drafts the pass proposed and how many of them were taken.</summary>
    public void Record(int drafted, int taken) =>
        Next = drafted > 0 && taken == drafted ? Math.Min(2 * Math.Max(Next, drafted), SpeculativeDecoding.MaxDraftTokens) : drafted > taken ? Tokens : Next;
}

/// <summary>How many tokens were drafted and how many of them the target model took, over how many passes.</summary>
public sealed record SpeculationStats(int Passes, int Drafted, int Accepted)
{
    public double AcceptanceRate => Drafted == 0 ? 0 : (double)Accepted / Drafted;
}

/// <summary>
/// Speculative decoding on the CPU engine: each pass feeds the last chosen token and up to k drafted ones, and takes the
/// logits of every position; the drafts are checked in order (<see cref="RowDecoding.StepDrafted"/>: greedy takes a
/// draft that is the argmax; sampling takes it with probability p(draft) and otherwise draws from the residual), so the
/// output is distributed exactly as one token per pass would give it — greedy output is identical. Rejected drafts'
/// keys and values stay in the cache beyond the row's length, never attended, and are overwritten by the next pass.
/// </summary>
public static class SpeculativeDecoding
{
    /// <summary>The most tokens one pass may draft (<c>--draft-tokens</c>).</summary>
    public const int MaxDraftTokens = 16;

    /// <summary>Generates one row; rows with an output constraint or a tool writing into them are refused (they are decoded one token a pass).</summary>
    public static (BatchResult Result, SpeculationStats Stats) Generate(CpuModel engine, BatchRow row, int[] prompt, IDrafter drafter, int draftTokens)
    {
        if (draftTokens is < 1 or > MaxDraftTokens)
            throw new ArgumentOutOfRangeException(nameof(draftTokens), draftTokens, $"Draft between 1 and {MaxDraftTokens} tokens a pass.");
        if (row.Constraint is not null || row.Interject is not null)
            throw new ArgumentException("Speculative decoding takes rows without an output constraint or tools; decode those one token a pass.", nameof(row));
        if (prompt.Length == 0) throw new ArgumentException("The prompt is empty.", nameof(row));
        int vocab = engine.Config.VocabSize, contextLength = engine.Config.ContextLength;
        var decoding = new RowDecoding(row, prompt);
        var cache = engine.CreateCache(1);
        var logits = new float[(MaxDraftTokens + 1) * vocab];
        var context = new List<int>(prompt);
        int length = 0;
        // All but the last prompt token; the last goes in with the first drafts.
        for (; length < prompt.Length - 1; length += 128)
        {
            int n = Math.Min(128, prompt.Length - 1 - length);
            engine.Forward(cache, n, prompt[length..(length + n)], new int[n], [.. Enumerable.Range(length, n)], [], logits);
        }
        length = prompt.Length - 1;
        int pending = prompt[^1], passes = 0, drafted = 0, accepted = 0;
        var budget = new DraftBudget(draftTokens);
        using var noGrad = torch.no_grad();
        while (decoding.Active)
        {
            if (length >= contextLength)
            {
                decoding.End(FinishReason.ContextFull);
                break;
            }
            int room = Math.Min(budget.Next, Math.Min(contextLength - length - 1, row.Options.MaxNewTokens - decoding.Produced - 1));
            int[] drafts = room > 0 ? drafter.Propose(context, room) : [];
            if (drafts.Length > room) drafts = drafts[..room];
            int fed = 1 + drafts.Length;
            if (passes % 32 == 31) Runtime.TorchRuntime.ReleaseStepGarbage();   // as one token a pass does: the sampler's tensors are freed in step
            using var pass = torch.NewDisposeScope();
            engine.Forward(cache, fed, [pending, .. drafts], new int[fed], [.. Enumerable.Range(length, fed)], [.. Enumerable.Range(0, fed)], logits);
            passes++;
            drafted += drafts.Length;
            int taken = 0;
            for (int i = 0; i < fed && decoding.Active; i++)
            {
                using var row_logits = torch.frombuffer(logits, torch.ScalarType.Float32, count: vocab, offset: (long)i * vocab);
                if (i == drafts.Length)
                {
                    decoding.Step(row_logits);   // every draft taken: the pass's last logits give one more token
                    context.Add(decoding.Next);
                    break;
                }
                bool took = decoding.StepDrafted(row_logits, drafts[i]);
                context.Add(decoding.Next);
                if (!took) break;
                taken++;
            }
            accepted += taken;
            budget.Record(drafts.Length, taken);
            length += 1 + taken;   // the pending token and the drafts taken are in the cache now
            pending = decoding.Next;
        }
        if (decoding.Error is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(decoding.Error);
        return (decoding.Result(), new SpeculationStats(passes, drafted, accepted));
    }
}
