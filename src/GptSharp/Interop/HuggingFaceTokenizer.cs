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
    /// <summary>An imported model's own chat template, kept in its tokenizer folder for the exports.</summary>
    public const string ChatTemplateFile = "chat_template.jinja";

    /// <summary>Writes the three files into <paramref name="directory"/>; <paramref name="contextLength"/> becomes model_max_length.</summary>
    /// <param name="chatTemplate">The Jinja chat template to record (an imported model's own); default: GptSharp's.</param>
    public static void Save(GptTokenizer tokenizer, string directory, int contextLength, string? chatTemplate = null)
    {
        Directory.CreateDirectory(directory);
        var options = new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        AtomicFile.WriteAllText(Path.Combine(directory, "tokenizer.json"), TokenizerJson(tokenizer).ToJsonString(options));

        // An imported tokenizer's roles are the model's own tokens (its BOS may be GptSharp's, where the model has none).
        string Role(string token) => tokenizer.Spec.Aliases?.GetValueOrDefault(token) ?? token;
        var specials = new JsonObject
        {
            ["bos_token"] = Role(SpecialTokens.Bos), ["eos_token"] = Role(SpecialTokens.Eos), ["pad_token"] = Role(SpecialTokens.Pad),
            ["mask_token"] = SpecialTokens.Mask,
        };
        AtomicFile.WriteAllText(Path.Combine(directory, "special_tokens_map.json"), specials.ToJsonString(options));
        var config = specials.DeepClone().AsObject();
        config["tokenizer_class"] = "PreTrainedTokenizerFast";
        config["model_max_length"] = contextLength;
        config["add_bos_token"] = false;
        config["clean_up_tokenization_spaces"] = false;
        config["chat_template"] = chatTemplate ?? Tokenization.ChatTemplate.Jinja;
        AtomicFile.WriteAllText(Path.Combine(directory, "tokenizer_config.json"), config.ToJsonString(options));
    }

    /// <summary>An imported model's own chat template, kept in its tokenizer folder; null for a GptSharp tokenizer.</summary>
    public static string? KeptTemplate(string tokenizer)
    {
        string path = Path.Combine(tokenizer, ChatTemplateFile);
        return Directory.Exists(tokenizer) && File.Exists(path) ? File.ReadAllText(path) : null;
    }

    /// <summary>
    /// Converts a Hugging Face <c>tokenizer.json</c> of the byte-level BPE kind (GPT-2, Llama 3, Qwen, SmolLM, DeepSeek)
    /// into a GptSharp tokenizer folder, as it is: the vocabulary as tiktoken ranks (id = rank), the Split regex of the
    /// pre-tokenizer (or GPT-2's, for a plain ByteLevel one), NFC normalisation where it asks for it, and its added
    /// tokens as special tokens; GptSharp's own special tokens (<c>&lt;|bos|&gt;</c>, the chat roles, …) follow the
    /// highest id, as for the built-in encodings. Anything else — SentencePiece (unigram, or BPE with byte fallback),
    /// WordPiece, another normaliser or pre-tokenizer — is refused naming it.
    /// </summary>
    /// <param name="chatFormat">How conversations are written (<see cref="ChatFormats"/>); default: recognised from
    /// <c>tokenizer_config.json</c>'s <c>chat_template</c> (none: a base model, GptSharp's own format).</param>
    public static GptTokenizer Import(string hfDirectory, string outDirectory, string? chatFormat = null)
    {
        string path = Path.Combine(hfDirectory, "tokenizer.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"No tokenizer.json in '{hfDirectory}'.", path);
        var root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: expected a JSON object.");
        var model = root["model"] as JsonObject ?? throw new InvalidDataException($"{path}: field 'model' is missing.");
        string type = Text(model, "type", path);
        if (type != "BPE") throw new NotSupportedException($"{path}: model type '{type}' is not supported ({(type == "Unigram" ? "SentencePiece unigram" : type)}); only byte-level BPE tokenizers load.");
        if (model["byte_fallback"] is JsonValue fallback && fallback.GetValueKind() == JsonValueKind.True)
            throw new NotSupportedException($"{path}: a BPE model with byte_fallback is SentencePiece-style (Llama 2, Mistral); only byte-level BPE tokenizers load.");
        foreach (string field in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            if (model[field] is JsonValue v && v.TryGetValue(out string? affix) && affix.Length > 0)
                throw new NotSupportedException($"{path}: model.{field} is set; only byte-level BPE without word affixes loads.");
        string? normalization = root["normalizer"] switch
        {
            null => null,
            JsonValue n when n.GetValueKind() == JsonValueKind.Null => null,
            JsonObject n when Text(n, "type", path) == "NFC" => "NFC",
            JsonObject n when Text(n, "type", path) == "Sequence" && n["normalizers"] is JsonArray { Count: 0 } => null,   // DeepSeek's: empty
            JsonObject n => throw new NotSupportedException($"{path}: normalizer '{Text(n, "type", path)}' is not supported (NFC or none)."),
            _ => throw new InvalidDataException($"{path}: normalizer must be an object or null."),
        };
        string pattern = Pattern(root["pre_tokenizer"], path);

        var vocab = model["vocab"] as JsonObject ?? throw new InvalidDataException($"{path}: model.vocab must be an object of token → id.");
        var specials = new Dictionary<string, int>();
        if (root["added_tokens"] is JsonArray added)
            foreach (var token in added.OfType<JsonObject>())
                specials[Text(token, "content", path)] = token["id"] is JsonValue id && id.TryGetValue(out int value) && value >= 0 ? value
                    : throw new InvalidDataException($"{path}: an added token has no valid 'id'.");
        var ranks = new Dictionary<int, byte[]>();
        var specialIds = specials.Values.ToHashSet();
        foreach (var (spelling, idNode) in vocab)
        {
            int id = idNode is JsonValue v && v.TryGetValue(out int n) && n >= 0 ? n : throw new InvalidDataException($"{path}: vocab['{spelling}'] is not a token id.");
            if (specialIds.Contains(id)) continue;   // an added token that is also in the vocabulary (GPT-2's <|endoftext|>)
            ranks[id] = ByteLevelBpe.Unspell(spelling)
                ?? throw new NotSupportedException($"{path}: vocab token '{spelling}' is not in the byte-level alphabet; only byte-level BPE tokenizers load.");
        }
        if (ranks.Count < 256) throw new InvalidDataException($"{path}: the vocabulary has {ranks.Count} ordinary tokens, fewer than the 256 bytes.");
        int next = Math.Max(ranks.Keys.Max(), specials.Count == 0 ? 0 : specials.Values.Max()) + 1;
        int holes = next - ranks.Count - specials.Count;
        if (holes != 0) throw new InvalidDataException($"{path}: {holes} ids below {next} are neither in the vocabulary nor added tokens.");
        foreach (string token in SpecialTokens.All.Where(t => !specials.ContainsKey(t))) specials[token] = next++;
        string configPath = Path.Combine(hfDirectory, "tokenizer_config.json");
        var config = File.Exists(configPath)
            ? JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject ?? throw new InvalidDataException($"{configPath}: expected a JSON object.") : [];
        string? template = Template(config);
        var (format, defaultSystem, aliases) = Chat(config, template, configPath, specials, chatFormat);
        var spec = new TokenizerSpec(Path.GetFileName(Path.GetFullPath(hfDirectory).TrimEnd(Path.DirectorySeparatorChar)), pattern, next, specials,
            Normalization: normalization, ChatFormat: format, DefaultSystemPrompt: defaultSystem, Aliases: aliases);
        GptTokenizer.Save(spec, ranks, outDirectory);
        if (format is not null && template is not null) AtomicFile.WriteAllText(Path.Combine(outDirectory, ChatTemplateFile), template);
        return GptTokenizer.Load(outDirectory);
    }

    /// <summary>The <c>chat_template</c> of <c>tokenizer_config.json</c> (a string, or the one named default), or null.</summary>
    static string? Template(JsonObject config) => config["chat_template"] switch
    {
        JsonValue v when v.TryGetValue(out string? text) => text,
        JsonArray named => named.OfType<JsonObject>().FirstOrDefault(t => t["name"]?.GetValue<string>() == "default")?["template"]?.GetValue<string>(),
        _ => null,
    };

    /// <summary>
    /// The chat format from <c>tokenizer_config.json</c> (its <c>chat_template</c> recognised, or the one asked for), and
    /// the aliases that make GptSharp's BOS, EOS and end-of-turn the model's own tokens.
    /// </summary>
    static (string? Format, string? DefaultSystem, Dictionary<string, string>? Aliases) Chat(JsonObject config, string? template, string path,
        Dictionary<string, int> specials, string? asked)
    {
        var recognised = template is null ? null : ChatFormats.Recognise(template);
        string? format;
        if (asked is not null)
        {
            if (!ChatFormats.All.Contains(asked)) throw new ArgumentException($"Unknown chat format '{asked}': expected one of {string.Join(", ", ChatFormats.All)}.", nameof(asked));
            format = asked;
        }
        else if (template is null) format = null;   // a base model: GptSharp's own chat tokens
        else format = recognised?.Format ?? throw new NotSupportedException(
            $"{path}: its chat_template is none of the formats GptSharp writes (ChatML as Qwen2.5 and SmolLM2 use it, Qwen3, Llama 3, Llama 3.1/3.2, Gemma 3); " +
            $"pass --chat-template with one of {string.Join(", ", ChatFormats.All)} to choose how conversations are written.");
        if (format is null or ChatFormats.GptSharp) return (null, null, null);
        var aliases = new Dictionary<string, string>();
        string end = ChatFormats.EndOfTurn(format);
        if (!specials.ContainsKey(end)) throw new NotSupportedException($"{path}: the {format} chat format ends turns with {end}, which this tokenizer lacks.");
        aliases[SpecialTokens.End] = end;
        foreach (var (field, ours) in new[] { ("bos_token", SpecialTokens.Bos), ("eos_token", SpecialTokens.Eos), ("pad_token", SpecialTokens.Pad) })
        {
            string? token = config[field] switch
            {
                JsonValue v when v.TryGetValue(out string? text) => text,
                JsonObject o => o["content"]?.GetValue<string>(),
                _ => null,
            };
            if (token is not null && specials.ContainsKey(token)) aliases[ours] = token;
        }
        return (format, recognised?.Format == format ? recognised.Value.DefaultSystem : null, aliases);
    }

    /// <summary>The pre-tokenizer's split regex: a Sequence of an isolating Split and a regex-free ByteLevel, or a plain ByteLevel (GPT-2's split).</summary>
    static string Pattern(JsonNode? node, string path)
    {
        if (node is not JsonObject pre) throw new NotSupportedException($"{path}: a tokenizer without a byte-level pre-tokenizer is not supported.");
        string type = Text(pre, "type", path);
        if (type == "ByteLevel")
        {
            if (pre["use_regex"] is JsonValue r && r.GetValueKind() == JsonValueKind.False)
                throw new NotSupportedException($"{path}: a ByteLevel pre-tokenizer without its regex and without a Split before it is not supported.");
            if (pre["add_prefix_space"] is JsonValue p && p.GetValueKind() == JsonValueKind.True)
                throw new NotSupportedException($"{path}: ByteLevel add_prefix_space true is not supported.");
            return PreTokenizerPatterns.Gpt2;
        }
        // SmolLM: every digit alone, then GPT-2's byte-level split.
        if (type == "Sequence" && pre["pretokenizers"] is JsonArray { Count: 2 } parts && parts[0] is JsonObject digits && parts[1] is JsonObject level
            && Text(digits, "type", path) == "Digits" && Text(level, "type", path) == "ByteLevel")
        {
            if (digits["individual_digits"] is not JsonValue individual || individual.GetValueKind() != JsonValueKind.True)
                throw new NotSupportedException($"{path}: a Digits pre-tokenizer that keeps runs of digits together is not supported (individual_digits true is).");
            if (level["use_regex"] is JsonValue r0 && r0.GetValueKind() == JsonValueKind.False)
                throw new NotSupportedException($"{path}: Digits then a ByteLevel step without its regex is not supported.");
            return PreTokenizerPatterns.Gpt2Digits;
        }
        // DeepSeek-V3: three isolating Splits, then ByteLevel without its regex.
        if (type == "Sequence" && pre["pretokenizers"] is JsonArray { Count: 4 } splits && splits.Take(3).All(s => s is JsonObject o && o["type"]?.ToString() == "Split")
            && splits[3] is JsonObject last && last["type"]?.ToString() == "ByteLevel")
        {
            string[] regexes = [.. splits.Take(3).Select(s => SplitRegex((JsonObject)s!, path))];
            static string Spelled(string regex) => regex.Replace("\r", "\\r").Replace("\n", "\\n");   // a CR or LF itself, or its escape
            if (!regexes.Select(Spelled).SequenceEqual(PreTokenizerPatterns.DeepSeekV3Splits.Select(Spelled)))
                throw new NotSupportedException($"{path}: a pre_tokenizer of three Splits is supported only as DeepSeek-V3's; these regexes differ from it.");
            return PreTokenizerPatterns.DeepSeekV3;
        }
        if (type != "Sequence" || pre["pretokenizers"] is not JsonArray steps || steps.Count != 2 || steps[0] is not JsonObject split || steps[1] is not JsonObject byteLevel
            || Text(split, "type", path) != "Split" || Text(byteLevel, "type", path) != "ByteLevel")
            throw new NotSupportedException($"{path}: pre_tokenizer '{type}' ({string.Join(", ", (pre["pretokenizers"] as JsonArray)?.OfType<JsonObject>().Select(p => p["type"]?.ToString()) ?? [])}) is not supported; " +
                                            "expected ByteLevel, a Sequence of Split (regex) and ByteLevel, or of Digits and ByteLevel.");
        if (byteLevel["use_regex"] is JsonValue r2 && r2.GetValueKind() == JsonValueKind.True)
            throw new NotSupportedException($"{path}: a ByteLevel step with its own regex after a Split is not supported.");
        string regex = SplitRegex(split, path);
        PreTokenizerPatterns.Compile(regex);   // throws naming the problem when .NET cannot read it
        return regex;
    }

    /// <summary>The regex of an isolating, non-inverted Split step.</summary>
    static string SplitRegex(JsonObject split, string path)
    {
        if (split["behavior"] is JsonValue b && b.TryGetValue(out string? behavior) && behavior != "Isolated")
            throw new NotSupportedException($"{path}: Split behavior '{behavior}' is not supported (Isolated is).");
        if (split["invert"] is JsonValue i && i.GetValueKind() == JsonValueKind.True) throw new NotSupportedException($"{path}: an inverted Split is not supported.");
        return split["pattern"] is JsonObject p2 && p2["Regex"] is JsonValue rx && rx.TryGetValue(out string? value) ? value
            : throw new NotSupportedException($"{path}: the Split pre-tokenizer needs a Regex pattern.");
    }

    static string Text(JsonObject node, string field, string path) =>
        node[field] is JsonValue v && v.TryGetValue(out string? text) ? text : throw new InvalidDataException($"{path}: field '{field}' must be a string.");

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
            ["normalizer"] = tokenizer.Spec.Normalization == "NFC" ? new JsonObject { ["type"] = "NFC" } : null,
            ["pre_tokenizer"] = PreTokenizerJson(tokenizer.Spec.Pattern),
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

    /// <summary>
    /// The <c>pre_tokenizer</c> that splits as the pattern does: DeepSeek-V3's Splits as its tokenizer.json has them,
    /// any other pattern as one isolating Split; throws for a pattern other engines cannot read.
    /// </summary>
    public static JsonObject PreTokenizerJson(string pattern)
    {
        static JsonObject Split(string regex) => new()
        {
            ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = regex }, ["behavior"] = "Isolated", ["invert"] = false,
        };
        var steps = pattern == PreTokenizerPatterns.DeepSeekV3
            ? new JsonArray([.. PreTokenizerPatterns.DeepSeekV3Splits.Select(r => (JsonNode)Split(r))])
            : new JsonArray(Split(PreTokenizerPatterns.Portable(pattern)));
        steps.Add(new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false });
        return new JsonObject { ["type"] = "Sequence", ["pretokenizers"] = steps };
    }
}
