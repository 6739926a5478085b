using System.Diagnostics;
using System.Threading.Channels;
using GptSharp.Models;
using GptSharp.Runtime;
using static TorchSharp.torch;

namespace GptSharp.Inference;

/// <summary>How a <see cref="ContinuousBatcher"/> runs.</summary>
/// <param name="Slots">Requests decoded at once, each with its own KV-cache slot.</param>
/// <param name="MaxQueue">Rows (a request's choices each count) that may wait for a free slot; a request that would pass it is refused whole.</param>
/// <param name="PrefillChunk">Prompt tokens run between two decode steps, so that a long prompt delays the running
/// requests by one chunk at a time rather than by its whole length.</param>
/// <param name="PrefixCache">Reuse the keys and values a free slot still holds when a new prompt starts with its tokens
/// (the previous turn of a chat, a shared system prompt).</param>
/// <param name="PromptLookupTokens">Speculative decoding by prompt lookup (<see cref="NgramDrafter"/>): this many
/// drafted tokens per request and step, more while its drafts are all taken (<see cref="DraftBudget"/>), checked in the same pass (the CPU engine only; 0: off). Requests with an output
/// constraint or tools decode one token a step.</param>
public sealed record BatcherOptions(int Slots = 4, int MaxQueue = int.MaxValue, int PrefillChunk = 256, bool PrefixCache = true, int PromptLookupTokens = 0)
{
    public BatcherOptions Validate()
    {
        if (PromptLookupTokens is < 0 or > SpeculativeDecoding.MaxDraftTokens)
            throw new ArgumentOutOfRangeException(nameof(PromptLookupTokens), PromptLookupTokens, $"Draft 0 (off) to {SpeculativeDecoding.MaxDraftTokens} tokens a step.");
        ArgumentOutOfRangeException.ThrowIfLessThan(Slots, 1, nameof(Slots));
        ArgumentOutOfRangeException.ThrowIfNegative(MaxQueue, nameof(MaxQueue));
        ArgumentOutOfRangeException.ThrowIfLessThan(PrefillChunk, 1, nameof(PrefillChunk));
        return this;
    }
}

/// <summary>
/// Continuous (iteration-level) batching over one model: a fixed number of KV-cache slots; at every decode step the
/// requests that finished leave, waiting requests take the free slots, their prompts run in chunks between steps, and
/// every running request gets one token from a single forward pass. A cancelled request frees its slot at the next
/// step. A finished slot keeps its keys and values, so a request that starts with the same tokens skips them
/// (<see cref="BatcherOptions.PrefixCache"/>). Each request samples with its own generator and attends to its own
/// slot only, so its tokens do not depend on what else is decoded beside it.
/// </summary>
public sealed class ContinuousBatcher : IGenerationScheduler
{
    sealed class Request(BatchRow row, TaskCompletionSource<BatchResult> done)
    {
        public BatchRow Row { get; } = row;
        public TaskCompletionSource<BatchResult> Done { get; } = done;
        public Stopwatch Clock { get; } = Stopwatch.StartNew();
        public RowDecoding? Decoding;
        public int[] Prompt = [];
        public int Slot = -1, Fed, Cached;
        public float[]? HeldLogits;   // logits waiting for the request's grammar mask (V)
        public DraftBudget? Drafts;   // how many tokens prompt lookup drafts for it next step
        public double QueueMs = -1, PrefillMs, FirstTokenMs;
    }

    readonly TokenDecoder _rules;
    readonly BatcherOptions _options;
    readonly ISlotModel _slots;
    readonly List<int>[] _slotTokens;   // the tokens whose keys each slot holds, in order
    readonly long[] _slotLastUsed;
    readonly Request?[] _slotOwner;
    readonly Cpu.CpuAdapter?[] _slotAdapter;   // the adapter whose keys and values a slot holds
    readonly Channel<Request> _queue = Channel.CreateUnbounded<Request>();
    readonly List<Request> _prefilling = [], _running = [], _masking = [];
    readonly Task _worker;
    readonly NgramDrafter _drafter = new();
    long _clock;
    int _waiting, _busy;

