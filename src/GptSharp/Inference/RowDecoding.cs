using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Inference;

/// <summary>
/// One row's decoding state, whichever batch it runs in: its sampler, the tokens it produced, tokens a tool queued to
/// be fed next, and why it ended. The static and the continuous batcher both drive rows through <see cref="Step"/>, so
/// a request decodes the same way in either.
/// </summary>
internal sealed class RowDecoding
{
    readonly SamplingRandom _random;
    readonly List<int> _context;
    readonly List<int> _produced = [];
    readonly List<bool> _inserted = [];   // per produced token: written by a tool, not sampled
    readonly Queue<int> _pending = new();
    readonly List<TokenLogprob?>? _logprobs;
    readonly List<double>? _sampledLogprobs;
    Task<bool[]?>? _mask;   // the constraint's mask for the next sampled token, computed while the model runs

    public RowDecoding(BatchRow row, int[] prompt)
    {
        (Row, Prompt) = (row, prompt);
        _random = new SamplingRandom(row.Options.Seed);
        _context = [.. prompt];
        if (row.Options.TopLogprobs is not null) _logprobs = [];
        if (row.Options.SampledLogprobs) _sampledLogprobs = [];
        PrepareMask();
    }

    /// <summary>Whether the next <see cref="Step"/> can sample without waiting for its grammar mask (a batcher lets the
    /// others go on meanwhile, so one client's heavy grammar slows that client alone).</summary>
    public bool Ready => _mask is null || _mask.IsCompleted;

    /// <summary>Completes when <see cref="Ready"/> becomes true.</summary>
    public Task WhenReady => _mask ?? Task.CompletedTask;

    // Masks depend only on the constraint's state and the tokens left, both known once a token is accepted, so the next
    // one is computed off the decoding thread, in parallel with the forward pass that produces the logits it masks.
    void PrepareMask()
    {
        _mask = null;
        if (Row.Constraint is not { } constraint || !Active || _pending.Count > 0) return;
        int tokensLeft = Row.Options.MaxNewTokens - _produced.Count;
        _mask = Task.Run(() => constraint.Allowed(tokensLeft));
    }

    public BatchRow Row { get; }
    public int[] Prompt { get; }
    public bool Active { get; private set; } = true;
    public bool Cancelled { get; private set; }
    public Exception? Error { get; private set; }
    public FinishReason Finish { get; private set; }
    /// <summary>The token to feed the model next (the one <see cref="Step"/> chose).</summary>
    public int Next { get; private set; }
    public int Produced => _produced.Count;

    /// <summary>Ends the row when its client cancelled; true when it did.</summary>
    public bool CancelIfRequested()
    {
        if (!Active || !Row.Cancellation.IsCancellationRequested) return false;
        (Active, Cancelled) = (false, true);
        return true;
    }

    /// <summary>
    /// Chooses the next token from this row's next-token logits (V) — or takes the one a tool queued — and applies the
    /// stop rules. Returns whether the row goes on. An exception (a broken model, a failing callback) ends this row alone.
    /// </summary>
    public bool Step(Tensor logits)
    {
        if (!Active || CancelIfRequested()) return false;
        try
        {
            bool forced = _pending.Count > 0;
            bool[]? allowed = forced || Row.Constraint is null ? null
                : _mask is { } mask ? mask.GetAwaiter().GetResult() : Row.Constraint.Allowed(Row.Options.MaxNewTokens - _produced.Count);
            double probability = double.NaN;
            int token = forced ? _pending.Dequeue() : Sampler.SampleWithProbability(logits, _context, Row.Options, _random, _produced, allowed, out probability);
            if (_sampledLogprobs is not null) _sampledLogprobs.Add(forced ? double.NaN : Math.Log(double.IsNaN(probability)
                ? Sampler.Distribution(Floats(logits), _context, Row.Options, _produced, allowed)[token] : probability));
            Take(token, forced, logits);
        }
        catch (Exception e)
        {
            Error = e;
            Active = false;
        }
        return Active;
    }

