using System.Text.Json;
using GptSharp.Alignment;
using GptSharp.Inference;
using GptSharp.Tokenization;
using static TorchSharp.torch;

namespace GptSharp.Tests;

public class ToolUseTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    readonly GptTokenizer _tokenizer = fixture.Tokenizer;
    int Id(string token) => _tokenizer.SpecialId(token);

    [Fact]
    public void TemplateLearnsTheCallButNotTheToolsAnswer()
    {
        var problem = new ArithmeticProblem(347, '×', 29);
        var chat = new ChatTemplate(_tokenizer).Render(Arithmetic.WithTool(problem));
        int[] system = _tokenizer.Encode("Tools: calculator."), user = _tokenizer.Encode("What is 347 × 29?");
        int[] call = _tokenizer.Encode("calculator 347 × 29"), result = _tokenizer.Encode("10063"), final = _tokenizer.Encode("347 × 29 = 10063");
        int[] expected =
        [
            _tokenizer.BosId, Id(SpecialTokens.System), .. system, _tokenizer.EndId, Id(SpecialTokens.User), .. user, _tokenizer.EndId,
            Id(SpecialTokens.Assistant), Id(SpecialTokens.ToolCall), .. call, _tokenizer.EndId,
            Id(SpecialTokens.Tool), .. result, _tokenizer.EndId,
            Id(SpecialTokens.Assistant), .. final, _tokenizer.EndId,
        ];
        Assert.Equal(expected, chat.Tokens);
        // Learned: the call (its marker, text and closing <|end|>) and the final answer with its <|end|>; not the tool's turn.
        int callStart = 1 + 1 + system.Length + 1 + 1 + user.Length + 1 + 1;
        int toolStart = callStart + 1 + call.Length + 1;
        int answerStart = toolStart + 1 + result.Length + 1 + 1;
        for (int i = 0; i < expected.Length; i++)
            Assert.Equal(i >= callStart && i < toolStart || i >= answerStart, chat.LossMask[i]);
        Assert.Throws<ArgumentException>(() => new ChatTemplate(_tokenizer).Render([new ChatMessage(ChatRoles.User, "x", new ToolCall("calculator", "1"))]));
    }

    /// <summary>This tokenizer as it was written before the two tool tokens existed.</summary>
    GptTokenizer OldTokenizer(TempDirectory dir)
    {
        string folder = dir.File("old");
        Directory.CreateDirectory(folder);
        File.Copy(Path.Combine(fixture.Directory, GptTokenizer.RankFileName), Path.Combine(folder, GptTokenizer.RankFileName));
        // The tokenizer file as it was written before the two tool tokens existed.
        var spec = _tokenizer.Spec with
        {
            SpecialTokens = _tokenizer.Spec.SpecialTokens.Where(kv => kv.Key is not (SpecialTokens.ToolCall or SpecialTokens.Tool)).ToDictionary(),
            VocabSize = _tokenizer.VocabSize - 2,
        };
        File.WriteAllText(Path.Combine(folder, GptTokenizer.SpecFileName), JsonSerializer.Serialize(spec, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.CamelCase }));
        return GptTokenizer.Load(folder);
    }

    [Fact]
    public void OlderTokenizersWithoutToolTokensLoadAndRefuseOnlyToolTurns()
    {
        using var dir = new TempDirectory();
        var old = OldTokenizer(dir);
        var template = new ChatTemplate(old);
        Assert.False(template.SupportsTools);
        Assert.True(new ChatTemplate(_tokenizer).SupportsTools);
        Assert.Equal(new ChatTemplate(_tokenizer).Render(Arithmetic.WithoutTool(new ArithmeticProblem(12, '+', 34))).Tokens,
            template.Render(Arithmetic.WithoutTool(new ArithmeticProblem(12, '+', 34))).Tokens);
        var error = Assert.Throws<NotSupportedException>(() => template.Render(Arithmetic.WithTool(new ArithmeticProblem(12, '+', 34))));
        Assert.Contains("trained before tool calls", error.Message);
        // Without the tokens, the decoder never interjects: an <|end|> is a plain end of turn.
        Assert.Null(Arithmetic.Tools.Interjection(old)([.. old.Encode("calculator 1+1"), old.EndId]));
    }

    int[] Called(string text) => [Id(SpecialTokens.ToolCall), .. _tokenizer.Encode(text), _tokenizer.EndId];

    [Fact]
    public void ACallIsAnsweredWithAToolTurnAndEveryBadCallWithAnErrorTurn()
    {
        var interject = Arithmetic.Tools.Interjection(_tokenizer);
        int[] ToolTurn(string result) => [Id(SpecialTokens.Tool), .. _tokenizer.Encode(result), _tokenizer.EndId, Id(SpecialTokens.Assistant)];
        Assert.Equal(ToolTurn("10063"), interject(Called("calculator 347 × 29")));
        Assert.Equal(ToolTurn("6"), interject([.. _tokenizer.Encode("Let me see."), .. Called("calculator (1+2)*2")]));

        string ResultOf(int[] answer)
        {
            int[] turn = interject(answer) ?? throw new Xunit.Sdk.XunitException("no tool turn");
            Assert.Equal(Id(SpecialTokens.Tool), turn[0]);
            Assert.Equal([_tokenizer.EndId, Id(SpecialTokens.Assistant)], turn[^2..]);
            return _tokenizer.Decode(turn[1..^2]);
        }
        Assert.StartsWith("error: unexpected", ResultOf(Called("calculator 2 + * 3")));
        Assert.StartsWith("error: expression longer than", ResultOf(Called("calculator " + string.Concat(Enumerable.Repeat("9*", 400)) + "9")));
        Assert.StartsWith("error: more than", ResultOf(Called("calculator " + new string('(', 60) + "1" + new string(')', 60))));
        Assert.StartsWith("error: a number with more than 28 digits", ResultOf(Called("calculator " + new string('9', 40))));
        Assert.StartsWith("error: result too large", ResultOf(Called("calculator 99999999999999 * 99999999999999 * 99999999999999")));
        Assert.StartsWith("error: no tool named 'python'", ResultOf(Called("python import os")));
        Assert.StartsWith("error: empty expression", ResultOf(Called("calculator")));

        // A plain end of turn is not a call; nor is an <|end|> that closes an earlier turn.
        Assert.Null(interject([.. _tokenizer.Encode("10063"), _tokenizer.EndId]));
        Assert.Null(interject([.. Called("calculator 1+1"), .. ToolTurn("2"), .. _tokenizer.Encode("2"), _tokenizer.EndId]));
        // Past the call limit, a call gets no answer (and the <|end|> ends the answer).
        var answer = new List<int>();
        for (int i = 0; i < ToolBox.DefaultMaxCalls; i++) answer.AddRange([.. Called("calculator 1+1"), .. ToolTurn("2")]);
        Assert.Null(interject([.. answer, .. Called("calculator 1+1")]));
    }

    [Fact]
    public void AToolThatThrowsGivesAnErrorTurnAndLongResultsAreCut()
    {
        var tools = new ToolBox([new Tool("boom", "throws", _ => throw new InvalidOperationException("disk on fire")),
                                 new Tool("echo", "repeats", text => new ToolResult(true, new string('x', 10_000)))]);
        Assert.Equal("error: boom failed: disk on fire", tools.Call(new ToolCall("boom", "")).Text);
        Assert.Equal(ToolBox.MaxResultCharacters + 1, tools.Call(new ToolCall("echo", "")).Text.Length);
        Assert.Throws<ArgumentException>(() => new ToolBox([new Tool("two words", "", _ => new ToolResult(true, ""))]));
        Assert.Throws<ArgumentException>(() => ToolBox.Named("calculator,shell"));
        Assert.Equal("Tools: calculator.", ToolBox.Named("calculator").SystemLine);
        var offered = Arithmetic.Tools.Offer([new ChatMessage(ChatRoles.System, "Be brief."), new ChatMessage(ChatRoles.User, "hi")]);
        Assert.Equal("Be brief.\nTools: calculator.", offered[0].Content);
        Assert.Equal(2, offered.Count);
    }

    /// <summary>A scripted "model": for each row, the logits make the next token of that row's intended answer, whatever
    /// was fed so far (tool turns included), so the decoder's handling of tool turns is what the test sees.</summary>
    internal static TokenDecoder Scripted(int[][] answers, int promptLength, int vocab) => new(tokens =>
    {
        long b = tokens.shape[0], t = tokens.shape[1];
        var logits = zeros(b, t, vocab);
        for (int row = 0; row < b; row++)
        {
            int produced = (int)t - promptLength - 0;   // rows share one prompt length here, so no left padding
            int next = produced < answers[row].Length ? answers[row][produced] : answers[row][^1];
            logits[row, t - 1, next] = tensor(50f);
        }
        return logits;
    }, contextLength: 128, vocabSize: vocab);

    [Fact]
    public void TheDecoderRunsTheCallFeedsTheResultBackAndMarksItsTokens()
    {
        var template = new ChatTemplate(_tokenizer);
        var withTool = template.Render(Arithmetic.WithTool(new ArithmeticProblem(347, '×', 29))).Tokens;
        var plain = template.Render(Arithmetic.WithoutTool(new ArithmeticProblem(12, '+', 34))).Tokens;
        int[] promptA = Rollout.RenderPrompts(_tokenizer, ["What is 347 × 29?"], Arithmetic.Tools)[0];
        int[] answerA = withTool[promptA.Length..];
        // The second row asks for the same length of prompt with the tool system line, and answers without a call.
        int[] answerB = [.. _tokenizer.Encode("46"), _tokenizer.EndId];
        Assert.Equal(plain[^answerB.Length..], answerB);
        var decoder = Scripted([answerA, answerB], promptA.Length, _tokenizer.VocabSize);
        var options = new SamplingOptions(Temperature: 0, MaxNewTokens: 64, StopTokens: [_tokenizer.EndId]);
        var results = decoder.Generate([promptA, promptA], options, interject: Arithmetic.Tools.Interjection(_tokenizer));

        Assert.Equal(answerA, results[0].Tokens);
        Assert.Equal(FinishReason.Stop, results[0].Finish);
        int toolAt = Array.IndexOf(answerA, Id(SpecialTokens.Tool));
        int resumeAt = Array.LastIndexOf(answerA, Id(SpecialTokens.Assistant));
        for (int i = 0; i < answerA.Length; i++)
            Assert.Equal(i >= toolAt && i <= resumeAt, results[0].Inserted![i]);   // <|tool|> 10063 <|end|> <|assistant|>
        Assert.Equal(answerB, results[1].Tokens);
        Assert.Null(results[1].Inserted);

        // What the answer says, and the messages it holds.
        Assert.Equal("347 × 29 = 10063", ToolBox.FinalText(_tokenizer, results[0].Tokens));
        var messages = ToolBox.Messages(_tokenizer, results[0].Tokens);
        Assert.Equal([ChatRoles.Assistant, ChatRoles.Tool, ChatRoles.Assistant], messages.Select(m => m.Role));
        Assert.Equal(new ToolCall("calculator", "347 × 29"), messages[0].ToolCall);
        Assert.Equal("10063", messages[1].Content);
        Assert.Equal("347 × 29 = 10063", messages[2].Content);

        // Without the tool, the same script ends at the call's <|end|>.
        var bare = decoder.Generate([promptA], options);
        Assert.Equal(answerA[..(toolAt)], bare[0].Tokens);
    }

    [Fact]
    public void ATerminalShowsTheCallAndItsResultInBrackets()
    {
        var written = new System.Text.StringBuilder();
        var shown = new GptSharp.Serving.ToolTurnText(_tokenizer, text => written.Append(text));
        var answer = new ChatTemplate(_tokenizer).Render(Arithmetic.WithTool(new ArithmeticProblem(347, '×', 29))).Tokens;
        foreach (int token in answer[(Array.IndexOf(answer, Id(SpecialTokens.Assistant)) + 1)..]) shown.Add(token);
        shown.Finish();
        Assert.Equal("[calculator 347 × 29 → 10063] 347 × 29 = 10063", written.ToString());
    }

    [Fact]
    public void GrpoWithToolsRefusesATokenizerWithoutToolTokens()
    {
        using var dir = new TempDirectory();
        var old = OldTokenizer(dir);
        using var policy = new GptSharp.Models.Gpt(GptSharp.Models.GptConfig.Gpt2(old.VocabSize, 32, layers: 1, heads: 1, width: 16));
        var error = Assert.Throws<ArgumentException>(() => new GrpoExperience(policy, null, Arithmetic.Reward([]), old, ["What is 1 + 1?"],
            new GrpoConfig { Tools = "calculator" }, seed: 1));
        Assert.Contains("no tool-call tokens", error.Message);
        Assert.Throws<ArgumentException>(() => new GrpoExperience(policy, null, Arithmetic.Reward([]), _tokenizer, ["q"], new GrpoConfig { Tools = "shell" }, seed: 1));
        // An environment speaks in tool turns too: refused the same way, before any rollout.
        var steps = ArithmeticStepsEnvironment.Factory([new StepProblem(2, 3, '+', 100)]);
        error = Assert.Throws<ArgumentException>(() => new GrpoExperience(policy, null, Rewards.Episodes, old, ["What is (2 × 3) + 100?"], new GrpoConfig(), seed: 1, environment: steps));
        Assert.Contains("the environment 'calculator-steps', but tokenizer", error.Message);
        Assert.Contains("no tool-call tokens", error.Message);
    }

    [Fact]
    public void ToolTokensHaveNoLossInRollouts()
    {
        int[] prompt = [_tokenizer.BosId, 5, 6, Id(SpecialTokens.Assistant)];
        int[] answer = [Id(SpecialTokens.ToolCall), 7, _tokenizer.EndId, Id(SpecialTokens.Tool), 8, _tokenizer.EndId, Id(SpecialTokens.Assistant), 8, _tokenizer.EndId];
        bool[] inserted = [false, false, false, true, true, true, true, false, false];
        var completions = new List<Completion> { new("q", "8", prompt, answer, false, inserted), new("q", "8", prompt, [8, _tokenizer.EndId], false) };
        using var rollout = Rollout.Layout(completions, _tokenizer.PadId, CPU);
        Assert.Equal(inserted.Select(i => i ? 0f : 1f), rollout.Mask[0].data<float>().ToArray());
        Assert.Equal([1f, 1f, 0, 0, 0, 0, 0, 0, 0], rollout.Mask[1].data<float>().ToArray());
        Assert.Equal(answer.Select(t => (long)t), rollout.Tokens[0].data<long>().ToArray());
    }

    [Fact]
    public void ArithmeticProblemsAreFixedDisjointAndRight()
    {
        var train = Arithmetic.Problems(heldOut: false, 2000);
        var heldOut = Arithmetic.Problems(heldOut: true, 300);
        Assert.Equal(train.Select(p => p.Question), Arithmetic.Problems(heldOut: false, 2000).Select(p => p.Question));
        Assert.Empty(heldOut.Select(p => p.Question).Intersect(Arithmetic.Problems(heldOut: false, Arithmetic.TrainingProblems).Select(p => p.Question)));
        Assert.Equal(300, heldOut.Select(p => p.Question).Distinct().Count());
        Assert.All(train.Take(200), p => Assert.Equal(p.Answer, Calculator.Evaluate(p.Expression).Text));
        Assert.Equal(['+', '-', '×'], train.Select(p => p.Operator).Distinct().Order());
        Assert.All(train, p => Assert.True(p.A is >= 10 and < 1000 && p.B is >= 10 and < 1000, "two or three digits"));
        Assert.Equal("10063", new ArithmeticProblem(347, '×', 29).Answer);

        // The reward reads the final turn: the tool's text alone does not count.
        var reward = Arithmetic.Reward([new ArithmeticProblem(347, '×', 29)]);
        Assert.Equal([1.0, 1.0, 0.0], reward([new("What is 347 × 29?", "10063", [], [], false), new("What is 347 × 29?", "347 × 29 = 10063", [], [], false),
            new("What is 347 × 29?", "347 × 29 = 10064", [], [], false)]));
    }

    [Fact]
    public void ConversationFilesCarryToolCallsTheOpenAiWay()
    {
        using var dir = new TempDirectory();
        string path = dir.File("tools.jsonl");
        var chat = Arithmetic.WithTool(new ArithmeticProblem(12, '+', 34));
        ChatData.WriteConversations(path, [chat]);
        Assert.Contains("\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"calculator\",\"arguments\":\"12 + 34\"}}]", File.ReadAllText(path));
        var read = ChatData.ReadConversations(path).Single();
        Assert.Equal<ChatMessage>(chat, read);

        void Expect(string messages, string fragment)
        {
            File.WriteAllText(path, "{\"messages\":[" + messages + "]}\n");
            var error = Assert.Throws<InvalidDataException>(() => ChatData.ReadConversations(path).ToList());
            Assert.Contains("tools.jsonl:1", error.Message);
            Assert.Contains(fragment, error.Message);
        }
        const string user = "{\"role\":\"user\",\"content\":\"q\"}", answer = "{\"role\":\"assistant\",\"content\":\"a\"}";
        Expect($"{user},{{\"role\":\"tool\",\"content\":\"5\"}},{answer}", "messages[1] is a tool result, but the message before it makes no tool call");
        Expect($"{user},{{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[]}},{answer}", "messages[1].tool_calls must be an array of exactly one call");
        Expect($"{user},{{\"role\":\"assistant\",\"tool_calls\":[{{\"function\":{{\"name\":\"a b\",\"arguments\":\"1\"}}}}]}},{answer}", "function.name must be one word");
        Expect($"{user},{{\"role\":\"assistant\",\"tool_calls\":[{{\"function\":{{\"name\":\"calculator\",\"arguments\":{{}}}}}}]}},{answer}", "function.arguments must be a string");
        Expect($"{{\"role\":\"user\",\"content\":\"q\",\"tool_calls\":[{{\"function\":{{\"name\":\"calculator\",\"arguments\":\"1\"}}}}]}},{answer}", "only assistant messages make tool calls");
    }
}
