using System.Diagnostics;
using System.IO.Compression;
using GptSharp.Alignment;
using GptSharp.Data;

namespace GptSharp.Tests;

/// <summary>The checker of regulated verse (one instance for the class: the phonology table and the Tang calibration).</summary>
public sealed class VerseFixture
{
    public Verse Verse { get; } = Verse.Embedded();
    public Phonology Phonology { get; } = Phonology.Embedded();
}

/// <summary>Each rule on hand-checked poems, the instructions, the graded order, and the phonology table.</summary>
public class VerseTests(VerseFixture fixture) : IClassFixture<VerseFixture>
{
    const string Stork = "白日依山盡，黃河入海流。\n欲窮千里目，更上一層樓。";          // 王之渙: every rule kept
    const string NightThoughts = "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。";  // 李白: rhymes, repeats 明 月 頭
    const string SpringDawn = "春眠不覺曉，處處聞啼鳥。\n夜來風雨聲，花落知多少。";     // 孟浩然: rhymes on an oblique tone
    const string WhiteEmperor = "朝辭白帝彩雲間，千里江陵一日還。\n兩岸猿聲啼不住，輕舟已過萬重山。";

    [Theory]
    [InlineData("zhi", RhymeGroup.Zhi)]
    [InlineData("si", RhymeGroup.Zhi)]
    [InlineData("ji", RhymeGroup.Qi)]
    [InlineData("ju", RhymeGroup.Qi)]
    [InlineData("lv", RhymeGroup.Qi)]
    [InlineData("er", RhymeGroup.Qi)]
    [InlineData("yu", RhymeGroup.Qi)]
    [InlineData("jue", RhymeGroup.Jie)]
    [InlineData("yue", RhymeGroup.Jie)]
    [InlineData("nve", RhymeGroup.Jie)]
    [InlineData("wei", RhymeGroup.Wei)]
    [InlineData("dui", RhymeGroup.Wei)]
    [InlineData("you", RhymeGroup.You)]
    [InlineData("liu", RhymeGroup.You)]
    [InlineData("weng", RhymeGroup.Geng)]
    [InlineData("xiong", RhymeGroup.Geng)]
    [InlineData("yuan", RhymeGroup.Han)]
    [InlineData("yun", RhymeGroup.Wen)]
    [InlineData("wo", RhymeGroup.Bo)]
    [InlineData("ge", RhymeGroup.Bo)]
    [InlineData("wu", RhymeGroup.Gu)]
    [InlineData("shuang", RhymeGroup.Tang)]
    public void FinalsFallIntoTheModernRhymeGroups(string syllable, RhymeGroup group) => Assert.Equal(group, Reading.GroupOf(syllable));

    [Fact]
    public void APoemThatKeepsEveryRulePassesStrict()
    {
        var verdict = fixture.Verse.Check(Stork);
        foreach (var rule in new[] { VerseRule.Form, VerseRule.Rhyme, VerseRule.LevelRhyme, VerseRule.Alternation, VerseRule.Opposition, VerseRule.Adhesion, VerseRule.NoRepeat })
            Assert.True(verdict.Passed(rule), $"{rule}: {verdict.Rules.First(r => r.Rule == rule).Detail}");
        Assert.True(verdict.Strict);
        Assert.Equal(1.0, verdict.Graded, 6);
        Assert.Empty(verdict.Unknown);
        var seven = fixture.Verse.Check(WhiteEmperor);
        Assert.True(seven.Passed(VerseRule.Rhyme));
        Assert.True(seven.Passed(VerseRule.LevelRhyme));
    }