    /// <summary>Batches requests to <paramref name="model"/> on libtorch.</summary>
    public ContinuousBatcher(Gpt model, BatcherOptions? options = null)
        : this(new TorchSlots(model, (options ?? new BatcherOptions()).Validate().Slots), new TokenDecoder(model), options) { }

    /// <summary>Batches requests on the CPU engine (<see cref="Cpu.CpuModel"/>; not disposed with the batcher).</summary>
    public ContinuousBatcher(Cpu.CpuModel engine, BatcherOptions? options = null)
        : this(new CpuSlots(engine, (options ?? new BatcherOptions()).Validate().Slots), new TokenDecoder(engine), options) { }

    /// <summary>Batches requests on the engine the decoder would run a batch of every slot on: its CPU engine, or libtorch
    /// over <paramref name="model"/>.</summary>
    public static ContinuousBatcher For(Gpt model, TokenDecoder decoder, BatcherOptions? options = null) =>
        decoder.EngineFor((options ?? new BatcherOptions()).Validate().Slots) is { } engine ? new ContinuousBatcher(engine, options) : new ContinuousBatcher(model, options);

    ContinuousBatcher(ISlotModel slots, TokenDecoder rules, BatcherOptions? options)
    {
        _options = (options ?? new BatcherOptions()).Validate();
        if (_options.PromptLookupTokens > 0 && slots is not CpuSlots)
            throw new NotSupportedException("Speculative decoding (prompt lookup) runs on the CPU engine; serve with --engine auto on a CPU, or cpu-*.");
        _slots = slots;
        _rules = rules;   // for its checks of a request and its prompt truncation
        _slotTokens = [.. Enumerable.Range(0, _options.Slots).Select(_ => new List<int>())];
        _slotLastUsed = new long[_options.Slots];
        _slotOwner = new Request?[_options.Slots];
        _slotAdapter = new Cpu.CpuAdapter?[_options.Slots];
        _worker = Task.Factory.StartNew(Work, TaskCreationOptions.LongRunning);
    }

    public int Waiting => Volatile.Read(ref _waiting);
    public int Running => Volatile.Read(ref _busy);
    public int Capacity => _options.Slots;

    /// <summary>Forward passes that decoded one token for every running request, and prompt chunks run.</summary>
    public long DecodeSteps { get; private set; }
    public long PrefillChunks { get; private set; }
    /// <summary>Prompt tokens reused from a slot instead of run again.</summary>
    public long CachedPromptTokens { get; private set; }
    /// <summary>The most requests decoded in one step.</summary>
    public int LargestBatch { get; private set; }
    /// <summary>Tokens drafted by prompt lookup, and those of them the model took.</summary>
    public long DraftedTokens { get; private set; }
    public long AcceptedDrafts { get; private set; }

    public int QueueLimit => _options.MaxQueue;

    public IReadOnlyList<Task<BatchResult>>? TryEnqueueAll(IReadOnlyList<BatchRow> rows) =>
        GenerationSchedulerExtensions.Queue(rows, ref _waiting, _options.MaxQueue, (row, done) => _queue.Writer.TryWrite(new Request(row, done)), nameof(ContinuousBatcher));

    void Work()
    {
        using var noGrad = no_grad();
        for (long iteration = 1; ; iteration++)
        {
            Admit();
            if (_prefilling.Count == 0 && _running.Count == 0)
            {
                var arrival = _queue.Reader.WaitToReadAsync().AsTask();
                if (_masking.Count == 0)
                {
                    if (!arrival.GetAwaiter().GetResult()) break;
                    continue;
                }
                // Only requests waiting for their grammar masks: sleep until one is ready, a request arrives for a free
                // slot, or 20 ms pass (a cancellation is seen then). A full batch or a closed queue must not wake the loop.
                var masks = _masking.Select(r => r.Decoding!.WhenReady);
                bool admits = Array.IndexOf(_slotOwner, null) >= 0 && !(arrival.IsCompleted && !arrival.Result);
                Task.WaitAny(admits ? [arrival, .. masks] : [.. masks], 20);
            }
            using (var scope = NewDisposeScope())
            {
                foreach (var request in _prefilling.Concat(_running).Concat(_masking).Where(r => r.Decoding!.CancelIfRequested()).ToList()) Complete(request);
                Unmask();
                Prefill();
                Decode();
            }
            if (iteration % 32 == 0) TorchRuntime.ReleaseStepGarbage();
        }
        foreach (var request in _prefilling.Concat(_running).Concat(_masking).ToList())
            request.Done.TrySetException(new ObjectDisposedException(nameof(ContinuousBatcher)));
        _slots.Dispose();
    }

