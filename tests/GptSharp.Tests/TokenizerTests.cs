using System.Text;
using GptSharp.Data;
using GptSharp.Tokenization;

namespace GptSharp.Tests;

/// <summary>Trains one small tokenizer on real text, shared by the tests in <see cref="TokenizerTests"/>.</summary>
public sealed class TrainedTokenizerFixture : IDisposable
{
    public TrainedTokenizerFixture()
    {
        Directory = Path.Combine(Path.GetTempPath(), "gptsharp-tok-" + Guid.NewGuid().ToString("N"));
        var texts = Corpus.Read("tang").Take(3000).Concat(Corpus.Read("brown").Take(40)).Select(d => d.Text).ToList();
        Result = BpeTrainer.Train(texts, new BpeTrainingOptions(VocabSize: 2048));
        GptTokenizer.Save(Result, "test", Directory);
        Tokenizer = GptTokenizer.Load(Directory);
        Texts = texts;
    }

    public string Directory { get; }
    public BpeTrainingResult Result { get; }
    public GptTokenizer Tokenizer { get; }
    public List<string> Texts { get; }

    /// <summary>Saves a freshly initialised small GPT over this tokenizer as a run folder, the starting point of fine-tuning tests.</summary>
    public GptSharp.Models.GptConfig SaveInitialRun(string runDirectory, int context)
    {
        TorchSharp.torch.manual_seed(0);
        var config = GptSharp.Models.GptConfig.Gpt2(Tokenizer.VocabSize, context, layers: 2, heads: 2, width: 32);
        using var model = new GptSharp.Models.Gpt(config);
        GptSharp.Runs.Checkpoint.Save(runDirectory, model, null, new GptSharp.Runs.TrainingState(0, "0:0", "", Directory));
        return config;
    }

    /// <summary>The tokenizers exchange tests cover: this trained one and the two built-in encodings.</summary>
    public static TheoryData<string> ExchangeTokenizers => new() { "trained", "gpt2", "cl100k_base" };

    /// <summary>One of <see cref="ExchangeTokenizers"/>, and how a run folder refers to it (folder or built-in name).</summary>
    public (GptTokenizer Tokenizer, string Reference) Named(string which) =>
        which == "trained" ? (Tokenizer, Directory) : (GptTokenizer.Load(which), which);

    /// <summary>Saves a model of any config with random weights over this tokenizer as a run folder.</summary>
    public string SaveRandomRun(string runDirectory, GptSharp.Models.GptConfig config, int seed = 0)
    {
        TorchSharp.torch.manual_seed(seed);
        using var model = new GptSharp.Models.Gpt(config);
        GptSharp.Runs.Checkpoint.Save(runDirectory, model, null, new GptSharp.Runs.TrainingState(0, "0:0", "", Directory));
        return runDirectory;
    }

    /// <summary>A random-weight model slow enough (1,024 context, width 256) that a long answer is still streaming when a test stops it.</summary>
    public string SaveSlowRun(string runDirectory) =>
        SaveRandomRun(runDirectory, GptSharp.Models.GptConfig.Gpt2(Tokenizer.VocabSize, 1024, layers: 6, heads: 4, width: 384));   // slow even on the CPU engine: 1,000 tokens take well over 3 s

    public void Dispose() => System.IO.Directory.Delete(Directory, recursive: true);
}