    [Fact]
    public void EachBrokenRuleIsNamed()
    {
        var night = fixture.Verse.Check(NightThoughts);
        Assert.True(night.Passed(VerseRule.LevelRhyme));             // 霜 鄉: the tang group, level
        Assert.False(night.Passed(VerseRule.NoRepeat));
        Assert.Contains("明", night.Rules.First(r => r.Rule == VerseRule.NoRepeat).Detail);
        Assert.False(night.Passed(VerseRule.Alternation));           // 疑是地上霜: 是 and 上 are both oblique
        Assert.False(night.Passed(VerseRule.Opposition));            // 舉頭 / 低頭
        Assert.False(night.Strict);

        var dawn = fixture.Verse.Check(SpringDawn);
        Assert.True(dawn.Passed(VerseRule.Rhyme));                   // 鳥 少: the hao group ...
        Assert.False(dawn.Passed(VerseRule.LevelRhyme));             // ... on an oblique tone
        Assert.False(dawn.Strict);

        var unrhymed = fixture.Verse.Check("白日依山盡，黃河入海流。\n欲窮千里目，更上一層臺。");
        Assert.False(unrhymed.Passed(VerseRule.Rhyme));
        Assert.False(unrhymed.Strict);
    }

    [Fact]
    public void APolyphoneMeetsARuleWhenAnyReadingDoes()
    {
        Assert.Contains(fixture.Phonology.Of("看"), r => r.Tone == 1);
        Assert.Contains(fixture.Phonology.Of("看"), r => r.Tone == 4);
        // 看 rhymes with 山 on its level reading kan1.
        var verdict = fixture.Verse.Check("白日依山盡，黃河入海看。\n欲窮千里目，更上一層山。");
        Assert.True(verdict.Passed(VerseRule.LevelRhyme), verdict.Rules.First(r => r.Rule == VerseRule.LevelRhyme).Detail);
    }

    [Fact]
    public void AcrosticsAndGivenRhymesAreCheckedAndMalformedOnesRefused()
    {
        Assert.True(fixture.Verse.Check(Stork, VerseInstruction.FromPrompt("寫一首五言詩，題為《登樓》，藏頭「白黃欲更」。")).Strict);
        var wrongHeads = fixture.Verse.Check(Stork, VerseInstruction.FromPrompt("寫一首詩，題為《登樓》，藏頭「春江花月」。"));
        Assert.False(wrongHeads.Passed(VerseRule.Acrostic));
        Assert.False(wrongHeads.Strict);
        Assert.True(fixture.Verse.Check(Stork, VerseInstruction.FromPrompt("寫一首詩，題為《登樓》，用「秋」韻。")).Passed(VerseRule.AskedRhyme));
        Assert.False(fixture.Verse.Check(Stork, VerseInstruction.FromPrompt("寫一首詩，題為《登樓》，用「山」韻。")).Passed(VerseRule.AskedRhyme));
        Assert.False(fixture.Verse.Check(Stork, VerseInstruction.FromPrompt("寫一首詩，題為《登樓》，七言。")).Strict);   // five characters a clause, seven asked
        Assert.Equal(VerseInstruction.None, VerseInstruction.FromPrompt("寫一首詩，題為《七言藏頭「春江花」》。"));   // words in a title ask nothing
        Assert.Contains("4 or 8 CJK characters", Assert.Throws<ArgumentException>(() => VerseInstruction.FromPrompt("藏頭「春江花」")).Message);
        Assert.Contains("one CJK character", Assert.Throws<ArgumentException>(() => VerseInstruction.FromPrompt("用「山水」韻")).Message);
        var instruction = new VerseInstruction(7, "春江花月", "東");
        Assert.Equal(instruction, VerseInstruction.FromPrompt(instruction.Prompt("春夜")));
    }

    [Fact]
    public void TheBuiltInPoemsAnswerInstructionsTheyMeetByConstruction()
    {
        var chats = BuiltInDatasets.Build().TrainChats.Where(c => c[0].Content.StartsWith("寫一首詩", StringComparison.Ordinal)).Take(400).ToList();
        var kinds = chats.Select(c => VerseInstruction.FromPrompt(c[0].Content)).ToList();
        Assert.Contains(kinds, k => k.ClauseLength is not null);
        Assert.Contains(kinds, k => k.Acrostic is not null);
        Assert.Contains(kinds, k => k.Rhyme is not null);
        Assert.Contains(kinds, k => k == VerseInstruction.None);
        foreach (var chat in chats)
        {
            var verdict = fixture.Verse.CheckAnswer(chat[0].Content, chat[1].Content);
            foreach (var rule in new[] { VerseRule.Form, VerseRule.AskedLength, VerseRule.Acrostic, VerseRule.AskedRhyme })
                Assert.NotEqual(false, verdict.Passed(rule));
        }
    }

