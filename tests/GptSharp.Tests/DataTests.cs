using System.IO.Compression;
using System.Text;
using GptSharp.Data;

namespace GptSharp.Tests;

public class CorpusTests
{
    [Fact]
    public void EmbeddedCorporaLoadWithTheirFields()
    {
        var tang = Corpus.Read("tang").Take(5).ToList();
        Assert.Equal("太宗皇帝", tang[0].Field("author"));
        Assert.Contains("秦川雄帝宅", tang[0].Text);
        var sotu = Corpus.Read("sotu").First();
        Assert.Equal("1790", sotu.Field("year"));
        Assert.Equal("George Washington", sotu.Field("president"));
        var spam = Corpus.Read("spam").Select(d => d.Field("label")).Distinct().Order().ToList();
        Assert.Equal(["ham", "spam"], spam);
        Assert.All(Corpus.EmbeddedNames, name => Assert.NotEmpty(Corpus.Read(name).Take(1)));
    }

    [Fact]
    public void TangHasAllItsPoems() => Assert.Equal(57603, Corpus.Read("tang").Count());

    [Fact]
    public void MissingFileNamesThePath()
    {
        var error = Assert.Throws<FileNotFoundException>(() => Corpus.Read("/nonexistent/poems.jsonl"));
        Assert.Contains("/nonexistent/poems.jsonl", error.Message);
    }

    [Fact]
    public void EmptyCorpusIsAnError()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("empty.jsonl"), "\n\n");
        var error = Assert.Throws<InvalidDataException>(() => Corpus.Read(dir.File("empty.jsonl")).ToList());
        Assert.Contains("empty.jsonl", error.Message);
        Assert.Contains("empty", error.Message);
    }

    [Fact]
    public void InvalidUtf8NamesFileAndLine()
    {
        using var dir = new TempDirectory();
        var bytes = new List<byte>();
        bytes.AddRange("first line\nsecond line\nthird "u8.ToArray());
        bytes.AddRange(new byte[] { 0xC3, 0x28 }); // a lead byte followed by a non-continuation
        bytes.AddRange("\n"u8.ToArray());
        File.WriteAllBytes(dir.File("bad.txt"), [.. bytes]);
        var error = Assert.Throws<InvalidDataException>(() => Corpus.Read(dir.File("bad.txt")).ToList());
        Assert.Contains("bad.txt:3", error.Message);
        Assert.Contains("UTF-8", error.Message);
    }

    [Fact]
    public void MalformedJsonAndMissingTextNameTheLine()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("a.jsonl"), "{\"text\":\"ok\"}\n{\"text\": oops}\n");
        var error = Assert.Throws<InvalidDataException>(() => Corpus.Read(dir.File("a.jsonl")).ToList());
        Assert.Contains("a.jsonl:2", error.Message);

        File.WriteAllText(dir.File("b.jsonl"), "{\"text\":\"ok\"}\n\n{\"title\":\"no text\"}\n");
        error = Assert.Throws<InvalidDataException>(() => Corpus.Read(dir.File("b.jsonl")).ToList());
        Assert.Contains("b.jsonl:3", error.Message);
        Assert.Contains("'text'", error.Message);
    }

    [Fact]
    public void PlainTextSplitsOnBlankLinesAndGzipWorks()
    {
        using var dir = new TempDirectory();
        string path = dir.File("doc.txt.gz");
        using (var gz = new GZipStream(File.Create(path), CompressionLevel.Fastest))
            gz.Write(Encoding.UTF8.GetBytes("one\ntwo\n\n\nthree\r\n"));
        Assert.Equal(["one\ntwo", "three"], Corpus.Read(path).Select(d => d.Text).ToList());
    }

    [Fact]
    public void CorruptGzipIsAnError()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("x.jsonl.gz"), [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5]);
        var error = Assert.ThrowsAny<Exception>(() => Corpus.Read(dir.File("x.jsonl.gz")).ToList());
        Assert.Contains("x.jsonl.gz", error.Message);
    }
}

public class TokenShardTests
{
    [Theory]
    [InlineData(1000)]     // 2-byte tokens
    [InlineData(100_000)]  // 4-byte tokens
    public void WriteThenReadRoundTrips(int vocab)
    {
        using var dir = new TempDirectory();
        int[] tokens = Enumerable.Range(0, 5000).Select(i => i * 7919 % vocab).ToArray();
        TokenShard.Write(dir.File("s.bin"), vocab, [tokens.AsMemory(0, 1234), tokens.AsMemory(1234)]);
        var header = TokenShard.ReadHeader(dir.File("s.bin"));
        Assert.Equal(vocab <= 65536 ? 2 : 4, header.TokenWidth);
        Assert.Equal(5000, header.TokenCount);
        using var shard = new MappedTokenShard(dir.File("s.bin"));
        var all = new long[5000];
        shard.CopyTo(0, all);
        Assert.Equal(tokens.Select(t => (long)t), all);
        Assert.Equal(tokens[4321], shard[4321]);
    }

