using GptSharp.Models;
using GptSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Inference;

/// <summary>One sequence of a batched generation: its prompt, sampling, token callback and cancellation.</summary>
/// <param name="Interject">Called after each sampled token with the answer so far; tokens it returns are fed to the
/// model next instead of sampled ones (a tool's answer, see <see cref="ToolBox.Interjection"/>), and a sampled token
/// it answers does not stop the row.</param>
/// <param name="Constraint">Limits the tokens this row may sample (one instance per row: it keeps the row's state).</param>
/// <param name="OnLogprob">With <see cref="SamplingOptions.TopLogprobs"/> set, called with each sampled token's
/// log-probabilities just before <paramref name="OnToken"/> is called with the token.</param>
public sealed record BatchRow(int[] Prompt, SamplingOptions Options, Action<int>? OnToken = null, CancellationToken Cancellation = default,
    Func<IEnumerable<int>, string>? Decode = null, Func<IReadOnlyList<int>, int[]?>? Interject = null, ITokenConstraint? Constraint = null,
    Action<TokenLogprob>? OnLogprob = null, Cpu.CpuAdapter? Adapter = null);

/// <summary>What one row of a batch produced: its tokens, whether its client cancelled, and the error that ended it alone.</summary>
public sealed record BatchResult(Generation Generation, bool Cancelled, Exception? Error = null)
{
    /// <summary>Where the request's time went, when its scheduler measures it.</summary>
    public DecodeTimings? Timings { get; init; }
}

/// <summary>
/// The one decoding engine: chat, generate, serving, evaluation and PPO rollouts all go through it. Prompts are
/// left-padded to one length (padding is never attended to; positions count from each row's first token), prefilled in
/// one pass, then every step decodes one token for every live row in a single forward — the weights are read once per
/// step for the whole batch, which is what makes batching pay when decoding is bound by memory bandwidth. A single
/// prompt is a batch of one. Each row keeps its own sampler, stop rules, cancellation and errors: a row whose sampling
/// or callback throws ends with that error and the others go on. When the cache is full, the rows that still have room
/// move into a smaller cache without their shared padding, so a long prompt never cuts a short one's answer.
/// </summary>
public sealed class TokenDecoder : IDisposable
{
    readonly Func<int, int[], DecodeSession> _start;
    readonly Lazy<Cpu.CpuModel>? _engine;
    readonly bool _ownsEngine;
    readonly int _engineRowLimit = int.MaxValue;

    /// <summary>
    /// A decoder for <paramref name="model"/> on the engine named (<see cref="Cpu.DecodeEngine"/>): libtorch, or the CPU
    /// engine with the model's weights packed at first use (and released when this decoder is disposed). <c>auto</c>
    /// decodes batches of up to <see cref="Cpu.DecodeEngine.AutoRowLimit"/> rows on the CPU engine and larger ones on
    /// libtorch, whose matrix products win once a step is bound by arithmetic rather than by reading the weights.
    /// </summary>
    /// <param name="kv">The CPU engine's cache format (null: F32 beside F32 weights, F16 beside smaller ones); a Q8_0 cache
    /// for heads that are not whole blocks of 32 is refused naming the head size.</param>
    public static TokenDecoder Create(Gpt model, string engine = Cpu.DecodeEngine.Auto, Cpu.KvFormat? kv = null)
    {
        var on = model.parameters().First().device;
        string device = on.type == DeviceType.CPU ? "cpu" : on.ToString();
        if (Cpu.DecodeEngine.Format(engine, model.Config, device) is not { } format) return new TokenDecoder(model);
        if (kv is { } cache && Cpu.CpuKvCache.Problem(model.Config, cache) is { } problem) throw new ArgumentException(problem);   // before the lazy packing
        return new TokenDecoder(model, new Lazy<Cpu.CpuModel>(() => Cpu.CpuModel.From(model, format, kvFormat: kv)),
            engine == Cpu.DecodeEngine.Auto ? Cpu.DecodeEngine.AutoRowLimit : int.MaxValue);
    }