    [Fact]
    public void TheGradedRewardPutsFormFirstThenEveryFurtherRule()
    {
        var reward = Rewards.VerseGraded(fixture.Verse);
        Completion Answer(string prompt, string text) => new(prompt, text, [], [], Truncated: false);
        const string plain = "寫一首詩，題為《登樓》。", acrostic = "寫一首詩，題為《登樓》，藏頭「白黃欲更」。";
        double[] scores = reward([Answer(plain, Stork), Answer(plain, NightThoughts), Answer(plain, "白日依山盡，黃河入海。"), Answer(plain, ""),
            Answer(acrostic, Stork), Answer(acrostic, NightThoughts)]);
        Assert.True(scores[0] > scores[1] && scores[1] > 0.5 && 0.5 > scores[2] && scores[2] > scores[3]);
        Assert.Equal(1.5, scores[4], 6);   // every rule kept, the instruction too: strict, and the bonus for it
        Assert.True(scores[5] < scores[1]);   // the acrostic asked and missed costs more
        Assert.Equal([1.0, 0.0], Rewards.VerseStrict(fixture.Verse)([Answer(acrostic, Stork), Answer(acrostic, NightThoughts)]));
    }

    [Fact]
    public void TextWithoutVerseOrWithUnknownCharactersGetsVerdictsNotExceptions()
    {
        var english = fixture.Verse.Check("hello world");
        Assert.False(english.Passed(VerseRule.Form));
        Assert.Equal("no CJK text", english.Rules[0].Detail);
        Assert.False(english.Strict);
        var odd = fixture.Verse.Check("白日依山〇，黃河入海流。\n欲窮千里目，更上一層樓。");
        Assert.Equal(["〇"], odd.Unknown);
    }

    [Fact]
    public void TheGradedRewardOrdersPoemsByHowManyRulesTheyKeep()
    {
        double Graded(string poem) => fixture.Verse.Check(poem).Graded;
        Assert.True(Graded(Stork) > Graded(NightThoughts));
        Assert.True(Graded(NightThoughts) > Graded("白日依山盡，黃河入海。\n欲窮千里目，更上一層樓。"));   // a clause short: the wrong form
        Assert.True(Graded("白日依山盡，黃河入海。") > Graded("hello"));
    }

    [Fact]
    public void AnAcrosticHalfKeptEarnsHalfItsCreditButNotStrict()
    {
        VerseVerdict Heads(string acrostic) => fixture.Verse.Check(Stork, new VerseInstruction(Acrostic: acrostic));
        var all = Heads("白黃欲更");
        var half = Heads("白黃春月");
        var none = Heads("春江花月");
        Assert.True(all.Strict);
        Assert.False(half.Strict);
        Assert.Equal(0.5, half.Rules.First(r => r.Rule == VerseRule.Acrostic).Credit, 6);
        Assert.True(all.Graded > half.Graded && half.Graded > none.Graded, $"{all.Graded} {half.Graded} {none.Graded}");
        // Heads of an eight-clause acrostic met by a four-clause poem: four of eight at most.
        Assert.Equal(0.5, Heads("白黃欲更春江花月").Rules.First(r => r.Rule == VerseRule.Acrostic).Credit, 6);
    }

    [Fact]
    public void StrictRequiresNoRepeatedCharacterWhereThePoetsKeepThatRule()
    {
        // 白 again opens the third clause: its first character is no key position, so only the repetition changes.
        var repeated = fixture.Verse.Check("白日依山盡，黃河入海流。\n白窮千里目，更上一層樓。");
        Assert.False(repeated.Passed(VerseRule.NoRepeat));
        Assert.True(fixture.Verse.RequiredTonalRules[(5, 4)].Contains(VerseRule.NoRepeat));
        Assert.False(repeated.Strict);
        Assert.True(repeated.Graded < fixture.Verse.Check(Stork).Graded);
        // Two characters can keep every tonal rule and the rhyme; the poets' rule of no repetition is what fails it.
        var hack = fixture.Verse.Check("日路人人路，人人路路人。\n人人人路路，不路不人人。");
        Assert.True(hack.Passed(VerseRule.Form) == true && hack.Passed(VerseRule.LevelRhyme) == true);
        Assert.False(hack.Strict);
    }

