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

    /// <summary>The Hugging Face architecture a config maps onto, or an error naming the field that has no counterpart.</summary>
    public static string Architecture(GptConfig c)
    {
        if (c.ParallelBlock) throw new NotSupportedException("ParallelBlock: PaLM's parallel block has no Hugging Face GPT-2 or Llama counterpart.");
        if (c.Norm == NormKind.LayerNorm && c.Positions == PositionKind.Learned && c.Activation == ActivationKind.GeluTanh && c.Bias && c.TiedEmbeddings && c.KvHeads == c.Heads)
            return "gpt2";
        if (c.Norm == NormKind.RmsNorm && c.Positions == PositionKind.Rotary && c.Activation == ActivationKind.SwiGlu && !c.Bias)
            return "llama";
        throw new NotSupportedException($"This layout (Norm {c.Norm}, Positions {c.Positions}, Activation {c.Activation}, Bias {c.Bias}, TiedEmbeddings {c.TiedEmbeddings}) " +
                                        "is neither GPT-2's nor Llama's; export supports those two.");
    }

    /// <summary>Writes a run's model as a Hugging Face folder.</summary>
    public static void Export(string runDirectory, string outDirectory)
    {
        var (model, state) = Checkpoint.LoadModel(runDirectory);
        using var _ = model;
        var c = model.Config;
        string architecture = Architecture(c);
        var tokenizer = GptTokenizer.Load(state.Tokenizer);
        PreTokenizerPatterns.Portable(tokenizer.Spec.Pattern); // fail before writing anything if tokenizer.json cannot express it
        Directory.CreateDirectory(outDirectory);
        using var scope = NewDisposeScope();
        var weights = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value);
        var tensors = architecture == "gpt2" ? ToGpt2(weights, c) : ToLlama(weights, c);
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
            : new JsonObject
            {
                ["architectures"] = new JsonArray("LlamaForCausalLM"), ["model_type"] = "llama", ["vocab_size"] = c.VocabSize,
                ["hidden_size"] = c.Width, ["intermediate_size"] = c.MlpHidden, ["num_hidden_layers"] = c.Layers, ["num_attention_heads"] = c.Heads,
                ["num_key_value_heads"] = c.KvHeads, ["max_position_embeddings"] = c.ContextLength, ["rms_norm_eps"] = c.NormEpsilon,
                ["rope_theta"] = c.RotaryBase, ["hidden_act"] = "silu", ["attention_bias"] = false, ["mlp_bias"] = false,
                ["tie_word_embeddings"] = c.TiedEmbeddings, ["bos_token_id"] = tokenizer.BosId, ["eos_token_id"] = tokenizer.EosId, ["torch_dtype"] = "float32",
            };
        var options = new JsonSerializerOptions { WriteIndented = true };
        AtomicFile.WriteAllText(Path.Combine(outDirectory, "config.json"), config.ToJsonString(options));
        AtomicFile.WriteAllText(Path.Combine(outDirectory, "generation_config.json"), new JsonObject
        {
            ["bos_token_id"] = tokenizer.BosId, ["eos_token_id"] = tokenizer.EosId, ["max_length"] = c.ContextLength,
        }.ToJsonString(options));
        HuggingFaceTokenizer.Save(tokenizer, outDirectory, c.ContextLength);
        GptTokenizer.Copy(state.Tokenizer, Path.Combine(outDirectory, TokenizerFolder));
    }

    /// <summary>
    /// Reads a Hugging Face GPT-2 or Llama folder into a GptSharp run folder (weights, config, tokenizer reference).
    /// When the tokenizer has more ids than the model (GptSharp's chat tokens appended to <c>gpt2</c>'s 50,257, say), the
    /// embedding — and an untied output layer — grows by that many rows, each the mean of the existing rows, as
    /// Hugging Face's <c>resize_token_embeddings</c> does; logits of the existing ids are unchanged.
    /// </summary>
    /// <param name="tokenizer">The tokenizer to record; default: the folder's <c>gptsharp-tokenizer/</c>.</param>
    /// <returns>The imported model's config and how many token rows were added.</returns>
    public static (GptConfig Config, int AddedTokens) Import(string hfDirectory, string runDirectory, string? tokenizer = null)
    {
        string configPath = Path.Combine(hfDirectory, "config.json");
        if (!File.Exists(configPath)) throw new FileNotFoundException($"No config.json in '{hfDirectory}'.", configPath);
        var json = JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject ?? throw new InvalidDataException($"{configPath}: expected a JSON object.");
        string modelType = json["model_type"]?.GetValue<string>() ?? throw new InvalidDataException($"{configPath}: field 'model_type' is missing.");
        var config = modelType switch
        {
            "gpt2" => Gpt2Config(json, configPath),
            "llama" => LlamaConfig(json, configPath),
            _ => throw new NotSupportedException($"{configPath}: model_type '{modelType}' is not supported; GptSharp imports gpt2 and llama."),
        };
        string weightsPath = Path.Combine(hfDirectory, "model.safetensors");
        if (!File.Exists(weightsPath)) throw new FileNotFoundException($"No model.safetensors in '{hfDirectory}' (pickled .bin weights are never read).", weightsPath);
        if (tokenizer is null && !Directory.Exists(Path.Combine(hfDirectory, TokenizerFolder)))
            throw new FileNotFoundException($"'{hfDirectory}' has no {TokenizerFolder}/ folder (it was not exported by GptSharp): pass --tokenizer with the " +
                                            "vocabulary the model was trained with (a GptSharp tokenizer folder, gpt2 or cl100k_base).", Path.Combine(hfDirectory, TokenizerFolder));
        tokenizer ??= Path.Combine(hfDirectory, TokenizerFolder);
        var tok = GptTokenizer.Load(tokenizer);
        int added = Math.Max(0, tok.VocabSize - config.VocabSize);
        var stored = config;
        config = config with { VocabSize = config.VocabSize + added };

        using var model = new Gpt(config);
        var (tensors, _) = SafeTensors.Load(weightsPath);
        try
        {
            using var scope = NewDisposeScope();
            var ours = modelType == "gpt2" ? FromGpt2(tensors, config, weightsPath) : FromLlama(tensors, config, weightsPath);
            using var noGrad = no_grad();
            if (added > 0)
                foreach (string name in new[] { "wte.weight", "lm_head.weight" })
                    if (ours.TryGetValue(name, out var rows) && rows.dim() == 2 && rows.shape[0] == stored.VocabSize)
                        ours[name] = cat([rows, rows.mean([0], keepdim: true).expand(added, -1)], 0);
            Checkpoint.LoadInto(model.state_dict(), ours, weightsPath);
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
        string recorded = tokenizer is "gpt2" or "cl100k_base" ? tokenizer : Path.GetFullPath(tokenizer); // built-in names stay names
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

    static Dictionary<string, Tensor> FromGpt2(Dictionary<string, Tensor> t, GptConfig c, string path) =>
        Gpt2Names(c).ToDictionary(n => n.Ours, n =>
        {
            var tensor = t.TryGetValue(n.Hf, out var v) ? v : throw new InvalidDataException($"{path}: tensor '{n.Hf}' is missing.");
            if (!n.Transposed) return tensor;
            if (tensor.dim() != 2) throw new InvalidDataException($"{path}: tensor '{n.Hf}' must be a matrix, has {tensor.dim()} dimensions.");
            return tensor.t().contiguous();
        });

    /// <summary>Llama's one-to-one tensors (GptSharp name, Hugging Face name); q, k, v are split from c_attn separately.</summary>
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
        }
    }

    static Dictionary<string, Tensor> ToLlama(Dictionary<string, Tensor> w, GptConfig c)
    {
        int q = c.Heads * c.HeadDim, kv = c.KvHeads * c.HeadDim;
        var t = LlamaNames(c).ToDictionary(n => n.Hf, n => w[n.Ours]);
        for (int i = 0; i < c.Layers; i++)
        {
            var fused = w[$"h.{i}.attn.c_attn.weight"];
            string hf = $"model.layers.{i}.self_attn.";
            t[$"{hf}q_proj.weight"] = fused.narrow(0, 0, q).contiguous();
            t[$"{hf}k_proj.weight"] = fused.narrow(0, q, kv).contiguous();
            t[$"{hf}v_proj.weight"] = fused.narrow(0, q + kv, kv).contiguous();
        }
        return t;
    }

    static Dictionary<string, Tensor> FromLlama(Dictionary<string, Tensor> t, GptConfig c, string path)
    {
        Tensor Get(string name) => t.TryGetValue(name, out var v) ? v : throw new InvalidDataException($"{path}: tensor '{name}' is missing.");
        var w = LlamaNames(c).ToDictionary(n => n.Ours, n => Get(n.Hf));
        for (int i = 0; i < c.Layers; i++)
        {
            string hf = $"model.layers.{i}.self_attn.";
            w[$"h.{i}.attn.c_attn.weight"] = cat([Get($"{hf}q_proj.weight"), Get($"{hf}k_proj.weight"), Get($"{hf}v_proj.weight")], 0);
        }
        return w;
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

    static GptConfig LlamaConfig(JsonObject json, string path)
    {
        int width = Int(json, "hidden_size", path), hidden = Int(json, "intermediate_size", path);
        if (hidden % 8 != 0) throw new NotSupportedException($"{path}: intermediate_size {hidden} is not a multiple of 8, which GptSharp's SwiGLU sizing needs.");
        int heads = Int(json, "num_attention_heads", path);
        var config = GptConfig.Llama(Int(json, "vocab_size", path), Int(json, "max_position_embeddings", path), Int(json, "num_hidden_layers", path),
            heads, json["num_key_value_heads"] is null ? heads : Int(json, "num_key_value_heads", path), width) with
        {
            MlpRatio = hidden * 1.5 / width, NormEpsilon = Double(json, "rms_norm_eps", 1e-6, path), RotaryBase = Double(json, "rope_theta", 10000, path),
            TiedEmbeddings = json["tie_word_embeddings"] is JsonValue tie && tie.GetValue<bool>(),
        };
        if (config.MlpHidden != hidden) throw new NotSupportedException($"{path}: intermediate_size {hidden} cannot be expressed as an MLP ratio here.");
        return config.Validate();
    }
}