public class TokenizerTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    readonly GptTokenizer _tokenizer = fixture.Tokenizer;

    public static TheoryData<string> RoundTripTexts => new()
    {
        "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。",
        "The quick brown fox jumps over the lazy dog.",
        "emoji 😀👍🏽 and 🇨🇳 flags, ZWJ 👩‍👩‍👧",
        "mixed 中文 English 日本語のかな 한국어 Ελληνικά русский العربية",
        "  leading and trailing whitespace \t\r\n\n ",
        "numbers 1234567890 3.14159 -42 1e-9",
        "code: if (x != null) { return x?.y ?? z; } // 注释",
        "\0\u0001\u007f control chars and U+FFFD \uFFFD itself",
        "𠀀𪚥 (CJK extension B, outside the BMP)",
        "",
    };

    [Theory]
    [MemberData(nameof(RoundTripTexts))]
    public void EncodeDecodeRoundTripsExactly(string text)
    {
        int[] ids = _tokenizer.Encode(text);
        Assert.Equal(text, _tokenizer.Decode(ids));
        Assert.All(ids, id => Assert.InRange(id, 0, _tokenizer.VocabSize - 1));
    }

    [Fact]
    public void RandomUnicodeRoundTrips()
    {
        var random = new Random(7);
        for (int trial = 0; trial < 200; trial++)
        {
            var text = new StringBuilder();
            int length = random.Next(1, 40);
            for (int i = 0; i < length; i++)
            {
                int codePoint;
                do codePoint = random.Next(4) == 0 ? random.Next(0x20, 0x7f) : random.Next(0x20, 0x10ffff);
                while (codePoint is >= 0xd800 and <= 0xdfff);
                text.Append(char.ConvertFromUtf32(codePoint));
            }
            Assert.Equal(text.ToString(), _tokenizer.Decode(_tokenizer.Encode(text.ToString())));
        }
    }

    [Fact]
    public void LoneSurrogatesBecomeReplacementCharacters()
    {
        // UTF-16 with a lone surrogate has no UTF-8 form; like every UTF-8 tokenizer we encode U+FFFD in its place.
        string text = "a\ud800b\udc00c";
        Assert.Equal("a\uFFFDb\uFFFDc", _tokenizer.Decode(_tokenizer.Encode(text)));
    }

    [Fact]
    public void TokensNeverSpanTwoChineseCharacters()
    {
        string text = "床前明月光，疑是地上霜。";
        int[] ids = _tokenizer.Encode(text);
        var tokenEnds = new HashSet<int>();
        int offset = 0;
        foreach (int id in ids) tokenEnds.Add(offset += _tokenizer.TokenBytes(id).Length);
        for (int end = 3; end <= Encoding.UTF8.GetByteCount(text); end += 3) Assert.Contains(end, tokenEnds); // each character is 3 bytes
        Assert.Equal(2, _tokenizer.Encode("明月").Length); // frequent characters are single tokens
    }

    [Fact]
    public void CompressesTheTrainingText()
    {
        string sample = string.Join("\n", fixture.Texts.Take(200));
        double bytesPerToken = Encoding.UTF8.GetByteCount(sample) / (double)_tokenizer.Encode(sample).Length;
        Assert.True(bytesPerToken > 2.2, $"expected merges to compress mostly-Chinese text to >2.2 bytes/token, got {bytesPerToken:F2}");
    }

    [Fact]
    public void SpecialTokensNeverComeFromPlainText()
    {
        string text = "<|bos|>hi<|user|>x<|end|><|assistant|><|eos|><|pad|><|mask|><|system|><|tool_call|><|tool|>";
        int[] plain = _tokenizer.Encode(text);
        Assert.DoesNotContain(plain, _tokenizer.IsSpecial);
        Assert.Equal(text, _tokenizer.Decode(plain));

        int[] allowed = _tokenizer.EncodeWithSpecialTokens(text);
        Assert.Equal(_tokenizer.BosId, allowed[0]);
        Assert.Equal(SpecialTokens.All.Count, allowed.Count(_tokenizer.IsSpecial));
        Assert.Equal(text, _tokenizer.Decode(allowed));
    }

    [Fact]
    public void SpecialTokensFollowTheOrdinaryVocabulary()
    {
        Assert.Equal(2048, _tokenizer.VocabSize);
        for (int i = 0; i < SpecialTokens.All.Count; i++)
            Assert.Equal(fixture.Result.Ranks.Count + i, _tokenizer.SpecialId(SpecialTokens.All[i]));
    }

    [Fact]
    public void TrainingIsDeterministic()
    {
        var again = BpeTrainer.Train(fixture.Texts, new BpeTrainingOptions(VocabSize: 2048));
        Assert.Equal(fixture.Result.Ranks.Count, again.Ranks.Count);
        for (int i = 0; i < again.Ranks.Count; i++) Assert.Equal(fixture.Result.Ranks[i], again.Ranks[i]);
        string dir = Path.Combine(Path.GetTempPath(), "gptsharp-tok2-" + Guid.NewGuid().ToString("N"));
        try
        {
            GptTokenizer.Save(again, "test", dir);
            Assert.Equal(File.ReadAllBytes(Path.Combine(fixture.Directory, GptTokenizer.RankFileName)), File.ReadAllBytes(Path.Combine(dir, GptTokenizer.RankFileName)));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void IncrementalTrainerMatchesANaiveFullRecount()
    {
        string[] texts = ["low lower lowest newer wider new news", "the the then there their low low", "aaabdaaabac aaab"];
        var options = new BpeTrainingOptions(VocabSize: 256 + 30 + SpecialTokens.All.Count, Pattern: "gpt2", MinPairCount: 2);
        var fast = BpeTrainer.Train(texts, options);
        var naive = NaiveBpe(texts, options);
        Assert.Equal(naive.Select(Convert.ToHexString), fast.Ranks.Skip(256).Select(Convert.ToHexString));
    }

    /// <summary>Reference BPE: recount every pair after every merge; ties to the smaller (left, right) ids.</summary>
    static List<byte[]> NaiveBpe(string[] texts, BpeTrainingOptions options)
    {
        var regex = PreTokenizerPatterns.Compile(PreTokenizerPatterns.Resolve(options.Pattern));
        var words = texts.SelectMany(t => regex.Matches(t)).Select(m => Encoding.UTF8.GetBytes(m.Value).Select(b => (int)b).ToList()).ToList();
        var bytesOf = Enumerable.Range(0, 256).Select(b => new[] { (byte)b }).ToList();
        var merges = new List<byte[]>();
        int wanted = options.VocabSize - 256 - SpecialTokens.All.Count;
        while (merges.Count < wanted)
        {
            var counts = new Dictionary<(int, int), int>();
            foreach (var w in words)
                for (int i = 0; i + 1 < w.Count; i++) counts[(w[i], w[i + 1])] = counts.GetValueOrDefault((w[i], w[i + 1])) + 1;
            if (counts.Count == 0) break;
            var best = counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key.Item1).ThenBy(kv => kv.Key.Item2).First();
            if (best.Value < options.MinPairCount) break;
            int id = bytesOf.Count;
            bytesOf.Add([.. bytesOf[best.Key.Item1], .. bytesOf[best.Key.Item2]]);
            merges.Add(bytesOf[id]);
            foreach (var w in words)
                for (int i = 0; i + 1 < w.Count; i++)
                    if (w[i] == best.Key.Item1 && w[i + 1] == best.Key.Item2) { w[i] = id; w.RemoveAt(i + 1); }
        }
        return merges;
    }

    [Fact]
    public void BadOptionsNameTheField()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => BpeTrainer.Train(["abc"], new BpeTrainingOptions(VocabSize: 100)));
        Assert.Equal("VocabSize", error.ParamName);
        Assert.Throws<InvalidDataException>(() => BpeTrainer.Train([], new BpeTrainingOptions()));
        Assert.Throws<ArgumentException>(() => BpeTrainer.Train(["abc"], new BpeTrainingOptions(Pattern: "([unclosed")));
    }

    [Fact]
    public void DecodeRejectsIdsOutsideTheVocabulary()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => _tokenizer.Decode([1, _tokenizer.VocabSize]));
        Assert.Contains(_tokenizer.VocabSize.ToString(), error.Message);
    }

    [Fact]
    public void LoadNamesTheBadFile()
    {
        string dir = Path.Combine(Path.GetTempPath(), "gptsharp-bad-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            Assert.Throws<FileNotFoundException>(() => GptTokenizer.Load(dir));
            File.Copy(Path.Combine(fixture.Directory, GptTokenizer.SpecFileName), Path.Combine(dir, GptTokenizer.SpecFileName));
            File.WriteAllText(Path.Combine(dir, GptTokenizer.RankFileName), "AA== 0\nnot-base64!! 1\n");
            var error = Assert.Throws<InvalidDataException>(() => GptTokenizer.Load(dir));
            Assert.Contains($"{GptTokenizer.RankFileName}:2", error.Message);
            File.WriteAllText(Path.Combine(dir, GptTokenizer.SpecFileName), "{ \"name\": ");
            error = Assert.Throws<InvalidDataException>(() => GptTokenizer.Load(dir));
            Assert.Contains(GptTokenizer.SpecFileName, error.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void BuiltInEncodingsMatchOpenAIsIds()
    {
        var gpt2 = GptTokenizer.Load("gpt2");
        Assert.Equal([15496, 995], gpt2.Encode("Hello world"));
        Assert.Equal(50257 + SpecialTokens.All.Count, gpt2.VocabSize);
        Assert.DoesNotContain(gpt2.Encode("<|endoftext|><|bos|>"), gpt2.IsSpecial);
        Assert.Equal(gpt2.BosId, gpt2.EncodeWithSpecialTokens("<|bos|>")[0]);

        var cl100k = GptTokenizer.Load("cl100k_base");
        Assert.Equal([15339, 1917], cl100k.Encode("hello world"));
        Assert.Equal("床前明月光 😀", cl100k.Decode(cl100k.Encode("床前明月光 😀")));
    }
}