    /// <summary>Moves waiting requests into free slots, each into the slot that already holds most of its prompt.</summary>
    void Admit()
    {
        while (Array.IndexOf(_slotOwner, null) >= 0 && _queue.Reader.TryRead(out var request))
        {
            Interlocked.Decrement(ref _waiting);
            if (request.Row.Cancellation.IsCancellationRequested)
            {
                request.Done.SetResult(new BatchResult(new Generation(request.Row.Prompt, [], FinishReason.Length), true));
                continue;
            }
            if (_rules.Problem(request.Row) is { } problem)
            {
                request.Done.SetResult(new BatchResult(new Generation(request.Row.Prompt, [], FinishReason.Length), false, new ArgumentException(problem)));
                continue;
            }
            request.Prompt = _rules.PromptOf(request.Row);
            var (slot, shared) = ChooseSlot(request.Prompt, request.Row.Adapter);
            int reuse = Math.Min(shared, request.Prompt.Length - 1);   // the last prompt token runs again: its logits choose the first answer token
            _slots.Truncate(slot, reuse);
            _slotTokens[slot].RemoveRange(reuse, _slotTokens[slot].Count - reuse);
            (request.Slot, request.Fed, request.Cached) = (slot, reuse, reuse);
            request.Decoding = new RowDecoding(request.Row, request.Prompt);
            _slotOwner[slot] = request;
            _slotAdapter[slot] = request.Row.Adapter;
            Interlocked.Increment(ref _busy);
            CachedPromptTokens += reuse;
            _prefilling.Add(request);
        }
    }

    /// <summary>A free slot for a prompt: the one whose cached tokens it shares most of (cached under the same adapter: an
    /// adapter changes every key and value), the least recently used among equals.</summary>
    (int Slot, int Shared) ChooseSlot(int[] prompt, Cpu.CpuAdapter? adapter)
    {
        int best = -1, bestShared = -1;
        for (int slot = 0; slot < _slotOwner.Length; slot++)
        {
            if (_slotOwner[slot] is not null) continue;
            int shared = _options.PrefixCache && _slotAdapter[slot] == adapter ? SharedPrefix(_slotTokens[slot], prompt) : 0;
            if (shared > bestShared || (shared == bestShared && _slotLastUsed[slot] < _slotLastUsed[best]))
                (best, bestShared) = (slot, shared);
        }
        return (best, bestShared);
    }

    static int SharedPrefix(List<int> cached, int[] prompt)
    {
        int n = Math.Min(cached.Count, prompt.Length), i = 0;
        while (i < n && cached[i] == prompt[i]) i++;
        return i;
    }

    /// <summary>
    /// Runs up to one chunk of prompt tokens, the request with the fewest prompt tokens left first (the oldest among
    /// equals): a short prompt that arrives while a long one is being read gets its first token after one chunk, not
    /// after the whole long prompt; the long one still gets what the short ones leave of every chunk. A request whose
    /// prompt is done samples its first token.
    /// </summary>
    void Prefill()
    {
        int budget = _options.PrefillChunk;
        foreach (var request in _prefilling.OrderBy(r => r.Prompt.Length - r.Fed).ToList())
        {
            if (budget == 0) break;
            int count = Math.Min(budget, request.Prompt.Length - request.Fed);
            budget -= count;
            if (request.QueueMs < 0) request.QueueMs = request.Clock.Elapsed.TotalMilliseconds;
            var watch = Stopwatch.StartNew();
            Tensor logits;
            try
            {
                var chunk = request.Prompt.AsSpan(request.Fed, count).ToArray();
                logits = _slots.Prefill(request.Slot, request.Fed, chunk, request.Row.Adapter);   // (V)
                _slotTokens[request.Slot].AddRange(chunk);
                request.Fed += count;
                PrefillChunks++;
            }
            catch (Exception e)
            {
                Fail(request, e);
                continue;
            }
            request.PrefillMs += watch.Elapsed.TotalMilliseconds;
            if (request.Fed < request.Prompt.Length) continue;
            _prefilling.Remove(request);
            request.FirstTokenMs = request.Clock.Elapsed.TotalMilliseconds;
            if (Continue(request, logits)) _running.Add(request);
        }
    }