    [Fact]
    public void IdsOutsideTheVocabularyAreRejected()
    {
        using var dir = new TempDirectory();
        Assert.Throws<ArgumentOutOfRangeException>(() => TokenShard.Write(dir.File("s.bin"), 10, [new[] { 3, 10 }]));
        Assert.False(File.Exists(dir.File("s.bin"))); // nothing half-written
    }

    [Fact]
    public void BadHeadersNameTheFileAndField()
    {
        using var dir = new TempDirectory();
        string path = dir.File("s.bin");
        TokenShard.Write(path, 1000, [new[] { 1, 2, 3, 4 }]);
        byte[] good = File.ReadAllBytes(path);

        File.WriteAllBytes(path, good[..^2]); // truncated
        var error = Assert.Throws<InvalidDataException>(() => TokenShard.ReadHeader(path));
        Assert.Contains("s.bin", error.Message);
        Assert.Contains("truncated", error.Message);

        byte[] badMagic = (byte[])good.Clone();
        badMagic[0] = (byte)'X';
        File.WriteAllBytes(path, badMagic);
        Assert.Contains("magic", Assert.Throws<InvalidDataException>(() => TokenShard.ReadHeader(path)).Message);

        byte[] badVersion = (byte[])good.Clone();
        badVersion[8] = 9;
        File.WriteAllBytes(path, badVersion);
        Assert.Contains("version 9", Assert.Throws<InvalidDataException>(() => TokenShard.ReadHeader(path)).Message);

        byte[] badWidth = (byte[])good.Clone();
        badWidth[12] = 3;
        File.WriteAllBytes(path, badWidth);
        Assert.Contains("offset 12", Assert.Throws<InvalidDataException>(() => TokenShard.ReadHeader(path)).Message);

        File.WriteAllBytes(path, good[..10]);
        Assert.Contains("header", Assert.Throws<InvalidDataException>(() => TokenShard.ReadHeader(path)).Message);
        Assert.Throws<FileNotFoundException>(() => TokenShard.ReadHeader(dir.File("missing.bin")));
    }
}

public class TokenBatchLoaderTests
{
    static string MakeShard(TempDirectory dir, int count)
    {
        string path = dir.File("train.bin");
        TokenShard.Write(path, 60000, [Enumerable.Range(0, count).ToArray()]);
        return path;
    }

    [Fact]
    public void TargetsAreInputsShiftedByOne()
    {
        using var dir = new TempDirectory();
        using var shard = new MappedTokenShard(MakeShard(dir, 10_000));
        var batch = new TokenBatchLoader(shard, batchSize: 4, sequenceLength: 16, seed: 1).Next();
        for (int row = 0; row < 4; row++)
        {
            Assert.Equal(0, batch.Inputs[row * 16] % 16); // windows start at multiples of T
            for (int t = 0; t < 16; t++) Assert.Equal(batch.Inputs[row * 16 + t] + 1, batch.Targets[row * 16 + t]);
        }
    }

    [Fact]
    public void SameSeedSameBatchesAndResumeContinuesExactly()
    {
        using var dir = new TempDirectory();
        using var shard = new MappedTokenShard(MakeShard(dir, 3_000));
        var straight = new TokenBatchLoader(shard, 4, 16, seed: 42);
        var batches = Enumerable.Range(0, 20).Select(_ => straight.Next().Inputs).ToList(); // spans several epochs (46 windows)

        var first = new TokenBatchLoader(shard, 4, 16, seed: 42);
        for (int i = 0; i < 10; i++) Assert.Equal(batches[i], first.Next().Inputs);
        var resumed = new TokenBatchLoader(shard, 4, 16, seed: 42, position: first.Position);
        for (int i = 10; i < 20; i++) Assert.Equal(batches[i], resumed.Next().Inputs);

        var other = new TokenBatchLoader(shard, 4, 16, seed: 43);
        Assert.NotEqual(batches[0], other.Next().Inputs);
    }