    /// <summary>Batches of up to <paramref name="engineRowLimit"/> rows on the CPU engine (owned), larger ones on libtorch.</summary>
    TokenDecoder(Gpt model, Lazy<Cpu.CpuModel> engine, int engineRowLimit)
    {
        (_engine, _ownsEngine, _engineRowLimit) = (engine, true, engineRowLimit);
        ContextLength = model.Config.ContextLength;
        VocabSize = model.Config.VocabSize;
        _start = (rows, padding) => rows <= engineRowLimit ? new CpuSession(engine.Value, rows, padding) : new CachedSession(model, rows, padding);
    }

    /// <summary>The CPU engine a batch of <paramref name="rows"/> rows decodes on (packed now if it was not yet), or null for libtorch.</summary>
    public Cpu.CpuModel? EngineFor(int rows) => _engine is not null && rows <= _engineRowLimit ? _engine.Value : null;

    /// <summary>The CPU engine a single prompt decodes on, or null for libtorch.</summary>
    public Cpu.CpuModel? Engine => EngineFor(1);

    public void Dispose()
    {
        if (_ownsEngine && _engine is { IsValueCreated: true }) _engine.Value.Dispose();
    }

    /// <summary>Decodes a GPT with its KV cache.</summary>
    public TokenDecoder(Gpt model)
    {
        ContextLength = model.Config.ContextLength;
        VocabSize = model.Config.VocabSize;
        _start = (rows, padding) => new CachedSession(model, rows, padding);
    }

    /// <summary>Decodes with the CPU engine (<see cref="Cpu.CpuModel"/>): no libtorch call per operation.</summary>
    public TokenDecoder(Cpu.CpuModel engine)
    {
        _engine = new Lazy<Cpu.CpuModel>(engine);
        ContextLength = engine.Config.ContextLength;
        VocabSize = engine.Config.VocabSize;
        _start = (rows, padding) => new CpuSession(engine, rows, padding);
    }

    /// <summary>
    /// Decodes any function from tokens (B, T) to logits (B, T, V) by running it over the whole sequence at every step
    /// (no cache): for hand-made logits in tests and for models without a KV cache.
    /// </summary>
    public TokenDecoder(Func<Tensor, Tensor> logitsOf, int contextLength, int vocabSize)
    {
        ContextLength = contextLength;
        VocabSize = vocabSize;
        _start = (rows, padding) => new RecomputeSession(logitsOf, padding);
    }

    public int ContextLength { get; }
    public int VocabSize { get; }

    /// <summary>
    /// The prompt a row is decoded from: itself, or with <see cref="SamplingOptions.TruncatePrompt"/> its last
    /// context-length tokens. A prompt may fill the context; it then gets one token.
    /// </summary>
    public int[] PromptOf(BatchRow row) =>
        row.Options.TruncatePrompt && row.Prompt.Length > ContextLength ? row.Prompt[^ContextLength..] : row.Prompt;

    /// <summary>Why <paramref name="row"/> cannot be generated, or null when it can.</summary>
    public string? Problem(BatchRow row)
    {
        try { Check(row); }
        catch (ArgumentException e) { return e.Message.Split(" (Parameter")[0]; }
        return null;
    }

