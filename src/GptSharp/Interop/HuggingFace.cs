using GptSharp.Runs;
using GptSharp.Runtime;
using System.Text.Json;
using System.Text.Json.Nodes;
using GptSharp.Models;
using GptSharp.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Interop;

/// <summary>
/// Exchanges GPT runs with Hugging Face <c>transformers</c> folders: GPT-2-family runs as <c>GPT2LMHeadModel</c>
/// (GPT-2's tensor names; its Conv1D weights are stored [in, out], the transpose of a Linear's), Llama/PaLM-family runs
/// as <c>LlamaForCausalLM</c> (q, k, v split out of the fused projection). Writes <c>config.json</c>,
/// <c>generation_config.json</c>, <c>model.safetensors</c> and the tokenizer (<c>tokenizer.json</c> for
/// <c>AutoTokenizer</c>, and GptSharp's own files under <c>gptsharp-tokenizer/</c>); reads such folders back, checking every tensor's presence and shape.
/// </summary>
public static class HuggingFace
{
    public const string TokenizerFolder = "gptsharp-tokenizer";

    /// <summary>The Hugging Face architecture a config maps onto (gpt2, llama, qwen2, qwen3), or an error naming the field that has no counterpart.</summary>
    public static string Architecture(GptConfig c)
    {
        if (c.ParallelBlock) throw new NotSupportedException("ParallelBlock: PaLM's parallel block has no Hugging Face GPT-2 or Llama counterpart.");
        if (c.Norm == NormKind.LayerNorm && c.Positions == PositionKind.Learned && c.Activation == ActivationKind.GeluTanh && c.Bias && c.TiedEmbeddings
            && c.KvHeads == c.Heads && c.HeadSize == 0 && !c.QkvBias && !c.QkNorm)
            return "gpt2";
        if (c.Norm == NormKind.RmsNorm && c.Positions == PositionKind.Rotary && c.Activation == ActivationKind.SwiGlu && !c.Bias)
        {
            if (c.QkvBias && c.QkNorm) throw new NotSupportedException("QkvBias with QkNorm: no Hugging Face layout has both.");
            if (c.RopeScaling is not null && (c.QkvBias || c.QkNorm)) throw new NotSupportedException("RopeScaling is written for the llama layout only.");
            return c.QkvBias ? "qwen2" : c.QkNorm ? "qwen3" : "llama";
        }
        throw new NotSupportedException($"This layout (Norm {c.Norm}, Positions {c.Positions}, Activation {c.Activation}, Bias {c.Bias}, TiedEmbeddings {c.TiedEmbeddings}) " +
                                        "is neither GPT-2's nor Llama's (or Qwen's); export supports those.");
    }

