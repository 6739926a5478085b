using GptSharp.Runtime;
using System.Text.Json;
using System.Text.Json.Nodes;
using GptSharp.Tokenization;

namespace GptSharp.Interop;

/// <summary>
/// Writes a GptSharp tokenizer as Hugging Face <c>tokenizers</c> files (<c>tokenizer.json</c>,
/// <c>tokenizer_config.json</c>, <c>special_tokens_map.json</c>): byte-level BPE with the vocabulary in GPT-2's
/// byte alphabet, merges recovered from the ranks, and the pre-tokenizer regex in portable syntax. Special tokens are
/// added tokens, so <c>&lt;|end|&gt;</c> in a chat template becomes one id there as it does here.
/// </summary>
public static class HuggingFaceTokenizer
{
    /// <summary>Writes the three files into <paramref name="directory"/>; <paramref name="contextLength"/> becomes model_max_length.</summary>
    public static void Save(GptTokenizer tokenizer, string directory, int contextLength)
    {
        Directory.CreateDirectory(directory);
        var options = new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        AtomicFile.WriteAllText(Path.Combine(directory, "tokenizer.json"), TokenizerJson(tokenizer).ToJsonString(options));

        var specials = new JsonObject
        {
            ["bos_token"] = SpecialTokens.Bos, ["eos_token"] = SpecialTokens.Eos, ["pad_token"] = SpecialTokens.Pad,
            ["mask_token"] = SpecialTokens.Mask,
        };
        AtomicFile.WriteAllText(Path.Combine(directory, "special_tokens_map.json"), specials.ToJsonString(options));
        var config = specials.DeepClone().AsObject();
        config["tokenizer_class"] = "PreTrainedTokenizerFast";
        config["model_max_length"] = contextLength;
        config["add_bos_token"] = false;
        config["clean_up_tokenization_spaces"] = false;
        config["chat_template"] = Tokenization.ChatTemplate.Jinja;
        AtomicFile.WriteAllText(Path.Combine(directory, "tokenizer_config.json"), config.ToJsonString(options));
    }

    /// <summary>The <c>tokenizer.json</c> document (tokenizers' serialisation format 1.0).</summary>
    public static JsonObject TokenizerJson(GptTokenizer tokenizer)
    {
        var vocab = new JsonObject();
        foreach (var (id, bytes) in tokenizer.OrdinaryTokens.OrderBy(kv => kv.Key)) vocab[ByteLevelBpe.Spell(bytes)] = id;
        // Special tokens go in the vocabulary too: tokenizers takes an added token's id from there, and would otherwise
        // number them anew after the vocabulary (wrong wherever ids have gaps, as cl100k's do).
        foreach (var (content, id) in tokenizer.Spec.SpecialTokens) vocab[content] = id;
        var merges = new JsonArray();
        foreach (var (left, right) in ByteLevelBpe.Merges(tokenizer.OrdinaryTokens)) merges.Add(new JsonArray(left, right));

        var added = new JsonArray();
        foreach (var (content, id) in tokenizer.Spec.SpecialTokens.OrderBy(kv => kv.Value))
            added.Add(new JsonObject
            {
                ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = false, ["special"] = true,
            });

        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject
                    {
                        ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = PreTokenizerPatterns.Portable(tokenizer.Spec.Pattern) },
                        ["behavior"] = "Isolated", ["invert"] = false,
                    },
                    new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
            },
            ["post_processor"] = null, // GptSharp adds <|bos|> itself where a format wants it
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false,
                ["vocab"] = vocab, ["merges"] = merges,
            },
        };
    }
}
