using GptSharp.Runs;
using GptSharp.Models;
using GptSharp.Tokenization;
using static TorchSharp.torch;

namespace GptSharp.Interop;

/// <summary>
/// Exports a run as one GGUF file for llama.cpp and the runtimes built on it (LLamaSharp, Ollama, LM Studio):
/// GPT-2-family runs as llama.cpp's <c>gpt2</c> architecture, Llama/PaLM-family runs as <c>llama</c> (Llama 3's rotary
/// scaling as a <c>rope_freqs</c> tensor), <c>qwen2</c> (q, k, v biases) or <c>qwen3</c> (q and k norms), with the
/// tokenizer (byte-level BPE tokens, merges, special tokens, chat template) inside.
/// </summary>
public static class Gguf
{
    // llama.cpp's token types.
    const int Normal = 1, Control = 3, Unused = 5;

    /// <summary>Writes <paramref name="runDirectory"/>'s model to <paramref name="path"/>; matrices in <paramref name="type"/>, vectors always F32.</summary>
    public static void Export(string runDirectory, string path, GgmlType type = GgmlType.F16)
    {
        var (model, state) = Checkpoint.LoadModel(runDirectory);
        using var _ = model;
        var c = model.Config;
        string architecture = HuggingFace.Architecture(c); // the same two layouts; names the field that has no counterpart
        var tokenizer = GptTokenizer.Load(state.Tokenizer);
        string pre = PreTokenizerName(tokenizer.Spec.Pattern);

        var gguf = new GgufWriter()
            .Add("general.architecture", architecture)
            .Add("general.name", Path.GetFileName(Path.GetFullPath(runDirectory).TrimEnd(Path.DirectorySeparatorChar)))
            .Add("general.file_type", type switch { GgmlType.F32 => 0u, GgmlType.F16 => 1u, GgmlType.Q4_0 => 2u, _ => 7u }) // ALL_F32, MOSTLY_F16, MOSTLY_Q4_0, MOSTLY_Q8_0
            .Add($"{architecture}.context_length", (uint)c.ContextLength)
            .Add($"{architecture}.embedding_length", (uint)c.Width)
            .Add($"{architecture}.feed_forward_length", (uint)c.MlpHidden)
            .Add($"{architecture}.block_count", (uint)c.Layers)
            .Add($"{architecture}.attention.head_count", (uint)c.Heads);
        if (architecture != "gpt2")
            gguf.Add($"{architecture}.attention.head_count_kv", (uint)c.KvHeads)
                .Add($"{architecture}.attention.key_length", (uint)c.HeadDim)
                .Add($"{architecture}.attention.value_length", (uint)c.HeadDim)
                .Add($"{architecture}.rope.dimension_count", (uint)c.HeadDim)
                .Add($"{architecture}.rope.freq_base", (float)c.RotaryBase)
                .Add($"{architecture}.attention.layer_norm_rms_epsilon", (float)c.NormEpsilon)
                .Add($"{architecture}.vocab_size", (uint)c.VocabSize);
        else
            gguf.Add("gpt2.attention.layer_norm_epsilon", (float)c.NormEpsilon);
        AddTokenizer(gguf, tokenizer, c.VocabSize, pre, ChatTemplateOf(state.Tokenizer));

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var weights = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value);
        var tensors = (architecture == "gpt2" ? Gpt2Tensors(weights, c) : LlamaTensors(weights, c, architecture)).ToList();
        // Matrices go into blocks; learned positions stay F32, as in the CPU engine: a small table that every token adds.
        bool InBlocks(string name, Tensor tensor) => type is GgmlType.Q8_0 or GgmlType.Q4_0 && tensor.dim() >= 2 && name != "position_embd.weight";
        foreach (var (name, tensor) in tensors.Where(t => InBlocks(t.Item1, t.Item2) && t.Item2.shape[^1] % 32 != 0))
            throw new NotSupportedException($"Tensor '{name}' has rows of {tensor.shape[^1]} values; {type} needs a multiple of 32. Export as f16 or f32.");
        foreach (var (name, tensor) in tensors)
        {
            if (InBlocks(name, tensor))
            {
                gguf.AddTensor(name, [.. tensor.shape.Reverse()], type, Blocks(tensor, type));
                continue;
            }
            var stored = tensor.dim() >= 2 && type == GgmlType.F16 ? tensor.to(ScalarType.Float16) : tensor.to(ScalarType.Float32);
            gguf.AddTensor(name, [.. stored.shape.Reverse()], stored.dtype == ScalarType.Float16 ? GgmlType.F16 : GgmlType.F32,
                           stored.cpu().contiguous().bytes.ToArray());
        }
        gguf.Save(path);
    }

    /// <summary>A matrix in GGUF's Q8_0 or Q4_0 blocks (F16 scale, then the block's 32 or 16 bytes), quantised as the
    /// CPU engine's weights of that format are.</summary>
    static byte[] Blocks(Tensor matrix, GgmlType type)
    {
        float[] values = matrix.to(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();
        var (quants, scales) = type == GgmlType.Q4_0 ? Models.BlockQuantization.Q4_0(values) : Models.BlockQuantization.Q8_0(values);
        int size = quants.Length / scales.Length, stride = size + 2;
        var bytes = new byte[scales.Length * stride];
        for (int b = 0; b < scales.Length; b++)
        {
            BitConverter.TryWriteBytes(bytes.AsSpan(b * stride, 2), BitConverter.HalfToUInt16Bits((Half)scales[b]));
            quants.AsSpan(b * size, size).CopyTo(bytes.AsSpan(b * stride + 2, size));
        }
        return bytes;
    }

    /// <summary>
    /// The llama.cpp pre-tokenizer whose split matches the pattern's. <c>gpt4-cjk</c> maps to <c>llama-bpe</c> (GPT-4's
    /// split): it keeps a run of Chinese characters in one piece where GptSharp splits each, but the vocabulary has no
    /// token spanning two characters, so BPE ends at the same tokens.
    /// </summary>
    public static string PreTokenizerName(string pattern) => pattern switch
    {
        PreTokenizerPatterns.Gpt2 => "gpt-2",
        PreTokenizerPatterns.Gpt4 or PreTokenizerPatterns.Gpt4Cjk => "llama-bpe",
        PreTokenizerPatterns.Qwen2 => "qwen2",
        PreTokenizerPatterns.Gpt2Digits => "smollm",
        PreTokenizerPatterns.DeepSeekV3 => "deepseek-v3",
        _ => throw new NotSupportedException("The tokenizer's pre-tokenizer pattern is custom; llama.cpp only knows its built-in splits " +
                                             "(GptSharp's gpt2, gpt4 and gpt4-cjk patterns map onto them). Train the tokenizer with one of those."),
    };

    /// <summary>An imported model's own chat template (kept beside its tokenizer), else GptSharp's.</summary>
    static string ChatTemplateOf(string tokenizer) => HuggingFaceTokenizer.KeptTemplate(tokenizer) ?? ChatTemplate.Jinja;

    static void AddTokenizer(GgufWriter gguf, GptTokenizer tokenizer, int vocabSize, string pre, string chatTemplate)
    {
        var tokens = new string[vocabSize];
        var types = new int[vocabSize];
        for (int id = 0; id < vocabSize; id++)
        {
            if (tokenizer.OrdinaryTokens.TryGetValue(id, out var bytes)) (tokens[id], types[id]) = (ByteLevelBpe.Spell(bytes), Normal);
            else if (tokenizer.IsSpecial(id)) (tokens[id], types[id]) = (System.Text.Encoding.UTF8.GetString(tokenizer.TokenBytes(id)), Control);
            else (tokens[id], types[id]) = ($"<|unused{id}|>", Unused); // ids the model has and the tokenizer never produces
        }
        gguf.Add("tokenizer.ggml.model", "gpt2")
            .Add("tokenizer.ggml.pre", pre)
            .Add("tokenizer.ggml.tokens", tokens)
            .Add("tokenizer.ggml.token_type", types)
            .Add("tokenizer.ggml.merges", ByteLevelBpe.Merges(tokenizer.OrdinaryTokens).Select(m => $"{m.Left} {m.Right}").ToList())
            .Add("tokenizer.ggml.bos_token_id", (uint)tokenizer.BosId)
            .Add("tokenizer.ggml.eos_token_id", (uint)tokenizer.EosId)
            .Add("tokenizer.ggml.eot_token_id", (uint)tokenizer.EndId)
            .Add("tokenizer.ggml.padding_token_id", (uint)tokenizer.PadId)
            // Every GptSharp document and chat starts with BOS; of the imported families, ChatML ones (Qwen, SmolLM2) have none.
            .Add("tokenizer.ggml.add_bos_token", tokenizer.Spec.ChatFormat is not (ChatFormats.ChatMl or ChatFormats.Qwen3))
            .Add("tokenizer.ggml.add_eos_token", false)
            .Add("tokenizer.chat_template", chatTemplate);
    }

    static IEnumerable<(string, Tensor)> Gpt2Tensors(Dictionary<string, Tensor> w, GptConfig c)
    {
        yield return ("token_embd.weight", w["wte.weight"]);
        yield return ("position_embd.weight", w["wpe.weight"]);
        for (int i = 0; i < c.Layers; i++)
            foreach (var (ours, theirs) in new[] { ("ln_1", "attn_norm"), ("attn.c_attn", "attn_qkv"), ("attn.c_proj", "attn_output"), ("ln_2", "ffn_norm"), ("mlp.c_fc", "ffn_up"), ("mlp.c_proj", "ffn_down") })
                foreach (string part in new[] { "weight", "bias" }) yield return ($"blk.{i}.{theirs}.{part}", w[$"h.{i}.{ours}.{part}"]);
        yield return ("output_norm.weight", w["ln_f.weight"]);
        yield return ("output_norm.bias", w["ln_f.bias"]);
    }

    static IEnumerable<(string, Tensor)> LlamaTensors(Dictionary<string, Tensor> w, GptConfig c, string architecture)
    {
        int q = c.Heads * c.HeadDim, kv = c.KvHeads * c.HeadDim;
        // llama.cpp's llama rotates pairs (2i, 2i+1); qwen2 and qwen3 rotate halves as GptSharp does (NeoX style).
        bool pairs = architecture == "llama";
        Tensor Rotated(Tensor rows, int heads) => pairs ? RotaryInterleaved(rows, heads, c.HeadDim) : rows;
        yield return ("token_embd.weight", w["wte.weight"]);
        if (c.RopeScaling is { } scaling)
        {
            // llama.cpp divides each rotary frequency by its factor: the plain frequency over the scaled one.
            int half = c.HeadDim / 2;
            var plain = pow(c.RotaryBase, -arange(0, half, ScalarType.Float64) / half);
            yield return ("rope_freqs.weight", (plain / Models.Rotary.Llama3(plain, scaling)).to(ScalarType.Float32));
        }
        for (int i = 0; i < c.Layers; i++)
        {
            var fused = w[$"h.{i}.attn.c_attn.weight"];
            yield return ($"blk.{i}.attn_norm.weight", w[$"h.{i}.ln_1.weight"]);
            yield return ($"blk.{i}.attn_q.weight", Rotated(fused.narrow(0, 0, q), c.Heads));
            yield return ($"blk.{i}.attn_k.weight", Rotated(fused.narrow(0, q, kv), c.KvHeads));
            yield return ($"blk.{i}.attn_v.weight", fused.narrow(0, q + kv, kv));
            if (c.QkvBias)
            {
                var bias = w[$"h.{i}.attn.c_attn.bias"];
                yield return ($"blk.{i}.attn_q.bias", bias.narrow(0, 0, q));
                yield return ($"blk.{i}.attn_k.bias", bias.narrow(0, q, kv));
                yield return ($"blk.{i}.attn_v.bias", bias.narrow(0, q + kv, kv));
            }
            if (c.QkNorm)
            {
                yield return ($"blk.{i}.attn_q_norm.weight", w[$"h.{i}.attn.q_norm.weight"]);
                yield return ($"blk.{i}.attn_k_norm.weight", w[$"h.{i}.attn.k_norm.weight"]);
            }
            yield return ($"blk.{i}.attn_output.weight", w[$"h.{i}.attn.c_proj.weight"]);
            yield return ($"blk.{i}.ffn_norm.weight", w[$"h.{i}.ln_2.weight"]);
            yield return ($"blk.{i}.ffn_gate.weight", w[$"h.{i}.mlp.gate_proj.weight"]);
            yield return ($"blk.{i}.ffn_up.weight", w[$"h.{i}.mlp.up_proj.weight"]);
            yield return ($"blk.{i}.ffn_down.weight", w[$"h.{i}.mlp.down_proj.weight"]);
        }
        yield return ("output_norm.weight", w["ln_f.weight"]);
        if (!c.TiedEmbeddings) yield return ("output.weight", w["lm_head.weight"]);
    }

    /// <summary>
    /// GptSharp rotates dimension i of a head with i + HeadDim/2 (the halves layout); llama.cpp's llama rotates
    /// 2i with 2i + 1. Reordering each head's query/key rows from (half, i) to (i, half) makes the two agree; the
    /// dot products between queries and keys, and so the attention, are unchanged.
    /// </summary>
    static Tensor RotaryInterleaved(Tensor weight, int heads, int headDim) => // (heads·headDim, width)
        weight.reshape(heads, 2, headDim / 2, -1).transpose(1, 2).reshape(heads * headDim, -1);
}
