using GptSharp.Runs;
using GptSharp.Alignment;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Tokenization;

namespace GptSharp.Serving;

/// <summary>A run's model loaded for serving under a name: weights (safetensors), tokenizer and chat template.</summary>
public sealed class ServedModel : IEmbeddingModel, IDisposable
{
    ServedModel(string name, string runDirectory, Gpt model, GptTokenizer tokenizer, string engine, Inference.Cpu.KvFormat? kv)
    {
        (Name, RunDirectory, Model, Tokenizer) = (name, runDirectory, model, tokenizer);
        Template = new ChatTemplate(tokenizer);
        Decoder = TokenDecoder.Create(model, engine, kv);
        Created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        _vocabulary = new(() => new Inference.Structured.VocabularyTrie(tokenizer.OrdinaryTokens, model.Config.VocabSize));
        model.eval();
    }

    public string Name { get; }
    public string RunDirectory { get; }
    public Gpt Model { get; }
    /// <summary>The decoding engine over <see cref="Model"/>.</summary>
    public TokenDecoder Decoder { get; }
    public GptTokenizer Tokenizer { get; }
    public ChatTemplate Template { get; }
    public long Created { get; }
    /// <summary>The tokenizer's vocabulary as a byte trie, for structured output (built on first use).</summary>
    public Inference.Structured.VocabularyTrie Vocabulary => _vocabulary.Value;
    readonly Lazy<Inference.Structured.VocabularyTrie> _vocabulary;
    public int ContextLength => Model.Config.ContextLength;