    /// <summary>Throws when <paramref name="row"/> cannot be generated: invalid options, an empty or too long prompt, or
    /// a token outside the vocabulary (<see cref="ArgumentOutOfRangeException"/>).</summary>
    public void Check(BatchRow row)
    {
        row.Options.Validate();
        int[] prompt = PromptOf(row);
        if (prompt.Length == 0) throw new ArgumentException("The prompt is empty: give at least one token (e.g. <|bos|>).", nameof(row));
        if (prompt.Length > ContextLength)
            throw new ArgumentException($"The prompt has {prompt.Length} tokens but the context length is {ContextLength}. " +
                                        $"Shorten it or allow truncation (keeps the last {ContextLength}).", nameof(row));
        foreach (int id in prompt)
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(row), id, $"Token id {id} is outside the vocabulary [0, {VocabSize}).");
    }

    /// <summary>Generates one prompt (a batch of one); its error, if any, is thrown.</summary>
    public Generation Generate(int[] prompt, SamplingOptions options, Action<int>? onToken = null,
        Func<IEnumerable<int>, string>? decode = null, CancellationToken cancellation = default, Func<IReadOnlyList<int>, int[]?>? interject = null)
    {
        var result = Generate([new BatchRow(prompt, options, onToken, cancellation, decode, interject)])[0];
        if (result.Error is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(result.Error);
        cancellation.ThrowIfCancellationRequested();
        return result.Generation;
    }

    /// <summary>
    /// Generates one prompt by speculative decoding on the CPU engine (<see cref="SpeculativeDecoding"/>): the same
    /// tokens greedy, the same distribution sampled, fewer passes where the drafts are right. A model that decodes with
    /// libtorch is refused.
    /// </summary>
    public (Generation Generation, SpeculationStats Stats) Generate(int[] prompt, SamplingOptions options, IDrafter drafter, int draftTokens,
        Action<int>? onToken = null, Func<IEnumerable<int>, string>? decode = null, CancellationToken cancellation = default)
    {
        var engine = Engine ?? throw new InvalidOperationException("Speculative decoding runs on the CPU engine (--engine auto on a CPU, or cpu-*); this model decodes with libtorch.");
        var row = new BatchRow(prompt, options, onToken, cancellation, decode);
        Check(row);
        var (result, stats) = SpeculativeDecoding.Generate(engine, row, PromptOf(row), drafter, draftTokens);
        cancellation.ThrowIfCancellationRequested();
        return (result.Generation, stats);
    }

    /// <summary>Generates several prompts in one batch with the same options; prompt i samples with seed
    /// <c>options.Seed + i</c>. The first row error, if any, is thrown.</summary>
    public IReadOnlyList<Generation> Generate(IReadOnlyList<int[]> prompts, SamplingOptions options, Func<IEnumerable<int>, string>? decode = null,
        Func<IReadOnlyList<int>, int[]?>? interject = null)
    {
        var results = Generate([.. prompts.Select((p, i) => new BatchRow(p, options with { Seed = options.Seed + i }, Decode: decode, Interject: interject))]);
        foreach (var result in results)
            if (result.Error is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(result.Error);
        return [.. results.Select(r => r.Generation)];
    }

    /// <summary>Results in row order; a cancelled row's result holds the tokens it got before it was cancelled. A row
    /// that cannot be generated at all (see <see cref="Check"/>) is an <see cref="ArgumentException"/> for the call.</summary>
    public IReadOnlyList<BatchResult> Generate(IReadOnlyList<BatchRow> rows)
    {
        if (rows.Count == 0) return [];
        foreach (var row in rows) Check(row);
        int[][] prompts = [.. rows.Select(PromptOf)];
        int b = rows.Count, longest = prompts.Max(p => p.Length);
        int[] padding = [.. prompts.Select(p => longest - p.Length)];
        var inputs = new long[b * longest];
        for (int i = 0; i < b; i++)
            for (int j = 0; j < prompts[i].Length; j++) inputs[i * longest + padding[i] + j] = prompts[i][j];

        var session = _start(b, padding);
        try
        {
            using var noGrad = no_grad();
            var device = session.Device;
            var decodings = rows.Select((r, i) => new RowDecoding(r, prompts[i])).ToArray();
            int[] live = [.. Enumerable.Range(0, b)];   // session row → batch row
            var next = new long[b];
            int steps = 0;

            using (var scope = NewDisposeScope())
            {
                var logits = session.Feed(tensor(inputs, [b, longest], device: device)).select(1, -1);   // (live, V)
                while (true)
                {
                    for (int k = 0; k < live.Length; k++)
                        if (decodings[live[k]].Step(logits[k])) next[k] = decodings[live[k]].Next;
                    if (!live.Any(i => decodings[i].Active)) break;
                    if (session.Length >= ContextLength)
                    {
                        // A row without padding fills the context; the others move on without the padding they share.
                        int[] keep = [.. Enumerable.Range(0, live.Length).Where(k => decodings[live[k]].Active && session.LeftPadding[k] > 0)];
                        foreach (int k in Enumerable.Range(0, live.Length).Where(k => decodings[live[k]].Active && session.LeftPadding[k] == 0))
                            decodings[live[k]].End(FinishReason.ContextFull);
                        if (keep.Length == 0) break;
                        session.Keep(keep);
                        live = [.. keep.Select(k => live[k])];
                        next = [.. keep.Select(k => next[k])];
                    }
                    if (++steps % 32 == 0) TorchRuntime.ReleaseStepGarbage();
                    using var step = NewDisposeScope();
                    logits = session.Feed(tensor(next, [live.Length, 1], device: device)).select(1, 0).MoveToOuterDisposeScope();
                }
            }
            return [.. decodings.Select(d => d.Result())];
        }
        finally
        {
            session.Dispose();
        }
    }

    /// <summary>A batch being decoded: feeds new tokens (B, t) of its live rows and returns their logits (B, t, V).</summary>
    abstract class DecodeSession : IDisposable
    {
        public abstract Device Device { get; }
        /// <summary>Positions used so far, padding included.</summary>
        public abstract int Length { get; }
        public abstract IReadOnlyList<int> LeftPadding { get; }
        public abstract Tensor Feed(Tensor tokens);
        /// <summary>Keeps only these rows, dropping the left padding they all share.</summary>
        public abstract void Keep(int[] rows);
        public abstract void Dispose();
    }

    sealed class CachedSession : DecodeSession
    {
        readonly Gpt _model;
        readonly bool _wasTraining;
        KvCache _cache;

        public CachedSession(Gpt model, int rows, int[] padding)
        {
            _model = model;
            _wasTraining = model.training;
            model.eval();
            Device = model.parameters().First().device;
            _cache = new KvCache(model.Config, rows, Device, leftPadding: padding);
        }

        public override Device Device { get; }
        public override int Length => _cache.Length;
        public override IReadOnlyList<int> LeftPadding => _cache.LeftPadding;
        public override Tensor Feed(Tensor tokens) => _model.Forward(tokens, _cache);

        public override void Keep(int[] rows)
        {
            var compacted = _cache.Compact(rows, rows.Min(k => _cache.LeftPadding[k]));
            _cache.Dispose();
            _cache = compacted;
        }

        public override void Dispose()
        {
            _cache.Dispose();
            _model.train(_wasTraining);
        }
    }

    /// <summary>
    /// Rows in the CPU engine's cache, one slot each. Padding is skipped rather than fed (positions count from each
    /// row's first real token, as in the libtorch session), the prompt goes through in chunks, and only each row's last
    /// token gets logits: Feed returns (B, 1, V).
    /// </summary>
    sealed class CpuSession : DecodeSession
    {
        const int Chunk = 128;
        readonly Cpu.CpuModel _engine;
        readonly Cpu.CpuKvCache _cache;
        int[] _padding, _slots;
        int _length;
        float[] _logits = [], _spare = [], _chunkLogits = [];
        readonly int[] _tokens = new int[Chunk], _chunkSlots = new int[Chunk], _positions = new int[Chunk];
        readonly List<int> _outputs = new(Chunk), _outputRows = new(Chunk);

        public CpuSession(Cpu.CpuModel engine, int rows, int[] padding)
        {
            _engine = engine;
            _cache = engine.CreateCache(rows);
            _padding = [.. padding];
            _slots = [.. Enumerable.Range(0, rows)];
        }

        public override Device Device => CPU;
        public override int Length => _length;
        public override IReadOnlyList<int> LeftPadding => _padding;

        public override Tensor Feed(Tensor tokens)
        {
            int b = (int)tokens.shape[0], t = (int)tokens.shape[1], vocab = _engine.Config.VocabSize;
            long[] ids = tokens.data<long>().ToArray();
            // Two buffers in turn, exactly sized: the returned tensor shares one (no copy, no libtorch thread woken), and
            // the caller is done with the previous step's logits before it feeds again.
            (_logits, _spare) = (_spare, _logits);
            if (_logits.Length != b * vocab) _logits = new float[b * vocab];
            var outputs = _outputs;         // chunk positions whose logits are wanted (each row's last token)
            var outputRows = _outputRows;   // and the rows they belong to
            int n = 0;
            void Flush()
            {
                if (n == 0) return;
                int[] outs = [.. outputs];
                if (_chunkLogits.Length < outs.Length * vocab) _chunkLogits = new float[outs.Length * vocab];
                _engine.Forward(_cache, n, _tokens, _chunkSlots, _positions, outs, _chunkLogits);
                for (int o = 0; o < outs.Length; o++) Array.Copy(_chunkLogits, o * vocab, _logits, outputRows[o] * vocab, vocab);
                n = 0;
                outputs.Clear();
                outputRows.Clear();
            }
            for (int row = 0; row < b; row++)
                for (int j = 0; j < t; j++)
                {
                    int position = _length + j - _padding[row];
                    if (position < 0) continue;   // padding: never fed
                    _tokens[n] = (int)ids[row * t + j];
                    _chunkSlots[n] = _slots[row];
                    _positions[n] = position;
                    if (j == t - 1)
                    {
                        outputs.Add(n);
                        outputRows.Add(row);
                    }
                    if (++n == Chunk) Flush();
                }
            Flush();
            _length += t;
            return torch.frombuffer(_logits, ScalarType.Float32).view(b, 1, vocab);
        }

        public override void Keep(int[] rows)
        {
            int drop = rows.Min(k => _padding[k]);
            foreach (int slot in _slots.Except(rows.Select(k => _slots[k]))) _cache.Release(slot);
            _slots = [.. rows.Select(k => _slots[k])];
            _padding = [.. rows.Select(k => _padding[k] - drop)];
            _length -= drop;
        }

        public override void Dispose() { }
    }

    /// <summary>Keeps the tokens (with their left padding) and runs the function over all of them at every step.</summary>
    sealed class RecomputeSession(Func<Tensor, Tensor> logitsOf, int[] padding) : DecodeSession
    {
        int[] _padding = padding;
        Tensor? _tokens;   // (B, L)

        public override Device Device => CPU;
        public override int Length => (int)(_tokens?.shape[1] ?? 0);
        public override IReadOnlyList<int> LeftPadding => _padding;

        public override Tensor Feed(Tensor tokens)
        {
            var all = _tokens is null ? tokens.clone() : cat([_tokens, tokens], 1);
            _tokens?.Dispose();
            _tokens = all.DetachFromDisposeScope();
            return logitsOf(_tokens).narrow(1, _tokens.shape[1] - tokens.shape[1], tokens.shape[1]);
        }

        public override void Keep(int[] rows)
        {
            int drop = rows.Min(k => _padding[k]);
            var kept = _tokens!.index_select(0, tensor(rows.Select(r => (long)r).ToArray())).narrow(1, drop, _tokens.shape[1] - drop);
            _tokens.Dispose();
            _tokens = kept.DetachFromDisposeScope();
            _padding = [.. rows.Select(k => _padding[k] - drop)];
        }

        public override void Dispose() => _tokens?.Dispose();
    }
}
