using GptSharp.Data;
using GptSharp.Alignment;
using GptSharp.Tokenization;

namespace GptSharp.Tests;

public class ChatTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    readonly GptTokenizer _tokenizer = fixture.Tokenizer;

    [Fact]
    public void TemplateMasksExactlyTheAssistantTokensAndTheirEnd()
    {
        var template = new ChatTemplate(_tokenizer);
        var chat = template.Render([
            new ChatMessage("system", "你是詩人。"),
            new ChatMessage("user", "寫詩 <|end|>"),
            new ChatMessage("assistant", "床前明月光"),
        ]);
        int[] system = _tokenizer.Encode("你是詩人。"), user = _tokenizer.Encode("寫詩 <|end|>"), answer = _tokenizer.Encode("床前明月光");
        int[] expected =
        [
            _tokenizer.BosId,
            _tokenizer.SpecialId(SpecialTokens.System), .. system, _tokenizer.EndId,
            _tokenizer.SpecialId(SpecialTokens.User), .. user, _tokenizer.EndId,
            _tokenizer.SpecialId(SpecialTokens.Assistant), .. answer, _tokenizer.EndId,
        ];
        Assert.Equal(expected, chat.Tokens);
        int answerStart = expected.Length - answer.Length - 1;
        for (int i = 0; i < expected.Length; i++)
            Assert.Equal(i >= answerStart, chat.LossMask[i]); // assistant content and its <|end|>, nothing else
        Assert.Equal(3, chat.Tokens.Count(t => t == _tokenizer.EndId)); // the "<|end|>" the user typed stays text
    }

    [Fact]
    public void PromptEndsWithTheAssistantToken()
    {
        var template = new ChatTemplate(_tokenizer);
        int[] prompt = template.RenderPrompt([new ChatMessage("user", "hi")]);
        Assert.Equal(_tokenizer.SpecialId(SpecialTokens.Assistant), prompt[^1]);
        Assert.Throws<ArgumentException>(() => template.Render([new ChatMessage("robot", "x")]));
    }

    [Fact]
    public void BadConversationsNameFileLineAndField()
    {
        using var dir = new TempDirectory();
        string path = dir.File("chats.jsonl");
        void Expect(string line, string fragment)
        {
            File.WriteAllText(path, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"a\"}]}\n" + line + "\n");
            var error = Assert.Throws<InvalidDataException>(() => ChatData.ReadConversations(path).ToList());
            Assert.Contains("chats.jsonl:2", error.Message);
            Assert.Contains(fragment, error.Message);
        }
        Expect("{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", "no assistant turn");
        Expect("{\"messages\":[{\"role\":\"wizard\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"a\"}]}", "messages[0].role");
        Expect("{\"messages\":[{\"role\":\"user\",\"content\":\"  \"},{\"role\":\"assistant\",\"content\":\"a\"}]}", "messages[0].content");
        Expect("{\"messages\": [", "malformed JSON");
        Expect("{\"text\":\"x\"}", "'messages'");
    }

    [Fact]
    public void PreferencePairsRoundTripAndRejectEmptyAnswers()
    {
        using var dir = new TempDirectory();
        string path = dir.File("pairs.jsonl");
        var pair = new PreferencePair([new ChatMessage("user", "《靜夜思》的作者是誰？")], "李白。", "杜甫。");
        ChatData.WritePreferences(path, [pair, pair]);
        var read = ChatData.ReadPreferences(path).ToList();
        Assert.Equal(2, read.Count);
        Assert.Equal(pair.Chosen, read[0].Chosen);
        Assert.Equal(pair.Prompt, read[0].Prompt);
        File.WriteAllText(path, "{\"prompt\":[{\"role\":\"user\",\"content\":\"q\"}],\"chosen\":\"a\",\"rejected\":\"\"}\n");
        Assert.Contains("'rejected'", Assert.Throws<InvalidDataException>(() => ChatData.ReadPreferences(path).ToList()).Message);
    }

    [Fact]
    public void BuiltInDatasetsAreDeterministicWithHeldOutPoemsAndRealisticRejections()
    {
        var a = BuiltInDatasets.Build(seed: 5, maxPoems: 400);
        var b = BuiltInDatasets.Build(seed: 5, maxPoems: 400);
        Assert.Equal(a.TrainChats.Count, b.TrainChats.Count);
        Assert.Equal(a.TrainChats.SelectMany(c => c).Select(m => m.Content), b.TrainChats.SelectMany(c => c).Select(m => m.Content));
        Assert.NotEmpty(a.HeldOutChats);
        Assert.NotEmpty(a.HeldOutPairs);
        // No held-out question is asked in training.
        var trainQuestions = a.TrainChats.Select(BuiltInDatasets.Question).ToHashSet();
        Assert.DoesNotContain(a.HeldOutChats, c => trainQuestions.Contains(BuiltInDatasets.Question(c)));
        Assert.All(a.TrainPairs, p => Assert.NotEqual(p.Chosen, p.Rejected));
        // Every chosen poem has regular line lengths; the rejected ones include broken ones.
        var poemPairs = a.TrainPairs.Where(p => p.Prompt[0].Content.StartsWith("寫")).ToList();
        Assert.All(poemPairs, p => Assert.True(PoemForm.IsRegularQuatrainOrRegulated(p.Chosen.Split('\n'))));
        Assert.Contains(poemPairs, p => !PoemForm.IsRegularQuatrainOrRegulated(p.Rejected.Split('\n')));
        Assert.Contains(poemPairs, p => p.Rejected.Split('\n').Length > p.Chosen.Split('\n').Length); // too long is rejected too
        Assert.Contains(poemPairs, p => p.Rejected.Length < p.Chosen.Length);
        Assert.Contains(a.TrainChats, c => c[0].Content.StartsWith("Who gave the State of the Union address in"));
        var continuePairs = a.TrainPairs.Where(p => p.Prompt[0].Content.StartsWith("請接下句")).ToList();
        Assert.NotEmpty(continuePairs);
        Assert.All(continuePairs, p => Assert.Equal(p.Chosen.Length - 1, p.Rejected.Length));
    }
}

public class FormRewardTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    [Fact]
    public void FormRewardIsOneOnlyForARegularPoem()
    {
        var tokenizer = fixture.Tokenizer;
        string good = "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。";
        string bad = "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉鄉。";
        Completion Answer(string text) => new("寫一首詩", text, [], [.. tokenizer.Encode(text), tokenizer.EndId], Truncated: false);
        var scores = Rewards.Form([Answer(good), Answer(bad)]);
        Assert.Equal(new[] { 1.0, 0.0 }, scores);
    }
}