    /// <summary>Writes a run's model as a Hugging Face folder.</summary>
    public static void Export(string runDirectory, string outDirectory)
    {
        var (model, state) = Checkpoint.LoadModel(runDirectory);
        using var _ = model;
        var c = model.Config;
        string architecture = Architecture(c);
        var tokenizer = GptTokenizer.Load(state.Tokenizer);
        HuggingFaceTokenizer.PreTokenizerJson(tokenizer.Spec.Pattern); // fail before writing anything if tokenizer.json cannot express it
        Directory.CreateDirectory(outDirectory);
        using var scope = NewDisposeScope();
        var weights = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value);
        var tensors = architecture == "gpt2" ? ToGpt2(weights, c) : ToLlama(weights, c, architecture);
        SafeTensors.Save(Path.Combine(outDirectory, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        var config = architecture == "gpt2"
            ? new JsonObject
            {
                ["architectures"] = new JsonArray("GPT2LMHeadModel"), ["model_type"] = "gpt2", ["vocab_size"] = c.VocabSize,
                ["n_positions"] = c.ContextLength, ["n_ctx"] = c.ContextLength, ["n_embd"] = c.Width, ["n_layer"] = c.Layers, ["n_head"] = c.Heads,
                ["n_inner"] = c.MlpHidden, ["activation_function"] = "gelu_new", ["layer_norm_epsilon"] = c.NormEpsilon,
                ["resid_pdrop"] = c.Dropout, ["embd_pdrop"] = c.Dropout, ["attn_pdrop"] = c.Dropout, ["tie_word_embeddings"] = true,
                ["bos_token_id"] = tokenizer.BosId, ["eos_token_id"] = tokenizer.EosId, ["torch_dtype"] = "float32",
            }
            : LlamaFamilyConfig(c, architecture, tokenizer);
        var options = new JsonSerializerOptions { WriteIndented = true };
        AtomicFile.WriteAllText(Path.Combine(outDirectory, "config.json"), config.ToJsonString(options));
        AtomicFile.WriteAllText(Path.Combine(outDirectory, "generation_config.json"), new JsonObject
        {
            ["bos_token_id"] = tokenizer.BosId, ["eos_token_id"] = tokenizer.EosId, ["max_length"] = c.ContextLength,
        }.ToJsonString(options));
        HuggingFaceTokenizer.Save(tokenizer, outDirectory, c.ContextLength, HuggingFaceTokenizer.KeptTemplate(state.Tokenizer));
        GptTokenizer.Copy(state.Tokenizer, Path.Combine(outDirectory, TokenizerFolder));
    }

    /// <summary>
    /// Reads a Hugging Face GPT-2 or Llama folder into a GptSharp run folder (weights, config, tokenizer reference).
    /// When the tokenizer has more ids than the model (GptSharp's chat tokens appended to <c>gpt2</c>'s 50,257, say), the
    /// embedding — and an untied output layer — grows by that many rows, each the mean of the existing rows, as
    /// Hugging Face's <c>resize_token_embeddings</c> does; logits of the existing ids are unchanged.
    /// </summary>
    /// <param name="tokenizer">The tokenizer to record; default: the folder's <c>gptsharp-tokenizer/</c>, else its own <c>tokenizer.json</c>.</param>
    /// <returns>The imported model's config and how many token rows were added.</returns>
    /// <param name="chatFormat">For a folder's own tokenizer.json: how conversations are written (default: recognised from its chat template).</param>
    public static (GptConfig Config, int AddedTokens) Import(string hfDirectory, string runDirectory, string? tokenizer = null, string? chatFormat = null)
    {
        string configPath = Path.Combine(hfDirectory, "config.json");
        if (!File.Exists(configPath)) throw new FileNotFoundException($"No config.json in '{hfDirectory}'.", configPath);
        var json = JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject ?? throw new InvalidDataException($"{configPath}: expected a JSON object.");
        string modelType = json["model_type"] is JsonValue mt && mt.TryGetValue(out string? type) ? type : throw new InvalidDataException($"{configPath}: field 'model_type' is missing.");
        var config = modelType switch
        {
            "gpt2" => Gpt2Config(json, configPath),
            "llama" or "qwen2" or "qwen3" => LlamaConfig(json, modelType, configPath),
            _ => throw new NotSupportedException($"{configPath}: model_type '{modelType}' is not supported; GptSharp imports gpt2, llama, qwen2 and qwen3."),
        };
        var shards = Shards(hfDirectory);
        if (tokenizer is null && !Directory.Exists(Path.Combine(hfDirectory, TokenizerFolder)))
        {
            // A model from elsewhere: its own tokenizer.json, converted into the run folder.
            if (!File.Exists(Path.Combine(hfDirectory, "tokenizer.json")))
                throw new FileNotFoundException($"'{hfDirectory}' has neither tokenizer.json nor a {TokenizerFolder}/ folder: pass --tokenizer with the " +
                                                "vocabulary the model was trained with (a GptSharp tokenizer folder, gpt2 or cl100k_base).", Path.Combine(hfDirectory, "tokenizer.json"));
            tokenizer = Path.Combine(runDirectory, RunFolder.TokenizerFolder);
            HuggingFaceTokenizer.Import(hfDirectory, tokenizer, chatFormat);
        }
        tokenizer ??= Path.Combine(hfDirectory, TokenizerFolder);
        var tok = GptTokenizer.Load(tokenizer);
        int added = Math.Max(0, tok.VocabSize - config.VocabSize);
        config = config with { VocabSize = config.VocabSize + added };

        using var model = new Gpt(config);
        LoadWeights(model, modelType, shards);
        string recorded = RunFolder.KeepTokenizer(runDirectory, tokenizer); // built-in names stay names; a folder is copied into the run
        Checkpoint.Save(runDirectory, model, null, new TrainingState(0, "0:0", "", recorded));
        Checkpoint.WriteRunConfig(runDirectory, new { objective = "import", from = Path.GetFullPath(hfDirectory), model = config, tokenizer = recorded, addedTokens = added });
        return (config, added);
    }

    /// <summary>GPT-2's tensors: (GptSharp name, Hugging Face name, stored transposed as Conv1D [in, out]).</summary>
    static IEnumerable<(string Ours, string Hf, bool Transposed)> Gpt2Names(GptConfig c)
    {
        yield return ("wte.weight", "transformer.wte.weight", false);
        yield return ("wpe.weight", "transformer.wpe.weight", false);
        for (int i = 0; i < c.Layers; i++)
        {
            foreach (string norm in new[] { "ln_1", "ln_2" })
                foreach (string part in new[] { "weight", "bias" }) yield return ($"h.{i}.{norm}.{part}", $"transformer.h.{i}.{norm}.{part}", false);
            foreach (string linear in new[] { "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj" })
            {
                yield return ($"h.{i}.{linear}.weight", $"transformer.h.{i}.{linear}.weight", true);
                yield return ($"h.{i}.{linear}.bias", $"transformer.h.{i}.{linear}.bias", false);
            }
        }
        yield return ("ln_f.weight", "transformer.ln_f.weight", false);
        yield return ("ln_f.bias", "transformer.ln_f.bias", false);
    }

    static Dictionary<string, Tensor> ToGpt2(Dictionary<string, Tensor> w, GptConfig c) =>
        Gpt2Names(c).ToDictionary(n => n.Hf, n => n.Transposed ? w[n.Ours].t().contiguous() : w[n.Ours]);

    /// <summary>Llama's one-to-one tensors (GptSharp name, Hugging Face name) — with Qwen2's q, k, v biases and Qwen3's
    /// q and k norms; q, k, v themselves are split from c_attn separately.</summary>
    static IEnumerable<(string Ours, string Hf)> LlamaNames(GptConfig c)
    {
        yield return ("wte.weight", "model.embed_tokens.weight");
        yield return ("ln_f.weight", "model.norm.weight");
        if (!c.TiedEmbeddings) yield return ("lm_head.weight", "lm_head.weight");
        for (int i = 0; i < c.Layers; i++)
        {
            string ours = $"h.{i}.", hf = $"model.layers.{i}.";
            yield return ($"{ours}attn.c_proj.weight", $"{hf}self_attn.o_proj.weight");
            yield return ($"{ours}ln_1.weight", $"{hf}input_layernorm.weight");
            yield return ($"{ours}ln_2.weight", $"{hf}post_attention_layernorm.weight");
            foreach (string projection in new[] { "gate_proj", "up_proj", "down_proj" }) yield return ($"{ours}mlp.{projection}.weight", $"{hf}mlp.{projection}.weight");
            if (c.QkNorm)
            {
                yield return ($"{ours}attn.q_norm.weight", $"{hf}self_attn.q_norm.weight");
                yield return ($"{ours}attn.k_norm.weight", $"{hf}self_attn.k_norm.weight");
            }
        }
    }

    /// <summary>Where q, k and v sit in the fused projection's rows: (Hugging Face part, first row, rows).</summary>
    static IEnumerable<(string Part, long Start, long Rows)> QkvRows(GptConfig c)
    {
        int q = c.Heads * c.HeadDim, kv = c.KvHeads * c.HeadDim;
        return [("q_proj", 0, q), ("k_proj", q, kv), ("v_proj", q + kv, kv)];
    }

    static Dictionary<string, Tensor> ToLlama(Dictionary<string, Tensor> w, GptConfig c, string architecture)
    {
        var t = LlamaNames(c).ToDictionary(n => n.Hf, n => w[n.Ours]);
        for (int i = 0; i < c.Layers; i++)
            foreach (var (part, start, rows) in QkvRows(c))
            {
                string hf = $"model.layers.{i}.self_attn.{part}";
                t[$"{hf}.weight"] = w[$"h.{i}.attn.c_attn.weight"].narrow(0, start, rows).contiguous();
                if (architecture == "qwen2") t[$"{hf}.bias"] = w[$"h.{i}.attn.c_attn.bias"].narrow(0, start, rows).contiguous();
            }
        return t;
    }

    /// <summary>Each Hugging Face tensor the model needs: which of ours it fills, from which row, and whether it is
    /// stored transposed (GPT-2's Conv1D).</summary>
    static Dictionary<string, (string Ours, long Row, long Rows, bool Transposed)> Targets(GptConfig c, string modelType)
    {
        // Rows −1: the whole tensor; otherwise a slice of the fused q, k, v projection.
        if (modelType == "gpt2") return Gpt2Names(c).ToDictionary(n => n.Hf, n => (n.Ours, 0L, -1L, n.Transposed));
        var targets = LlamaNames(c).ToDictionary(n => n.Hf, n => (n.Ours, 0L, -1L, false));
        for (int i = 0; i < c.Layers; i++)
            foreach (var (part, start, rows) in QkvRows(c))
            {
                targets[$"model.layers.{i}.self_attn.{part}.weight"] = ($"h.{i}.attn.c_attn.weight", start, rows, false);
                if (c.QkvBias) targets[$"model.layers.{i}.self_attn.{part}.bias"] = ($"h.{i}.attn.c_attn.bias", start, rows, false);
            }
        return targets;
    }

    /// <summary>The weight files of a folder: <c>model.safetensors</c>, or the shards <c>model.safetensors.index.json</c> lists.</summary>
    static List<string> Shards(string hfDirectory)
    {
        string single = Path.Combine(hfDirectory, "model.safetensors"), index = Path.Combine(hfDirectory, "model.safetensors.index.json");
        if (File.Exists(single)) return [single];
        if (!File.Exists(index))
            throw new FileNotFoundException($"No model.safetensors or model.safetensors.index.json in '{hfDirectory}' (pickled .bin weights are never read).", single);
        var map = (JsonNode.Parse(File.ReadAllText(index)) as JsonObject)?["weight_map"] as JsonObject
            ?? throw new InvalidDataException($"{index}: expected an object with a 'weight_map' of tensor names to files.");
        var files = new List<string>();
        foreach (var (name, file) in map)
        {
            string shard = file is JsonValue v && v.TryGetValue(out string? f) && f.Length > 0 && !f.Contains('/') && !f.Contains('\\') && f != ".." ? f
                : throw new InvalidDataException($"{index}: weight_map['{name}'] must be a file name in the folder.");
            string path = Path.Combine(hfDirectory, shard);
            if (!files.Contains(path))
            {
                if (!File.Exists(path)) throw new FileNotFoundException($"{index}: shard '{shard}' (holding '{name}') is missing.", path);
                files.Add(path);
            }
        }
        return files;
    }

    /// <summary>
    /// Fills the model from the weight files one tensor at a time (F32, F16 or BF16, computed in F32): each tensor is
    /// read, converted, copied into place and freed, so loading holds the model and one tensor, not two copies. Rows of
    /// an embedding the tokenizer grew are the mean of the stored rows. Every needed tensor must appear once, with its shape.
    /// </summary>
    static void LoadWeights(Gpt model, string modelType, IReadOnlyList<string> shards)
    {
        var c = model.Config;
        var targets = Targets(c, modelType);
        var state = model.state_dict();
        var loaded = new HashSet<string>();
        using var noGrad = no_grad();
        foreach (string shard in shards)
            SafeTensors.Read(shard, targets.ContainsKey, (name, stored) =>
            {
                using var scope = NewDisposeScope();
                using var _ = stored;
                if (!loaded.Add(name)) throw new InvalidDataException($"{shard}: tensor '{name}' appears in two shards.");
                if (stored.dtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
                    throw new InvalidDataException($"{shard}: tensor '{name}' is {stored.dtype}; weights must be F32, F16 or BF16.");
                var (ours, row, rows, transposed) = targets[name];
                // copy_ converts F16/BF16 to F32 as it copies: no F32 copy of the tensor is made on the way.
                var source = stored;
                if (transposed)
                {
                    if (source.dim() != 2) throw new InvalidDataException($"{shard}: tensor '{name}' must be a matrix, has {source.dim()} dimensions.");
                    source = source.t();
                }
                var destination = state[ours];
                if (rows >= 0) destination = destination.narrow(0, row, rows);
                bool grown = ours is "wte.weight" or "lm_head.weight" && source.dim() == 2 && source.shape[1] == destination.shape[1] && source.shape[0] < destination.shape[0];
                if (grown)
                {
                    destination.narrow(0, 0, source.shape[0]).copy_(source);
                    destination.narrow(0, source.shape[0], destination.shape[0] - source.shape[0])
                        .copy_(source.to(ScalarType.Float32).mean([0], keepdim: true).expand(destination.shape[0] - source.shape[0], -1));
                    return;
                }
                if (!source.shape.SequenceEqual(destination.shape))
                    throw new InvalidDataException($"{shard}: tensor '{name}' has shape [{string.Join(", ", source.shape)}], expected [{string.Join(", ", destination.shape)}] from config.json.");
                destination.copy_(source);
            });
        if (targets.Keys.FirstOrDefault(name => !loaded.Contains(name)) is { } missing)
            throw new InvalidDataException($"Tensor '{missing}' is missing from {(shards.Count == 1 ? shards[0] : $"the {shards.Count} shards")}.");
    }

    static int Int(JsonObject json, string field, string path) =>
        json[field] is JsonValue v && v.TryGetValue(out int n) && n > 0 ? n : throw new InvalidDataException($"{path}: field '{field}' is missing or not a positive integer.");

    static double Double(JsonObject json, string field, double fallback, string path) => json[field] switch
    {
        null => fallback,
        JsonValue v when v.TryGetValue(out double d) => d,
        _ => throw new InvalidDataException($"{path}: field '{field}' must be a number."),
    };

    static GptConfig Gpt2Config(JsonObject json, string path)
    {
        string activation = json["activation_function"]?.GetValue<string>() ?? "gelu_new";
        if (activation is not ("gelu_new" or "gelu_pytorch_tanh"))
            throw new NotSupportedException($"{path}: activation_function '{activation}' is not supported; GPT-2's is gelu_new.");
        int width = Int(json, "n_embd", path);
        int hidden = json["n_inner"] is JsonValue inner && inner.TryGetValue(out int n) ? n : 4 * width;
        return new GptConfig
        {
            VocabSize = Int(json, "vocab_size", path), ContextLength = Int(json, "n_positions", path), Layers = Int(json, "n_layer", path),
            Heads = Int(json, "n_head", path), KvHeads = Int(json, "n_head", path), Width = width, MlpRatio = hidden / (double)width,
            NormEpsilon = Double(json, "layer_norm_epsilon", 1e-5, path),
        }.Validate();
    }

    /// <summary>
    /// A Llama, Qwen2 or Qwen3 config: every field that changes the math is read (head_dim, rope_theta, rope_scaling
    /// llama3, tied embeddings, Qwen2's q/k/v biases, Qwen3's q/k norms) or refused by name.
    /// </summary>
    static GptConfig LlamaConfig(JsonObject json, string modelType, string path)
    {
        string activation = json["hidden_act"] is JsonValue a && a.TryGetValue(out string? act) ? act : "silu";
        if (activation != "silu") throw new NotSupportedException($"{path}: hidden_act '{activation}' is not supported; the gated MLP here uses silu.");
        if (Flag(json, "mlp_bias", path)) throw new NotSupportedException($"{path}: mlp_bias true is not supported.");
        if (modelType == "llama" && Flag(json, "attention_bias", path)) throw new NotSupportedException($"{path}: attention_bias true (biases on q, k, v and o) is not supported for llama.");
        if (modelType == "qwen3" && Flag(json, "attention_bias", path)) throw new NotSupportedException($"{path}: attention_bias true is not supported for qwen3.");
        if (Flag(json, "use_sliding_window", path)) throw new NotSupportedException($"{path}: use_sliding_window true (sliding-window attention) is not supported.");
        if (json["partial_rotary_factor"] is JsonValue prf && !(prf.TryGetValue(out double factor) && factor == 1))
            throw new NotSupportedException($"{path}: partial_rotary_factor {prf.ToJsonString()} is not supported (rotary over the whole head only).");
        int width = Int(json, "hidden_size", path), hidden = Int(json, "intermediate_size", path);
        int heads = Int(json, "num_attention_heads", path);
        int headDim = json["head_dim"] is null || json["head_dim"]!.GetValueKind() == JsonValueKind.Null ? 0 : Int(json, "head_dim", path);
        var config = GptConfig.Llama(Int(json, "vocab_size", path), Int(json, "max_position_embeddings", path), Int(json, "num_hidden_layers", path),
            heads, json["num_key_value_heads"] is null ? heads : Int(json, "num_key_value_heads", path), width) with
        {
            MlpWidth = hidden, NormEpsilon = Double(json, "rms_norm_eps", 1e-6, path), RotaryBase = Double(json, "rope_theta", 10000, path),
            TiedEmbeddings = Flag(json, "tie_word_embeddings", path), HeadSize = headDim == width / heads && width % heads == 0 ? 0 : headDim,
            QkvBias = modelType == "qwen2", QkNorm = modelType == "qwen3", RopeScaling = Scaling(json, path),
        };
        try { return config.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
    }

    static RopeScaling? Scaling(JsonObject json, string path)
    {
        if (json["rope_scaling"] is not JsonObject scaling) return json["rope_scaling"] is null || json["rope_scaling"]!.GetValueKind() == JsonValueKind.Null ? null
            : throw new InvalidDataException($"{path}: rope_scaling must be an object or null.");
        string type = (scaling["rope_type"] ?? scaling["type"]) is JsonValue t && t.TryGetValue(out string? name) ? name : "";
        if (type == "default") return null;
        if (type != "llama3") throw new NotSupportedException($"{path}: rope_scaling type '{type}' is not supported; llama3 is.");
        return new RopeScaling(Double(scaling, "factor", 8, path), Double(scaling, "low_freq_factor", 1, path), Double(scaling, "high_freq_factor", 4, path),
            Int(scaling, "original_max_position_embeddings", path));
    }

    static bool Flag(JsonObject json, string field, string path) => json[field] switch
    {
        null => false,
        JsonValue v when v.GetValueKind() == JsonValueKind.Null => false,
        JsonValue v when v.TryGetValue(out bool b) => b,
        _ => throw new InvalidDataException($"{path}: field '{field}' must be true or false."),
    };

    /// <summary>config.json for the Llama family: llama (with head_dim and rope_scaling when set), qwen2, qwen3.</summary>
    static JsonObject LlamaFamilyConfig(GptConfig c, string architecture, GptTokenizer tokenizer)
    {
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray(architecture switch { "qwen2" => "Qwen2ForCausalLM", "qwen3" => "Qwen3ForCausalLM", _ => "LlamaForCausalLM" }),
            ["model_type"] = architecture, ["vocab_size"] = c.VocabSize,
            ["hidden_size"] = c.Width, ["intermediate_size"] = c.MlpHidden, ["num_hidden_layers"] = c.Layers, ["num_attention_heads"] = c.Heads,
            ["num_key_value_heads"] = c.KvHeads, ["head_dim"] = c.HeadDim, ["max_position_embeddings"] = c.ContextLength, ["rms_norm_eps"] = c.NormEpsilon,
            ["rope_theta"] = c.RotaryBase, ["hidden_act"] = "silu", ["tie_word_embeddings"] = c.TiedEmbeddings,
            ["bos_token_id"] = tokenizer.BosId, ["eos_token_id"] = tokenizer.EosId, ["torch_dtype"] = "float32",
        };
        if (architecture != "qwen2") config["attention_bias"] = false;
        if (architecture == "llama") config["mlp_bias"] = false;
        if (architecture == "qwen2") config["use_sliding_window"] = false;
        if (c.RopeScaling is { } s)
            config["rope_scaling"] = new JsonObject
            {
                ["rope_type"] = "llama3", ["factor"] = s.Factor, ["low_freq_factor"] = s.LowFrequencyFactor, ["high_freq_factor"] = s.HighFrequencyFactor,
                ["original_max_position_embeddings"] = s.OriginalContext,
            };
        return config;
    }
}