    /// <summary>One forward pass feeding every running request its last token; each samples its next.</summary>
    void Decode()
    {
        if (_running.Count == 0) return;
        _running.Sort((a, b) => a.Slot.CompareTo(b.Slot));   // neighbouring slots are read as one view, without a copy
        if (_options.PromptLookupTokens > 0)
        {
            DecodeDrafted();
            return;
        }
        int[] slots = [.. _running.Select(r => r.Slot)];
        int[] next = [.. _running.Select(r => r.Decoding!.Next)];
        int[] positions = [.. slots.Select(s => _slotTokens[s].Count)];
        Cpu.CpuAdapter?[] adapters = [.. _running.Select(r => r.Row.Adapter)];
        Tensor logits;
        try
        {
            logits = _slots.Decode(slots, next, positions, adapters);   // (B, V)
        }
        catch (Exception e)
        {
            foreach (var request in _running.ToList()) Fail(request, e);
            return;
        }
        DecodeSteps++;
        LargestBatch = Math.Max(LargestBatch, slots.Length);
        for (int k = 0; k < next.Length; k++) _slotTokens[slots[k]].Add(next[k]);
        foreach (var (request, k) in _running.Select((r, k) => (r, k)).ToList())
            if (!Continue(request, logits[k])) _running.Remove(request);
    }

    /// <summary>
    /// One forward pass feeding every running request its last token and the tokens prompt lookup drafts after it; each
    /// request takes the drafts its sampler agrees with (<see cref="RowDecoding.StepDrafted"/>) and one token more.
    /// </summary>
    void DecodeDrafted()
    {
        var fed = new int[_running.Count][];   // per request: its last token, then its drafts
        for (int k = 0; k < _running.Count; k++)
        {
            var request = _running[k];
            var decoding = request.Decoding!;
            var context = _slotTokens[request.Slot];
            request.Drafts ??= new DraftBudget(_options.PromptLookupTokens);
            int room = Math.Min(request.Drafts.Next, Math.Min(_rules.ContextLength - context.Count - 1, request.Row.Options.MaxNewTokens - decoding.Produced - 1));
            int[] drafts = [];
            if (room > 0 && request.Row.Constraint is null && request.Row.Interject is null)
            {
                context.Add(decoding.Next);   // the drafter reads the context with the token this step feeds; the walk below adds it for good
                drafts = _drafter.Propose(context, room);
                context.RemoveAt(context.Count - 1);
            }
            fed[k] = [decoding.Next, .. drafts];
            DraftedTokens += drafts.Length;
        }
        Tensor logits;
        try
        {
            logits = _slots.Verify([.. _running.Select(r => r.Slot)], fed, [.. _running.Select(r => _slotTokens[r.Slot].Count)], [.. _running.Select(r => r.Row.Adapter)]);   // (Σ fed, V)
        }
        catch (Exception e)
        {
            foreach (var request in _running.ToList()) Fail(request, e);
            return;
        }
        DecodeSteps++;
        LargestBatch = Math.Max(LargestBatch, _running.Count);
        int row = 0;
        foreach (var (request, k) in _running.Select((r, k) => (r, k)).ToList())
        {
            var decoding = request.Decoding!;
            var tokens = fed[k];
            int taken = 0;
            for (int j = 0; j < tokens.Length; j++)
            {
                _slotTokens[request.Slot].Add(tokens[j]);   // its keys are valid: the token was chosen, or a draft just taken
                var position = logits[row + j];
                if (j == tokens.Length - 1)
                {
                    if (!Continue(request, position)) _running.Remove(request);
                    break;
                }
                bool took = decoding.StepDrafted(position, tokens[j + 1]);
                if (decoding.Active && _slotTokens[request.Slot].Count >= _rules.ContextLength) decoding.End(FinishReason.ContextFull);
                if (!decoding.Active)
                {
                    Complete(request);
                    break;
                }
                if (!took) break;
                AcceptedDrafts++;
                taken++;
            }
            request.Drafts!.Record(tokens.Length - 1, taken);
            row += tokens.Length;
        }
    }