    /// <summary>
    /// Speculative decoding's step: checks a drafted token against this row's distribution from (V) logits and takes
    /// it, or in its place a token drawn from what the draft left (the residual max(p − q, 0)), so the row's tokens are
    /// distributed exactly as <see cref="Step"/>'s. Greedy: the draft is taken when it is the first largest logit, else
    /// that token is. <paramref name="draftProbabilities"/> is the drafter's distribution (V); null for a drafter that
    /// proposes one token for certain (n-gram lookup). Returns whether the draft was taken; the row may have ended either way.
    /// </summary>
    public bool StepDrafted(Tensor logits, int draft, double[]? draftProbabilities = null)
    {
        if (!Active || CancelIfRequested()) return false;
        if (Row.Constraint is not null || _pending.Count > 0) throw new InvalidOperationException("A constrained row, or one a tool writes into, is not drafted.");
        try
        {
            using var contiguous = logits.is_contiguous() && logits.dtype == ScalarType.Float32 ? null : logits.to(ScalarType.Float32).cpu().contiguous();
            var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>((contiguous ?? logits).bytes);
            var p = Sampler.Distribution(values, _context, Row.Options, _produced);
            double q = draftProbabilities?[draft] ?? 1;
            bool taken = Row.Options.Temperature == 0 ? p[draft] == 1 : _random.NextDouble() < Math.Min(1, p[draft] / q);
            int token = draft;
            if (!taken)
            {
                int best = Array.IndexOf(p, p.Max());
                if (Row.Options.Temperature == 0) token = best;
                else
                {
                    for (int k = 0; k < p.Length; k++) p[k] = Math.Max(0, p[k] - (draftProbabilities?[k] ?? (k == draft ? 1 : 0)));
                    token = Sampler.Draw(p, p.Sum(), _random.NextDouble(), best);
                }
            }
            _sampledLogprobs?.Add(Math.Log(Sampler.Distribution(values, _context, Row.Options, _produced)[token]));
            Take(token, false, logits);
            return taken;
        }
        catch (Exception e)
        {
            Error = e;
            Active = false;
            return false;
        }
    }

    /// <summary>Appends a chosen token and applies the stop rules.</summary>
    void Take(int token, bool forced, Tensor logits)
    {
        if (!forced) Row.Constraint?.Accept(token);
        if (_logprobs is not null)
        {
            var logprob = forced ? null : Logprob(logits, token, Row.Options.TopLogprobs!.Value);
            _logprobs.Add(logprob);
            if (logprob is not null) Row.OnLogprob?.Invoke(logprob);
        }
        Next = token;
        _produced.Add(token);
        _inserted.Add(forced);
        _context.Add(token);
        Row.OnToken?.Invoke(token);
        if (!forced && Row.Interject?.Invoke(_produced) is { Length: > 0 } interjection)
            foreach (int id in interjection) _pending.Enqueue(id);
        if (forced || _pending.Count > 0) { }   // tokens a tool wrote, and the call they answer, never stop a row
        else if (Row.Options.StopTokens?.Contains(token) == true) End(FinishReason.Stop);
        else if (Row.Decode is { } decode && Row.Options.StopSequences is { Count: > 0 } stops
                 && StopText.Find(decode(_produced), stops) >= 0) End(FinishReason.Stop);
        if (Active && _produced.Count >= Row.Options.MaxNewTokens) End(FinishReason.Length);
        PrepareMask();
    }

    static TokenLogprob Logprob(Tensor logits, int token, int top)
    {
        using var scope = NewDisposeScope();
        var logp = logits.to(ScalarType.Float64).log_softmax(0);
        var alternatives = new List<(int, double)>();
        if (top > 0)
        {
            var (values, indices) = logp.topk(Math.Min(top, (int)logp.shape[0]));
            var v = values.data<double>().ToArray();
            var i = indices.data<long>().ToArray();
            for (int k = 0; k < v.Length; k++) alternatives.Add(((int)i[k], v[k]));
        }
        return new TokenLogprob(token, logp[token].item<double>(), alternatives);
    }

    /// <summary>Ends a row that still goes on for a reason outside its own rules (the context is full).</summary>
    public void End(FinishReason reason) => (Finish, Active) = (reason, false);

    public BatchResult Result() => new(new Generation(Prompt, [.. _produced], Finish, _inserted.Contains(true) ? [.. _inserted] : null,
        _logprobs is null ? null : [.. _logprobs], _sampledLogprobs is null ? null : [.. _sampledLogprobs]), Cancelled, Error);

    static float[] Floats(Tensor logits) => logits.to(ScalarType.Float32).cpu().data<float>().ToArray();
}