    /// <summary>Loads <c>name=folder</c>, or a folder named by its last path component (a PPO run's <c>policy</c> folder by its run's).</summary>
    /// <param name="allowNonFinite">Serve weights holding NaN or infinity instead of refusing them on load.</param>
    /// <param name="engine">What <see cref="Decoder"/> and a batcher over this model run on (<see cref="Inference.Cpu.DecodeEngine"/>).</param>
    /// <param name="kv">The CPU engine's cache format (null: its default).</param>
    public static ServedModel Load(string spec, bool allowNonFinite = false, string engine = Inference.Cpu.DecodeEngine.Auto, Inference.Cpu.KvFormat? kv = null)
    {
        var (name, path) = NameAndPath(spec);
        var (model, state) = Checkpoint.LoadModel(path, allowNonFinite);
        try
        {
            return new ServedModel(name, path, model, GptTokenizer.Load(state.Tokenizer), engine, kv);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    readonly System.Collections.Concurrent.ConcurrentDictionary<string, Inference.Cpu.CpuAdapter> _adapters = new();

    /// <summary>LoRA adapters served on this model's weights (each as <c>name:adapter</c>), by name.</summary>
    public IReadOnlyDictionary<string, Inference.Cpu.CpuAdapter> Adapters => _adapters;

    static readonly System.Text.RegularExpressions.Regex AdapterName = new(@"\A[A-Za-z0-9_.-]{1,64}\z");

    /// <summary>
    /// Loads a LoRA run's adapters to decode beside this model's weights, held once: <paramref name="name"/> (1–64 letters,
    /// digits, <c>_ . -</c>) must be new, the run's frozen weights this model's own, and this model decoded by the CPU
    /// engine (which adds each row's adapter in the batch). Errors: <see cref="ArgumentException"/> (a bad name or folder),
    /// <see cref="InvalidOperationException"/> (the name is taken), <see cref="InvalidDataException"/> (another base, or shapes that do not fit).
    /// </summary>
    public Inference.Cpu.CpuAdapter LoadAdapter(string name, string runDirectory)
    {
        if (!AdapterName.IsMatch(name)) throw new ArgumentException($"Adapter name '{name}': expected 1–64 letters, digits, '_', '.' or '-'.", nameof(name));
        if (_adapters.ContainsKey(name)) throw new InvalidOperationException($"'{Name}:{name}' is already served; remove it first.");
        if (Decoder.Engine is null)
            throw new NotSupportedException($"Adapters are decoded apart from the base by the CPU engine only, and '{Name}' runs on libtorch; serve it with --engine cpu (or auto on a CPU).");
        string weights;
        try { weights = Checkpoint.WeightsPath(runDirectory); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or InvalidDataException)
        {
            throw new ArgumentException($"No LoRA run at '{runDirectory}': {e.Message}", nameof(runDirectory), e);
        }
        // The run's file holds the whole model: its frozen weights are checked against ours one at a time and dropped, and
        // only the adapters' tensors are kept, so loading an adapter never holds a second copy of the base.
        var lora = new Dictionary<string, TorchSharp.torch.Tensor>();
        using var scope = TorchSharp.torch.NewDisposeScope();
        try
        {
            var baseState = Model.state_dict().Where(kv => kv.Value.is_floating_point() && !kv.Key.Contains(".lora_")).ToDictionary(kv => kv.Key, kv => kv.Value);
            var seen = new HashSet<string>();
            Runtime.SafeTensors.Read(weights, _ => true, (key, tensor) =>
            {
                if (key.Contains(".lora_")) { lora[key] = tensor; return; }
                using (tensor)
                    if (tensor.is_floating_point())
                    {
                        Inference.Cpu.CpuAdapter.CheckBaseWeight(name, key, tensor, baseState);
                        seen.Add(key);
                    }
            });
            if (baseState.Keys.FirstOrDefault(k => !seen.Contains(k)) is { } absent)
                throw new InvalidDataException($"Adapter '{name}' was trained on another base: it has no '{absent}'.");
            var adapter = Inference.Cpu.CpuAdapter.From(name, Model.Config, lora);
            if (!_adapters.TryAdd(name, adapter)) throw new InvalidOperationException($"'{Name}:{name}' is already served; remove it first.");
            return adapter;
        }
        finally { foreach (var tensor in lora.Values) tensor.Dispose(); }
    }

    /// <summary>Stops serving an adapter (requests already decoding with it finish); false when there is none of that name.</summary>
    public bool RemoveAdapter(string name) => _adapters.TryRemove(name, out _);

    /// <summary>A serve spec's name and folder: <c>name=folder</c>, or the folder's last component (a PPO run's <c>policy</c> folder by its run's).</summary>
    public static (string Name, string Path) NameAndPath(string spec)
    {
        int equals = spec.IndexOf('=');
        string path = equals > 0 ? spec[(equals + 1)..] : spec;
        string full = System.IO.Path.GetFullPath(path).TrimEnd(System.IO.Path.DirectorySeparatorChar);
        string name = equals > 0 ? spec[..equals]
            : System.IO.Path.GetFileName(full) == RlRun.PolicyFolder ? System.IO.Path.GetFileName(System.IO.Path.GetDirectoryName(full)!) : System.IO.Path.GetFileName(full);
        return (name, path);
    }

    /// <summary>The embeddings' width (the model's).</summary>
    public int Width => Model.Config.Width;

    /// <summary>
    /// A text's embedding: the mean of the model's final hidden states over its tokens (BOS first), width C. A text
    /// longer than the context is refused (an <see cref="ArgumentException"/> with both counts), never cut.
    /// </summary>
    public float[] Embed(int[] tokens)
    {
        int[] ids = [Tokenizer.BosId, .. tokens];
        if (ids.Length > ContextLength)
            throw new ArgumentException($"{tokens.Length} tokens (with BOS {ids.Length}); '{Name}' embeds at most {ContextLength} with BOS.", nameof(tokens));
        using var noGrad = TorchSharp.torch.no_grad();
        using var scope = TorchSharp.torch.NewDisposeScope();
        var input = TorchSharp.torch.tensor(ids.Select(t => (long)t).ToArray(), device: Model.parameters().First().device).unsqueeze(0);
        return Model.Hidden(input).mean([1]).squeeze(0).to(TorchSharp.torch.ScalarType.Float32).cpu().data<float>().ToArray();   // (C)
    }

    /// <summary>
    /// Generates and hands out text as it grows: <paramref name="onText"/> gets each new piece (never half a UTF-8
    /// character, never a stop sequence). Cancelling (e.g. the client went away) stops generation at the next token.
    /// With <paramref name="speculation"/>, by speculative decoding (the same tokens greedy, the same distribution sampled).
    /// </summary>
    public Generation Generate(int[] prompt, SamplingOptions options, Action<string>? onText, CancellationToken cancellation, Speculation? speculation = null)
    {
        var text = new AnswerText(Tokenizer, options.StopSequences, onText);
        var generation = speculation is null ? Decoder.Generate(prompt, options, text.Add, Decode, cancellation)
            : Decoder.Generate(prompt, options, speculation.Drafter, speculation.Tokens, text.Add, Decode, cancellation).Generation;
        text.Finish();
        return generation;
    }

    /// <summary>Decodes generated text without special tokens (for stop sequences).</summary>
    public string Decode(IEnumerable<int> ids) => Tokenizer.Decode(ids.Where(t => !Tokenizer.IsSpecial(t)));

    /// <summary>The answer's text for generated tokens, cut at the first stop sequence (as streaming hands it out).</summary>
    public string Text(Generation generation, IReadOnlyList<string>? stops)
    {
        var text = new AnswerText(Tokenizer, stops);
        foreach (int token in generation.Tokens) text.Add(token);
        return text.Finish();
    }

    public void Dispose()
    {
        Decoder.Dispose();
        Model.Dispose();
    }
}
