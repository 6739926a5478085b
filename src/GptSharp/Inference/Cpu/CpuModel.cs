using System.Runtime.CompilerServices;
using GptSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Inference.Cpu;

/// <summary>
/// A GPT packed for decoding on the CPU without libtorch: weights in <see cref="WeightFormat"/> (F32, F16, BF16, Q8_0
/// or Q4_0), the products written with .NET's SIMD and split across the cores by a <see cref="WorkerPool"/>, norms,
/// rotary and attention over the <see cref="CpuKvCache"/> (F32 or F16) fused per token. Both families (GPT-2;
/// Llama/Qwen with grouped-query attention, q/k/v biases, QK-norm, rotary scaling), PaLM's parallel block and the ReLU²
/// MLP. Computes what <see cref="Gpt.Forward"/> computes, in F32 arithmetic (exactly so with F32 weights and cache);
/// LoRA adapters are folded in at packing.
/// </summary>
public sealed class CpuModel : IDisposable
{
    /// <summary>One block's weights. <c>Up</c> is GELU's c_fc, or SwiGLU's gate and up stacked ([2·hidden, C]).</summary>
    sealed record Layer(float[] Norm1, float[]? Norm1Bias, WeightMatrix Qkv, float[]? QkvBias, float[]? QNorm, float[]? KNorm,
        WeightMatrix Out, float[]? OutBias, float[]? Norm2, float[]? Norm2Bias, WeightMatrix Up, float[]? UpBias, WeightMatrix Down, float[]? DownBias);

    readonly Layer[] _layers;
    readonly WeightMatrix _tokenEmbedding;   // also the output head when tied
    readonly WeightMatrix? _head;
    readonly float[]? _positionEmbedding;   // (Context, C)
    readonly float[] _normF;
    readonly float[]? _normFBias;
    readonly float[]? _cos, _sin;            // (Context, HeadDim/2)
    readonly WorkerPool _pool;
    readonly MatMulWork _matmul;
    readonly AttentionWork _attention;