    /// <summary>Feeds a request's next-token logits to its sampler; completes it and frees its slot when it ended. A request
    /// whose grammar mask is still being computed keeps its logits and sits out the steps until the mask is ready.</summary>
    bool Continue(Request request, Tensor logits)
    {
        var decoding = request.Decoding!;
        if (!decoding.Ready)
        {
            request.HeldLogits = logits.to(ScalarType.Float32).data<float>().ToArray();
            _masking.Add(request);
            return false;
        }
        if (decoding.Step(logits) && _slotTokens[request.Slot].Count >= _rules.ContextLength) decoding.End(FinishReason.ContextFull);
        if (decoding.Active) return true;
        Complete(request);
        return false;
    }

    /// <summary>Requests whose masks came ready sample from the logits they held and rejoin the decoding batch.</summary>
    void Unmask()
    {
        foreach (var request in _masking.Where(r => r.Decoding!.Ready).ToList())
        {
            _masking.Remove(request);
            var logits = tensor(request.HeldLogits!);
            request.HeldLogits = null;
            if (Continue(request, logits)) _running.Add(request);
        }
    }

    void Complete(Request request)
    {
        _prefilling.Remove(request);
        _running.Remove(request);
        _masking.Remove(request);
        Release(request);
        double now = request.Clock.Elapsed.TotalMilliseconds;
        request.Done.TrySetResult(request.Decoding!.Result() with
        {
            Timings = new DecodeTimings(request.Fed - request.Cached, request.Cached, Math.Max(0, request.QueueMs), request.PrefillMs,
                request.FirstTokenMs > 0 ? now - request.FirstTokenMs : 0),
        });
    }

    void Fail(Request request, Exception error)
    {
        _prefilling.Remove(request);
        _running.Remove(request);
        // What the slot holds may be half written: forget it rather than offer it to the next request.
        _slots.Truncate(request.Slot, 0);
        _slotTokens[request.Slot].Clear();
        Release(request);
        request.Done.TrySetResult(new BatchResult(new Generation(request.Prompt, [], FinishReason.Length), false, error));
    }

    void Release(Request request)
    {
        _slotOwner[request.Slot] = null;
        _slotLastUsed[request.Slot] = ++_clock;
        Interlocked.Decrement(ref _busy);
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _worker;
    }

    /// <summary>The model under the batcher: a KV cache of slots, and forward passes that extend them.</summary>
    interface ISlotModel : IDisposable
    {
        /// <summary>Runs <paramref name="chunk"/> at positions <paramref name="start"/>… of <paramref name="slot"/> (through a LoRA adapter, if given); the logits (V) of its last token.</summary>
        Tensor Prefill(int slot, int start, int[] chunk, Cpu.CpuAdapter? adapter);
        /// <summary>Feeds tokens[k] into slots[k] at positions[k] (each slot's length), one token per slot, each through its adapter; their logits (B, V).</summary>
        Tensor Decode(int[] slots, int[] tokens, int[] positions, Cpu.CpuAdapter?[] adapters);
        /// <summary>Feeds tokens[k] (several per slot) into slots[k] from positions[k]; the logits of every token fed (Σ tokens, V).</summary>
        Tensor Verify(int[] slots, int[][] tokens, int[] positions, Cpu.CpuAdapter?[] adapters);
        /// <summary>Forgets all but the first <paramref name="length"/> positions of a slot.</summary>
        void Truncate(int slot, int length);
    }

    /// <summary>libtorch: <see cref="Gpt.Forward"/> over a <see cref="SlotKvCache"/>.</summary>
    sealed class TorchSlots(Gpt model, int slots) : ISlotModel
    {
        readonly SlotKvCache _cache = new(model.Config, slots, model.parameters().First().device, model.parameters().First().dtype);

        Device Device { get; } = model.parameters().First().device;