    [Fact]
    public void AnEpochVisitsEveryWindowOnce()
    {
        using var dir = new TempDirectory();
        using var shard = new MappedTokenShard(MakeShard(dir, 16 * 40 + 1));
        var loader = new TokenBatchLoader(shard, 4, 16, seed: 3);
        var starts = Enumerable.Range(0, 10).SelectMany(_ => { var b = loader.Next(); return Enumerable.Range(0, 4).Select(r => b.Inputs[r * 16]); }).ToList();
        Assert.Equal(Enumerable.Range(0, 40).Select(w => (long)w * 16), starts.Order());
        Assert.Equal(new LoaderPosition(0, 40), loader.Position);
    }

    [Fact]
    public void RanksSplitTheWindowsWithoutOverlap()
    {
        using var dir = new TempDirectory();
        using var shard = new MappedTokenShard(MakeShard(dir, 16 * 40 + 1));
        var rank0 = new TokenBatchLoader(shard, 2, 16, seed: 5, rank: 0, worldSize: 2).Next();
        var rank1 = new TokenBatchLoader(shard, 2, 16, seed: 5, rank: 1, worldSize: 2).Next();
        var single = new TokenBatchLoader(shard, 4, 16, seed: 5).Next();
        var starts = new[] { rank0.Inputs[0], rank1.Inputs[0], rank0.Inputs[16], rank1.Inputs[16] };
        Assert.Equal(Enumerable.Range(0, 4).Select(r => single.Inputs[r * 16]).Order(), starts.Order());
    }

    [Fact]
    public void TooLittleDataIsAClearError()
    {
        using var dir = new TempDirectory();
        using var shard = new MappedTokenShard(MakeShard(dir, 50));
        var error = Assert.Throws<InvalidDataException>(() => new TokenBatchLoader(shard, 4, 16, seed: 1));
        Assert.Contains("train.bin", error.Message);
    }
}

public class ShardBuilderTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    [Fact]
    public void BuildsTrainAndValShardsOfBosPrefixedDocuments()
    {
        using var dir = new TempDirectory();
        var summary = ShardBuilder.Build(fixture.Tokenizer, fixture.Directory, new ShardOptions(["tang"], 0.1, Seed: 7, MaxDocuments: 500), dir.Path);
        Assert.Equal(500, summary.TrainDocuments + summary.ValDocuments);
        Assert.InRange(summary.ValDocuments, 25, 80);
        using var train = new MappedTokenShard(dir.File(ShardSummary.TrainFile));
        Assert.Equal(summary.TrainTokens, train.Count);
        Assert.Equal(fixture.Tokenizer.BosId, train[0]);
        var tokens = new long[train.Count];
        train.CopyTo(0, tokens);
        Assert.Equal(summary.TrainDocuments, tokens.Count(t => t == fixture.Tokenizer.BosId));

        // The first training document decodes back to the first poem not held out.
        int firstTrain = Enumerable.Range(0, 500).First(i => !ShardBuilder.IsValidation(7, "tang", i, 0.1));
        int nextBos = Array.IndexOf(tokens, (long)fixture.Tokenizer.BosId, 1);
        string decoded = fixture.Tokenizer.Decode(tokens[1..nextBos].Select(t => (int)t));
        Assert.Equal(Corpus.Read("tang").ElementAt(firstTrain).Text, decoded);

        var loaded = ShardSummary.Load(dir.Path);
        Assert.Equal(summary.TrainTokens, loaded.TrainTokens);
    }

    [Fact]
    public void SplitIsDeterministicAndSeedDependent()
    {
        var a = Enumerable.Range(0, 1000).Select(i => ShardBuilder.IsValidation(1, "tang", i, 0.05)).ToList();
        var b = Enumerable.Range(0, 1000).Select(i => ShardBuilder.IsValidation(1, "tang", i, 0.05)).ToList();
        var c = Enumerable.Range(0, 1000).Select(i => ShardBuilder.IsValidation(2, "tang", i, 0.05)).ToList();
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.InRange(a.Count(x => x), 30, 75);
    }

    [Fact]
    public void BadOptionsAreRejected()
    {
        using var dir = new TempDirectory();
        Assert.Throws<ArgumentOutOfRangeException>(() => ShardBuilder.Build(fixture.Tokenizer, "t", new ShardOptions(["tang"], 1.5), dir.Path));
        Assert.Throws<ArgumentException>(() => ShardBuilder.Build(fixture.Tokenizer, "t", new ShardOptions([]), dir.Path));
        File.WriteAllText(dir.File("one.jsonl"), "{\"text\":\"only one document\"}\n");
        var error = Assert.Throws<InvalidDataException>(() => ShardBuilder.Build(fixture.Tokenizer, "t", new ShardOptions([dir.File("one.jsonl")], 0.5, Seed: 1), dir.File("out")));
        Assert.Contains("validation", error.Message);
    }
}