    CpuModel(GptConfig config, WeightFormat format, KvFormat kvFormat, Dictionary<string, float[]> weights, int threads)
    {
        KvFormat = kvFormat;
        if (config.Activation == ActivationKind.Gelu)
            throw new NotSupportedException("The CPU engine decodes GPT models (tanh GELU, SwiGLU or ReLU²); exact-GELU models are encoders.");
        Config = config;
        Format = format;
        int c = config.Width, hd = config.HeadDim, qkvWidth = (config.Heads + 2 * config.KvHeads) * hd, hidden = config.MlpHidden;
        // Layers are packed in parallel (packing is most of what a command waits for before its first token).
        var pending = new System.Collections.Concurrent.ConcurrentDictionary<string, float[]>(weights);
        weights.Clear();
        float[] Take(string name) => pending.TryRemove(name, out var w) ? w : throw new KeyNotFoundException($"The model has no tensor '{name}'.");
        float[]? Maybe(string name) => pending.TryRemove(name, out var w) ? w : null;
        WeightMatrix Matrix(string name, int rows, int cols) => WeightMatrix.Pack(Take(name), rows, cols, format, name);

        _tokenEmbedding = Matrix("wte.weight", config.VocabSize, c);
        _positionEmbedding = Maybe("wpe.weight");
        _layers = new Layer[config.Layers];
        try
        {
            Parallel.For(0, config.Layers, new ParallelOptions { MaxDegreeOfParallelism = threads }, l =>
            {
                string p = $"h.{l}.";
                bool swiGlu = config.Activation == ActivationKind.SwiGlu;
                WeightMatrix up;
                float[]? upBias;
                if (swiGlu)
                {
                    up = WeightMatrix.Pack([.. Take(p + "mlp.gate_proj.weight"), .. Take(p + "mlp.up_proj.weight")], 2 * hidden, c, format, p + "mlp.gate_proj/up_proj");
                    var (gateBias, upOnlyBias) = (Maybe(p + "mlp.gate_proj.bias"), Maybe(p + "mlp.up_proj.bias"));
                    upBias = gateBias is null ? null : [.. gateBias, .. upOnlyBias!];
                }
                else (up, upBias) = (Matrix(p + "mlp.c_fc.weight", hidden, c), Maybe(p + "mlp.c_fc.bias"));
                string down = swiGlu ? "mlp.down_proj" : "mlp.c_proj";
                _layers[l] = new Layer(
                    Take(p + "ln_1.weight"), Maybe(p + "ln_1.bias"),
                    Matrix(p + "attn.c_attn.weight", qkvWidth, c), Maybe(p + "attn.c_attn.bias"),
                    Maybe(p + "attn.q_norm.weight"), Maybe(p + "attn.k_norm.weight"),
                    Matrix(p + "attn.c_proj.weight", c, config.Heads * hd), Maybe(p + "attn.c_proj.bias"),
                    Maybe(p + "ln_2.weight"), Maybe(p + "ln_2.bias"),
                    up, upBias, Matrix($"{p}{down}.weight", c, hidden), Maybe($"{p}{down}.bias"));
            });
        }
        catch (AggregateException e) when (e.InnerExceptions.Count >= 1)
        {
            // A shape a format cannot hold is the user's to fix: its own message, not the thread pool's wrapper.
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
        _normF = Take("ln_f.weight");
        _normFBias = Maybe("ln_f.bias");
        _head = config.TiedEmbeddings ? null : Matrix("lm_head.weight", config.VocabSize, c);
        if (config.Positions == PositionKind.Rotary) (_cos, _sin) = RotaryTables(config);
        _pool = new WorkerPool(threads);
        _matmul = new MatMulWork(_pool.Threads);
        _attention = new AttentionWork(config, _pool.Threads);
    }

    public GptConfig Config { get; }
    public WeightFormat Format { get; }
    /// <summary>How <see cref="CreateCache"/> stores keys and values: F32 beside F32 weights (the reference's
    /// arithmetic), F16 beside any smaller format (as llama.cpp does).</summary>
    public KvFormat KvFormat { get; }
    public int Threads => _pool.Threads;

    /// <summary>Bytes of weights one decoded token reads (every matrix once, one embedding row).</summary>
    public long BytesPerToken => _layers.Sum(l => l.Qkv.Bytes + l.Out.Bytes + l.Up.Bytes + l.Down.Bytes) + (_head ?? _tokenEmbedding).Bytes;

    /// <summary>A cache of keys and values for this model, in its <see cref="KvFormat"/>.</summary>
    public CpuKvCache CreateCache(int slots, int? capacity = null) => new(Config, slots, capacity, KvFormat);

    /// <summary>Packs a model's weights (adapters folded in) in <paramref name="format"/>; <paramref name="threads"/>
    /// defaults to the cores of this machine, <paramref name="kvFormat"/> to F32 for F32 weights and F16 otherwise.</summary>
    public static CpuModel From(Gpt model, WeightFormat format = WeightFormat.F32, int? threads = null, KvFormat? kvFormat = null)
    {
        long values = model.parameters().Sum(p => p.numel());
        long needed = values * (format switch { WeightFormat.F32 => 8L, _ => 6L });   // the F32 copies being packed, and the packed weights
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        if (needed > available)
            throw new InsufficientMemoryException($"Packing {values / 1e6:F0}M weights as {format} needs about {needed / 1e9:F1} GB; this process may use {available / 1e9:F1} GB. " +
                                                  "Use a smaller format (cpu-q4_0, cpu-q8_0, cpu-bf16) or --engine torch.");
        var weights = new Dictionary<string, float[]>();
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            var state = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value);
            foreach (var (name, tensor) in Lora.Merge(state))
                if (tensor.is_floating_point())   // copied out as one block (an element accessor costs seconds on a 124M model)
                    weights[name] = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(tensor.detach().cpu().to(ScalarType.Float32).contiguous().bytes).ToArray();
        }
        return new CpuModel(model.Config, format, kvFormat ?? (format == WeightFormat.F32 ? KvFormat.F32 : KvFormat.F16), weights, threads ?? Environment.ProcessorCount);
    }

    /// <summary>cos and sin of every position's rotary angles, computed as <see cref="Rotary"/> does (in F64, then F32).</summary>
    static (float[] Cos, float[] Sin) RotaryTables(GptConfig config)
    {
        using var scope = NewDisposeScope();
        int half = config.HeadDim / 2;
        var inverseFrequency = pow(config.RotaryBase, -arange(0, half, ScalarType.Float64) / half);
        if (config.RopeScaling is { } scaling) inverseFrequency = Rotary.Llama3(inverseFrequency, scaling);
        var angles = outer(arange(0, config.ContextLength, ScalarType.Float64), inverseFrequency);
        return (angles.cos().to(ScalarType.Float32).data<float>().ToArray(), angles.sin().to(ScalarType.Float32).data<float>().ToArray());
    }

    /// <summary>
    /// Feeds <paramref name="n"/> tokens: token i enters cache slot <paramref name="slots"/>[i] at position
    /// <paramref name="positions"/>[i], attending to that slot's positions up to its own (earlier ones must be cached,
    /// or come earlier in this call). Writes the logits of the tokens listed in <paramref name="outputs"/> to
    /// <paramref name="logits"/> (outputs.Length × Vocab).
    /// </summary>
    /// <param name="adapters">Per token, the LoRA adapter it decodes with (null: the base alone); null for none at all.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Forward(CpuKvCache cache, int n, int[] tokens, int[] slots, int[] positions, int[] outputs, float[] logits, CpuAdapter?[]? adapters = null)
    {
        if (adapters is not null && adapters.Length < n) throw new ArgumentException($"{adapters.Length} adapters for {n} tokens.", nameof(adapters));
        if (adapters is not null && adapters.All(a => a is null)) adapters = null;
        // The pool and the work items are the model's own: one forward pass at a time (a chat and a batcher may share a model).
        lock (_pool) ForwardLocked(cache, n, tokens, slots, positions, outputs, logits, adapters);
    }

    /// <summary>Adds each token's adapter term to a product's output rows (input rows of width <paramref name="inputs"/>, outputs of <paramref name="outputs"/>).</summary>
    static void Adapt(CpuAdapter?[]? adapters, int n, int layer, CpuAdapter.Product product, float[] x, int inputs, float[] y, int outputs)
    {
        if (adapters is null) return;
        for (int i = 0; i < n; i++)
            if (adapters[i] is { } adapter && adapter.Adapts(layer, product))
                adapter.Apply(layer, product, x.AsSpan(i * inputs, inputs), y.AsSpan(i * outputs, outputs));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void ForwardLocked(CpuKvCache cache, int n, int[] tokens, int[] slots, int[] positions, int[] outputs, float[] logits, CpuAdapter?[]? adapters)
    {
        var config = Config;
        int c = config.Width, hd = config.HeadDim, h = config.Heads, kvh = config.KvHeads, hidden = config.MlpHidden;
        int qkvWidth = (h + 2 * kvh) * hd;
        bool swiGlu = config.Activation == ActivationKind.SwiGlu;
        for (int i = 0; i < n; i++)
        {
            if ((uint)tokens[i] >= (uint)config.VocabSize) throw new ArgumentOutOfRangeException(nameof(tokens), tokens[i], $"Token id {tokens[i]} is outside the vocabulary [0, {config.VocabSize}).");
            if ((uint)positions[i] >= (uint)Math.Min(cache.Capacity, config.ContextLength)) throw new ArgumentOutOfRangeException(nameof(positions), positions[i], "The position is beyond the context.");
            if ((uint)slots[i] >= (uint)cache.Slots) throw new ArgumentOutOfRangeException(nameof(slots), slots[i], "No such cache slot.");
        }
        if (outputs.Length > n || outputs.Any(o => (uint)o >= (uint)n)) throw new ArgumentOutOfRangeException(nameof(outputs), $"Outputs name tokens of this call: at most {n}, each in [0, {n}).");
        if (logits.Length < outputs.Length * config.VocabSize) throw new ArgumentException("The logits buffer is too small.", nameof(logits));
        cache.Ensure(n, c, qkvWidth, h * hd, hidden, swiGlu ? 2 * hidden : hidden);
        float[] x = cache.X, normed = cache.Normed;

        for (int i = 0; i < n; i++)
        {
            var row = x.AsSpan(i * c, c);
            _tokenEmbedding.ReadRow(tokens[i], row);
            if (_positionEmbedding is not null) Kernels.AddScaled(row, 1, _positionEmbedding.AsSpan(positions[i] * c, c));
        }
        for (int l = 0; l < _layers.Length; l++)
        {
            var layer = _layers[l];
            Norm(x, normed, n, layer.Norm1, layer.Norm1Bias);
            Multiply(layer.Qkv, normed, n, cache.Qkv, layer.QkvBias);
            Adapt(adapters, n, l, CpuAdapter.Product.Qkv, normed, c, cache.Qkv, qkvWidth);
            for (int i = 0; i < n; i++) PrepareKeysAndQueries(cache, l, layer, i, slots[i], positions[i]);
            _attention.Set(cache, l, n, slots, positions);
            _pool.Run(_attention, parallel: (long)n * h * (positions[n - 1] + 1) * hd >= 1 << 14);
            Multiply(layer.Out, cache.Attention, n, cache.Projected, layer.OutBias);
            Adapt(adapters, n, l, CpuAdapter.Product.Out, cache.Attention, h * hd, cache.Projected, c);
            if (layer.Norm2 is null)
            {
                // PaLM's parallel block: the MLP reads the same normalised input as attention.
                Mlp(layer, l, cache, normed, n, adapters);
                for (int i = 0; i < n * c; i++) x[i] += cache.Projected[i] + cache.MlpOut[i];
                continue;
            }
            Kernels.AddScaled(x.AsSpan(0, n * c), 1, cache.Projected.AsSpan(0, n * c));
            Norm(x, normed, n, layer.Norm2, layer.Norm2Bias);
            Mlp(layer, l, cache, normed, n, adapters);
            Kernels.AddScaled(x.AsSpan(0, n * c), 1, cache.MlpOut.AsSpan(0, n * c));
        }
        // Only the rows asked for go through the final norm and the head.
        for (int o = 0; o < outputs.Length; o++) x.AsSpan(outputs[o] * c, c).CopyTo(cache.Projected.AsSpan(o * c, c));
        Norm(cache.Projected, normed, outputs.Length, _normF, _normFBias);
        Multiply(_head ?? _tokenEmbedding, normed, outputs.Length, logits, null);
    }

    /// <summary>MLP of normalised input into cache.MlpOut.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void Mlp(Layer layer, int l, CpuKvCache cache, float[] normed, int n, CpuAdapter?[]? adapters)
    {
        var activation = Config.Activation;
        int hidden = Config.MlpHidden, c = Config.Width;
        float[] up = cache.Hidden, activated = cache.Activated;
        bool adapted = adapters is not null && adapters.Take(n).Any(a => a?.Adapts(l, CpuAdapter.Product.Up) == true);
        if (activation != ActivationKind.SwiGlu && !adapted)
        {
            // GELU and ReLU² act on each row of the product alone: each thread applies them to the rows it computed.
            Multiply(layer.Up, normed, n, up, layer.UpBias, activation, activated);
        }
        else if (activation != ActivationKind.SwiGlu)
        {
            // An adapter's term joins the product before the activation.
            Multiply(layer.Up, normed, n, up, layer.UpBias);
            Adapt(adapters, n, l, CpuAdapter.Product.Up, normed, c, up, hidden);
            for (int i = 0; i < n; i++) Activations.Apply(activation, up.AsSpan(i * hidden, hidden), activated.AsSpan(i * hidden, hidden));
        }
        else
        {
            Multiply(layer.Up, normed, n, up, layer.UpBias);
            int width = layer.Up.Rows;
            Adapt(adapters, n, l, CpuAdapter.Product.Up, normed, c, up, width);
            for (int i = 0; i < n; i++)
                Activations.SwiGlu(up.AsSpan(i * width, hidden), up.AsSpan(i * width + hidden, hidden), activated.AsSpan(i * hidden, hidden));
        }
        Multiply(layer.Down, activated, n, cache.MlpOut, layer.DownBias);
        Adapt(adapters, n, l, CpuAdapter.Product.Down, activated, hidden, cache.MlpOut, c);
    }

    /// <summary>Queries and keys of token i: QK-norm and rotary in place, then its key and value into the cache.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void PrepareKeysAndQueries(CpuKvCache cache, int l, Layer layer, int i, int slot, int position)
    {
        int hd = Config.HeadDim, h = Config.Heads, kvh = Config.KvHeads, qkvWidth = (h + 2 * kvh) * hd;
        var qkv = cache.Qkv.AsSpan(i * qkvWidth, qkvWidth);
        for (int head = 0; head < h + kvh; head++)
        {
            var vector = qkv.Slice(head * hd, hd);
            float[]? norm = head < h ? layer.QNorm : layer.KNorm;
            if (norm is not null) RmsNormInPlace(vector, norm, (float)Config.NormEpsilon);
            if (_cos is not null) Rotate(vector, position);
        }
        for (int head = 0; head < kvh; head++) cache.Write(slot, l, head, position, qkv.Slice((h + head) * hd, hd), qkv.Slice((h + kvh + head) * hd, hd));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void Rotate(Span<float> v, int position)
    {
        int half = v.Length / 2;
        var cos = _cos.AsSpan(position * half, half);
        var sin = _sin.AsSpan(position * half, half);
        for (int k = 0; k < half; k++)
        {
            float x1 = v[k], x2 = v[k + half];
            v[k] = x1 * cos[k] - x2 * sin[k];
            v[k + half] = x2 * cos[k] + x1 * sin[k];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void RmsNormInPlace(Span<float> v, float[] weight, float epsilon)
    {
        float scale = 1 / MathF.Sqrt(Kernels.Dot(v, v) / v.Length + epsilon);
        for (int k = 0; k < v.Length; k++) v[k] = v[k] * scale * weight[k];
    }

    /// <summary>LayerNorm (with a bias when given) or RMSNorm of n rows of width C.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void Norm(float[] input, float[] output, int n, float[] weight, float[]? bias)
    {
        int c = Config.Width;
        float epsilon = (float)Config.NormEpsilon;
        for (int i = 0; i < n; i++)
        {
            var x = input.AsSpan(i * c, c);
            var y = output.AsSpan(i * c, c);
            if (Config.Norm == NormKind.RmsNorm)
            {
                float scale = 1 / MathF.Sqrt(Kernels.Dot(x, x) / c + epsilon);
                for (int k = 0; k < c; k++) y[k] = x[k] * scale * weight[k];
                continue;
            }
            float mean = 0;
            for (int k = 0; k < c; k++) mean += x[k];
            mean /= c;
            float variance = 0;
            for (int k = 0; k < c; k++) variance += (x[k] - mean) * (x[k] - mean);
            float inverse = 1 / MathF.Sqrt(variance / c + epsilon);
            for (int k = 0; k < c; k++) y[k] = (x[k] - mean) * inverse * weight[k] + (bias?[k] ?? 0);
        }
    }

    /// <summary>y (n × Rows) = x (n × Cols) · Wᵀ (+ bias), split across the cores when it is large enough to pay; with an
    /// activation, also activated = activation(y).</summary>
    void Multiply(WeightMatrix w, float[] x, int n, float[] y, float[]? bias, ActivationKind? activation = null, float[]? activated = null)
    {
        _matmul.Set(w, x, n, y, bias, activation, activated);
        _pool.Run(_matmul, parallel: (long)w.Rows * w.Cols * n >= 1 << 16);
    }

    /// <summary>
    /// One product shared out by rows (its activations readied once, before). The rows are cut into chunks, eight per
    /// thread, that the threads take in turn as they finish the last: a thread slowed by anything else on its core (a
    /// neighbour on a shared host, the server's I/O) leaves its chunks to the others instead of holding everyone at the
    /// end. Each chunk's rows then get the bias and the activation that follows, if any, while they are in cache.
    /// </summary>
    sealed class MatMulWork(int threads) : IPartWork
    {
        readonly MatrixInput _input = new();
        WeightMatrix? _w;
        float[] _y = [];
        float[]? _bias, _activated;
        ActivationKind? _activation;
        int _chunks, _taken;

        public void Set(WeightMatrix w, float[] x, int n, float[] y, float[]? bias, ActivationKind? activation, float[]? activated)
        {
            (_w, _y, _bias, _activation, _activated) = (w, y, bias, activation, activated);
            w.Prepare(x, n, _input);
            _chunks = Math.Clamp(w.Rows / 16, 1, threads == 1 ? 1 : 8 * threads);
            _taken = 0;
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int part, int parts)
        {
            for (int chunk = Interlocked.Increment(ref _taken) - 1; chunk < _chunks; chunk = Interlocked.Increment(ref _taken) - 1)
                Rows(chunk);
        }

        void Rows(int chunk)
        {
            int rows = _w!.Rows;
            // Boundaries on multiples of 4 rows, the kernels' step.
            int start = (int)((long)rows * chunk / _chunks) & ~3, end = chunk == _chunks - 1 ? rows : (int)((long)rows * (chunk + 1) / _chunks) & ~3;
            if (end <= start) return;
            _w.Multiply(_input, _y, start, end);
            for (int i = 0; i < _input.N; i++)
            {
                var rowsOut = _y.AsSpan(i * rows + start, end - start);
                if (_bias is not null) Kernels.AddScaled(rowsOut, 1, _bias.AsSpan(start, end - start));
                if (_activation is { } activation) Activations.Apply(activation, rowsOut, _activated.AsSpan(i * rows + start, end - start));
            }
        }
    }

    public void Dispose() => _pool.Dispose();
}