        static void NoAdapters(IEnumerable<Cpu.CpuAdapter?> adapters)
        {
            if (adapters.Any(a => a is not null))
                throw new NotSupportedException("LoRA adapters are decoded apart from the base by the CPU engine only; serve with --engine cpu (or auto on a CPU).");
        }

        public Tensor Prefill(int slot, int start, int[] chunk, Cpu.CpuAdapter? adapter)
        {
            NoAdapters([adapter]);
            _cache.Select(slot);
            return model.Forward(tensor(chunk.Select(t => (long)t).ToArray(), [1, chunk.Length], device: Device), _cache)[0, -1];   // (1, T, V) → (V)
        }

        public Tensor Decode(int[] slots, int[] tokens, int[] positions, Cpu.CpuAdapter?[] adapters)
        {
            NoAdapters(adapters);
            _cache.Select(slots);
            return model.Forward(tensor(tokens.Select(t => (long)t).ToArray(), [tokens.Length, 1], device: Device), _cache).select(1, 0);   // (B, 1, V) → (B, V)
        }

        public Tensor Verify(int[] slots, int[][] tokens, int[] positions, Cpu.CpuAdapter?[] adapters) =>
            throw new NotSupportedException("Speculative decoding runs on the CPU engine.");

        public void Truncate(int slot, int length) => _cache.Truncate(slot, length);
        public void Dispose() => _cache.Dispose();
    }

    /// <summary>The CPU engine over its own cache; logits are handed out as views of two buffers, one per kind of call.</summary>
    sealed class CpuSlots(Cpu.CpuModel engine, int slots) : ISlotModel
    {
        readonly Cpu.CpuKvCache _cache = engine.CreateCache(slots);
        readonly float[] _prefillLogits = new float[engine.Config.VocabSize], _decodeLogits = new float[slots * engine.Config.VocabSize];
        readonly int[] _decodeOutputs = [.. Enumerable.Range(0, slots)];
        float[] _verifyLogits = [];

        int VocabSize => engine.Config.VocabSize;

        public Tensor Prefill(int slot, int start, int[] chunk, Cpu.CpuAdapter? adapter)
        {
            int n = chunk.Length;
            engine.Forward(_cache, n, chunk, [.. Enumerable.Repeat(slot, n)], [.. Enumerable.Range(start, n)], [n - 1], _prefillLogits,
                adapter is null ? null : [.. Enumerable.Repeat(adapter, n)]);
            return frombuffer(_prefillLogits, ScalarType.Float32);
        }

        public Tensor Decode(int[] slots, int[] tokens, int[] positions, Cpu.CpuAdapter?[] adapters)
        {
            int b = slots.Length;
            engine.Forward(_cache, b, tokens, slots, positions, _decodeOutputs[..b], _decodeLogits, adapters);
            return frombuffer(_decodeLogits, ScalarType.Float32).narrow(0, 0, (long)b * VocabSize).view(b, VocabSize);
        }

        public Tensor Verify(int[] slots, int[][] tokens, int[] positions, Cpu.CpuAdapter?[] adapters)
        {
            int n = tokens.Sum(t => t.Length);
            int[] flat = [.. tokens.SelectMany(t => t)];
            int[] tokenSlots = [.. tokens.SelectMany((t, k) => Enumerable.Repeat(slots[k], t.Length))];
            int[] tokenPositions = [.. tokens.SelectMany((t, k) => Enumerable.Range(positions[k], t.Length))];
            Cpu.CpuAdapter?[] tokenAdapters = [.. tokens.SelectMany((t, k) => Enumerable.Repeat(adapters[k], t.Length))];
            if (_verifyLogits.Length < n * VocabSize) _verifyLogits = new float[n * VocabSize];
            engine.Forward(_cache, n, flat, tokenSlots, tokenPositions, [.. Enumerable.Range(0, n)], _verifyLogits, tokenAdapters);
            return frombuffer(_verifyLogits, ScalarType.Float32).narrow(0, 0, (long)n * VocabSize).view(n, VocabSize);
        }

        // Positions past a slot's length are never attended to and are overwritten when the slot grows again.
        public void Truncate(int slot, int length) { }

        public void Dispose()
        {
            for (int slot = 0; slot < _cache.Slots; slot++) _cache.Release(slot);
        }
    }
}