    [Fact]
    public void EachRepeatedCharacterCostsGradedCreditSoShapingSeesFewerRepeatsAsProgress()
    {
        // The same stork poem with one, then two, then three characters written twice over (third and fourth clauses' heads and tails).
        var once = fixture.Verse.Check("白日依山盡，黃河入海流。\n白窮千里目，更上一層樓。");
        var twice = fixture.Verse.Check("白日依山盡，黃河入海流。\n白窮千里目，日上一層樓。");
        var thrice = fixture.Verse.Check("白日依山盡，黃河入海流。\n白窮千里山，日上一層樓。");
        double Credit(VerseVerdict v) => v.Rules.First(r => r.Rule == VerseRule.NoRepeat).Credit;
        Assert.Equal(1.0, Credit(fixture.Verse.Check(Stork)), 6);
        Assert.Equal(0.5, Credit(once), 6);
        Assert.Equal(1 / 3.0, Credit(twice), 6);
        Assert.Equal(0.25, Credit(thrice), 6);
        Assert.All([once, twice, thrice], v => Assert.False(v.Passed(VerseRule.NoRepeat)));
        Assert.True(fixture.Verse.Check(Stork).Graded > once.Graded && once.Graded > twice.Graded, $"{once.Graded} {twice.Graded}");
    }

    [Fact]
    public void TheTangPoetsKeepTheRequiredRulesOfTheirShape()
    {
        var calibration = Verse.Calibrate(fixture.Phonology, Corpus.Read("tang").Select(d => d.Text));
        foreach (var shape in new[] { (5, 4), (7, 4), (5, 8), (7, 8) })
        {
            Assert.True(calibration.Counts[shape] > 3000);
            Assert.InRange(calibration.Rates[shape][VerseRule.Rhyme], 0.6, 0.95);   // most of them rhyme even by modern readings
            foreach (var rule in calibration.Required[shape]) Assert.True(calibration.Rates[shape][rule] >= 0.5);
            foreach (var rule in Verse.TonalRules.Except(calibration.Required[shape])) Assert.True(calibration.Rates[shape][rule] < 0.5);
        }
    }

    [Fact]
    public void ADamagedPhonologyTableIsAnErrorNamingTheFile()
    {
        using var dir = new TempDirectory();
        string source = Path.Combine(Corpus.DataDirectory(), "phonology.tsv.gz");
        byte[] bytes = File.ReadAllBytes(source);
        string truncated = dir.File("truncated.tsv.gz");
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        Assert.StartsWith(truncated + ":", Assert.Throws<InvalidDataException>(() => Phonology.Load(truncated)).Message);
        string badLine = dir.File("bad.tsv.gz");
        using (var gz = new GZipStream(File.Create(badLine), CompressionLevel.Fastest))
        using (var writer = new StreamWriter(gz)) writer.Write("# header\n白\tbai2\n日\tri9\n");
        Assert.StartsWith(badLine + ":3:", Assert.Throws<InvalidDataException>(() => Phonology.Load(badLine)).Message);
        Assert.Throws<FileNotFoundException>(() => Phonology.Load(dir.File("none.tsv.gz")));
    }

    [Fact]
    public void TheTableIsRebuiltByteForByteFromTheScript()
    {
        string root = Repository.Root;
        using var dir = new TempDirectory();
        string output = dir.File("phonology.tsv.gz");
        var start = new ProcessStartInfo("node", [Path.Combine(root, "scripts", "build-phonology.mjs"), "--out", output]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start)!;
        string text = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, text);
        Assert.Equal(File.ReadAllBytes(Path.Combine(root, "data", "phonology.tsv.gz")), File.ReadAllBytes(output));
    }
}
