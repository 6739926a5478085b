using GptSharp.Alignment;
using GptSharp.Data;
using GptSharp.Inference;
using GptSharp.Runs;
using GptSharp.Training;
using GptSharp.Tokenization;
using static TorchSharp.torch;

namespace GptSharp.Tests;

public class EnvironmentTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    readonly GptTokenizer _tokenizer = fixture.Tokenizer;
    int Id(string token) => _tokenizer.SpecialId(token);
    static readonly StepProblem Problem = new(37, 48, '−', 205);

    /// <summary>An environment scripted by a function of the turn number and the model's turn.</summary>
    sealed class Scripted(Func<int, ChatMessage, EnvironmentStep> step, Func<string, IReadOnlyList<ChatMessage>>? reset = null) : IEnvironment
    {
        int _turn;
        public IReadOnlyList<ChatMessage> Reset(string prompt) => reset?.Invoke(prompt) ?? [new ChatMessage(ChatRoles.User, prompt)];
        public EnvironmentStep Step(ChatMessage turn) => step(++_turn, turn);
    }

    static EnvironmentFactory Factory(Func<int, ChatMessage, EnvironmentStep> step, Func<string, IReadOnlyList<ChatMessage>>? reset = null) =>
        new("scripted", () => new Scripted(step, reset));

    (int[] Prompt, int[] Answer) Worked(StepProblem problem)
    {
        var template = new ChatTemplate(_tokenizer);
        int[] prompt = template.RenderPrompt(ArithmeticStepsEnvironment.Offer(problem.Question));
        return (prompt, template.Render(ArithmeticStepsEnvironment.WorkedAnswer(problem)).Tokens[prompt.Length..]);
    }

    [Fact]
    public void TheStepCalculatorDoesOneOperationACallAndRemembersItsLastResult()
    {
        var environment = ArithmeticStepsEnvironment.Factory([Problem]).Create();
        ChatMessage Call(string arguments, string tool = "calculator") => new(ChatRoles.Assistant, "", new ToolCall(tool, arguments));
        var opening = environment.Reset(Problem.Question);
        Assert.Equal([ChatRoles.System, ChatRoles.User], opening.Select(m => m.Role));
        Assert.Contains("calculator", opening[0].Content);
        Assert.StartsWith("error: no result yet", environment.Step(Call("ans − 205")).Observation);
        Assert.StartsWith("error: one operation", environment.Step(Call("(37 × 48) − 205")).Observation);
        Assert.StartsWith("error: no tool named 'shell'", environment.Step(Call("ls", "shell")).Observation);
        var first = environment.Step(Call("37 × 48"));
        Assert.Equal(("1776", 0.0, false), (first.Observation, first.Reward, first.Done));
        Assert.Equal("1571", environment.Step(Call("ans − 205")).Observation);
        Assert.Equal("1572", environment.Step(Call("ans + 1")).Observation);   // ans is the latest result
        Assert.Equal(EnvironmentStep.Finish(1), environment.Step(new ChatMessage(ChatRoles.Assistant, "(37 × 48) − 205 = 1571")));

        var another = ArithmeticStepsEnvironment.Factory([Problem]).Create();
        another.Reset(Problem.Question);
        Assert.Equal(EnvironmentStep.Finish(0), another.Step(new ChatMessage(ChatRoles.Assistant, "1572")));
        Assert.Throws<KeyNotFoundException>(() => another.Reset("What is 1 + 1?"));
        Assert.Equal(1571, Problem.Value);
        Assert.Equal(56, new StepProblem(7, 8, '+', 0).Value);
    }

    [Fact]
    public void TwoStepProblemsAreFixedDisjointAndWorkedRight()
    {
        var train = ArithmeticStepsEnvironment.Problems(heldOut: false, 500);
        var heldOut = ArithmeticStepsEnvironment.Problems(heldOut: true, 200);
        Assert.Equal(train.Select(p => p.Question), ArithmeticStepsEnvironment.Problems(heldOut: false, 500).Select(p => p.Question));
        Assert.Empty(heldOut.Select(p => p.Question).Intersect(ArithmeticStepsEnvironment.Problems(heldOut: false, ArithmeticStepsEnvironment.TrainingProblems).Select(p => p.Question)));
        Assert.Equal(['+', '−'], train.Select(p => p.Operator).Distinct().Order());
        Assert.All(train, p => Assert.Equal(p.Answer, Calculator.Evaluate(p.Expression).Text));
        // The worked answer is what the environment answers: play it through and it earns 1.
        foreach (var problem in train.Take(20))
        {
            var worked = ArithmeticStepsEnvironment.WorkedAnswer(problem);
            var environment = ArithmeticStepsEnvironment.Factory([problem]).Create();
            Assert.Equal(worked.Take(2), environment.Reset(problem.Question));
            for (int i = 2; i < worked.Count - 1; i += 2)
                Assert.Equal(worked[i + 1].Content, environment.Step(worked[i]).Observation);
            Assert.Equal(EnvironmentStep.Finish(1), environment.Step(worked[^1]));
        }
    }

    [Fact]
    public void AnEpisodeFeedsEachObservationBackMasksItTokenByTokenAndEndsWhenDone()
    {
        var (prompt, answer) = Worked(Problem);
        var decoder = ToolUseTests.Scripted([answer], prompt.Length, _tokenizer.VocabSize);
        var options = new SamplingOptions(Temperature: 0, MaxNewTokens: 96, StopTokens: [_tokenizer.EndId]);
        var (answers, episodes, rendered) = Episodes.Play(decoder, _tokenizer, ArithmeticStepsEnvironment.Factory([Problem]), [Problem.Question], options);

        Assert.Equal(prompt, rendered[0]);
        Assert.Equal(answer, answers[0].Tokens);
        Assert.Equal(FinishReason.Stop, answers[0].Finish);
        Assert.Equal(new EpisodeOutcome(1, 3, true), episodes[0].Outcome);
        // Environment tokens: each <|tool|> … <|end|> <|assistant|>; the model's: the two calls and the answer.
        bool inTool = false;
        for (int i = 0; i < answer.Length; i++)
        {
            if (answer[i] == Id(SpecialTokens.Tool)) inTool = true;
            Assert.Equal(inTool, answers[0].Inserted![i]);
            if (answer[i] == Id(SpecialTokens.Assistant)) inTool = false;
        }
        Assert.Equal(2 * 3 + _tokenizer.Encode("1776").Length + _tokenizer.Encode("1571").Length, answers[0].Inserted!.Count(x => x));

        var completion = Rewards.Describe(_tokenizer, [Problem.Question], rendered, [answers[0].Tokens], [false], [answers[0].Inserted])[0] with { Episode = episodes[0].Outcome };
        Assert.Equal("(37 × 48) − 205 = 1571", completion.Answer);
        Assert.Equal([1.0], Rewards.Episodes([completion]));
        using var rollout = Rollout.Layout([completion], _tokenizer.PadId, CPU);
        Assert.Equal(answers[0].Inserted!.Select(x => x ? 0f : 1f), rollout.Mask[0].data<float>().ToArray());
        Assert.Throws<RewardProgramException>(() => Rewards.Episodes([completion with { Episode = null }]));
    }

    [Fact]
    public void AnEpisodeThatNeverEndsStopsAtTheTurnLimit()
    {
        int[] turn = [.. _tokenizer.Encode("more"), _tokenizer.EndId];
        int[] observation = [Id(SpecialTokens.User), .. _tokenizer.Encode("go on"), _tokenizer.EndId, Id(SpecialTokens.Assistant)];
        int[] script = [.. Enumerable.Range(0, 6).SelectMany(_ => turn.Concat(observation))];
        var endless = Factory((_, _) => EnvironmentStep.Reply("go on", 0.25, ChatRoles.User));
        int[] prompt = new ChatTemplate(_tokenizer).RenderPrompt([new ChatMessage(ChatRoles.User, "q")]);
        var decoder = ToolUseTests.Scripted([script], prompt.Length, _tokenizer.VocabSize);
        var (answers, episodes, _) = Episodes.Play(decoder, _tokenizer, endless, ["q"], new SamplingOptions(Temperature: 0, MaxNewTokens: 120, StopTokens: [_tokenizer.EndId]), maxTurns: 3);

        Assert.Equal(new EpisodeOutcome(0.75, 3, false), episodes[0].Outcome);
        Assert.Equal(FinishReason.Stop, answers[0].Finish);
        Assert.Equal(script[..(3 * turn.Length + 2 * observation.Length)], answers[0].Tokens);
        Assert.Throws<ArgumentOutOfRangeException>(() => new Episode(endless, "q", maxTurns: 0));

        // Held to the room its opening leaves in the context: prompt and answer fit one training forward.
        var (held, _, _) = Episodes.Play(decoder, _tokenizer, endless, ["q"], new SamplingOptions(Temperature: 0, MaxNewTokens: 120, StopTokens: [_tokenizer.EndId]),
            maxTurns: 3, contextLength: prompt.Length + 5);
        Assert.Equal((5, FinishReason.Length), (held[0].Tokens.Length, held[0].Finish));
        Assert.Throws<ArgumentException>(() => Episodes.Play(decoder, _tokenizer, endless, ["q"], new SamplingOptions(MaxNewTokens: 8), contextLength: prompt.Length));
    }

    [Fact]
    public void AnEnvironmentThatThrowsOrGivesNaNFailsNamingThePromptAndTheTurn()
    {
        int[] turn = [.. _tokenizer.Encode("x"), _tokenizer.EndId];
        int[] observation = [Id(SpecialTokens.Tool), .. _tokenizer.Encode("ok"), _tokenizer.EndId, Id(SpecialTokens.Assistant)];
        int[] prompt = new ChatTemplate(_tokenizer).RenderPrompt([new ChatMessage(ChatRoles.User, "春曉")]);
        var decoder = ToolUseTests.Scripted([[.. turn, .. observation, .. turn, .. observation, .. turn]], prompt.Length, _tokenizer.VocabSize);
        var options = new SamplingOptions(Temperature: 0, MaxNewTokens: 64, StopTokens: [_tokenizer.EndId]);

        var throws = Factory((n, _) => n == 2 ? throw new InvalidOperationException("the sandbox died") : EnvironmentStep.Reply("ok"));
        var e = Assert.Throws<EnvironmentException>(() => Episodes.Play(decoder, _tokenizer, throws, ["春曉"], options));
        Assert.Equal(("春曉", 2), (e.Prompt, e.Turn));
        Assert.Contains("'scripted' failed on the prompt \"春曉\" at turn 2: the sandbox died", e.Message);

        var nan = Factory((n, _) => n == 2 ? new EnvironmentStep("ok", double.NaN, false) : EnvironmentStep.Reply("ok"));
        e = Assert.Throws<EnvironmentException>(() => Episodes.Play(decoder, _tokenizer, nan, ["春曉"], options));
        Assert.Equal(2, e.Turn);
        Assert.Contains("NaN", e.Message);

        var assistantSpeaks = Factory((_, _) => EnvironmentStep.Reply("me", 0, ChatRoles.Assistant));
        Assert.Contains("speaks as 'assistant'", Assert.Throws<EnvironmentException>(() => Episodes.Play(decoder, _tokenizer, assistantSpeaks, ["春曉"], options)).Message);
        var noUser = Factory((_, _) => EnvironmentStep.Finish(1), _ => [new ChatMessage(ChatRoles.System, "hi")]);
        e = Assert.Throws<EnvironmentException>(() => Episodes.Play(decoder, _tokenizer, noUser, ["春曉"], options));
        Assert.Equal(0, e.Turn);
    }

    [Fact]
    public void GrpoInAnEnvironmentThatFailsMidRunResumesToTheSameRun()
    {
        using var dir = new TempDirectory();
        fixture.SaveInitialRun(dir.File("sft"), context: 32);
        string[] prompts = ["寫一首詩", "寫一個字", "春曉", "靜夜思"];
        var config = new GrpoConfig { PromptsPerRollout = 4, GroupSize = 4, MiniBatch = 8, Rollout = new() { MaxNewTokens = 8 }, MaskTruncated = false, Loss = GrpoLoss.Dapo };
        var training = GrpoRun.Defaults with { Steps = 16, BatchSize = 8, LearningRate = 1e-3, CheckpointEvery = 4 };   // 2 steps per rollout
        var reward = PpoTests.LowHalfShare(_tokenizer);
        var calm = Factory((_, _) => EnvironmentStep.Finish(0));
        var straight = new List<double>();
        GrpoRun.Execute(dir.File("sft"), prompts, reward, config, training, new RunOptions(dir.File("straight")) { OnStep = m => straight.Add(m.Loss) }, environment: calm);

        // Episodes of the third rollout fail to start: the run stops naming the prompt and turn 0, and resumes from its checkpoint.
        int resets = 0;
        var flaky = Factory((_, _) => EnvironmentStep.Finish(0), p => ++resets > 32 ? throw new IOException("the sandbox is gone") : [new ChatMessage(ChatRoles.User, p)]);
        var halves = new List<double>();
        var e = Assert.ThrowsAny<Exception>(() => GrpoRun.Execute(dir.File("sft"), prompts, reward, config, training,
            new RunOptions(dir.File("halves")) { OnStep = m => halves.Add(m.Loss) }, environment: flaky));
        var failure = e as EnvironmentException ?? e.InnerException as EnvironmentException;
        Assert.NotNull(failure);
        Assert.Contains(failure.Prompt, prompts);
        Assert.Equal(0, failure.Turn);
        Assert.Equal(4, Checkpoint.ReadState(dir.File("halves")).Step);
        GrpoRun.Execute(dir.File("sft"), prompts, reward, config, training, new RunOptions(dir.File("halves")) { Resume = true, OnStep = m => halves.Add(m.Loss) }, environment: calm);
        Assert.Equal(straight, halves);
        Assert.NotEqual(0, straight.Sum(Math.Abs));
        Assert.Throws<ArgumentException>(() => GrpoRun.Execute(dir.File("sft"), prompts, reward, config with { Tools = "calculator" }, training,
            new RunOptions(dir.File("both")), environment: calm));
    }

    [Fact]
    public void TheRhymeDictionaryAnswersFromThePhonologyTable()
    {
        var phonology = Phonology.Embedded();
        var dictionary = RhymeDictionary.Embedded();
        var east = dictionary.Lookup("東");
        Assert.True(east.Ok);
        Assert.StartsWith("平聲庚韻：", east.Text);
        var listed = Elements(east.Text[(east.Text.IndexOf('：') + 1)..]);
        Assert.Equal(RhymeDictionary.Listed, listed.Count);
        Assert.DoesNotContain("東", listed);
        Assert.All(listed, c => Assert.Contains(phonology.Of(c), r => r.Group == RhymeGroup.Geng && r.Classes.Contains(ToneClass.Level)));
        Assert.Equal(dictionary.Common(RhymeGroup.Geng).Where(c => c != "東").Take(RhymeDictionary.Listed), listed);
        Assert.Equal("仄聲齊韻", dictionary.Lookup("去").Text);   // oblique only: no level rhymes to list
        Assert.StartsWith("平聲庚韻、平聲唐韻、仄聲唐韻：", dictionary.Lookup("「行」").Text);   // every reading, the list of the first level one
        var look = dictionary.Lookup("看").Text;   // kan4, kan1
        Assert.StartsWith("仄聲寒韻、平聲寒韻：", look);
        Assert.Equal(dictionary.Common(RhymeGroup.Han).Where(c => c != "看").Take(RhymeDictionary.Listed), Elements(look[(look.IndexOf('：') + 1)..]));
        Assert.False(dictionary.Lookup("春江").Ok);
        Assert.False(dictionary.Lookup("a").Ok);
        Assert.False(dictionary.Lookup(null).Ok);

        // Ranked by how often the poems rhyme on a character.
        var ranked = new RhymeDictionary(phonology, ["白日依山盡，黃河入海流。欲窮千里目，更上一層樓。", "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。", "一二三四五，六七八九樓。"]);
        Assert.Equal(["樓", "流"], ranked.Common(RhymeGroup.You));
        Assert.Equal(["鄉", "霜"], ranked.Common(RhymeGroup.Tang));   // even clauses only (not 光); ties in character order
    }

    static List<string> Elements(string text)
    {
        var list = new List<string>();
        var e = System.Globalization.StringInfo.GetTextElementEnumerator(text);
        while (e.MoveNext()) list.Add((string)e.Current);
        return list;
    }

    [Fact]
    public void TheVerseEnvironmentAnswersLookUpsAndScoresThePoemThatEndsTheEpisode()
    {
        var verse = Verse.Embedded();
        var environment = VerseEnvironment.Factory(verse).Create();
        const string prompt = "寫一首詩，題為《登樓》，用「流」韻。";
        var opening = environment.Reset(prompt);
        Assert.Equal("Tools: 韻.", opening[0].Content);
        Assert.Equal(prompt, opening[1].Content);
        var lookUp = environment.Step(new ChatMessage(ChatRoles.Assistant, "", new ToolCall("韻", "流")));
        Assert.False(lookUp.Done);
        Assert.Equal(RhymeDictionary.Embedded().Lookup("流").Text, lookUp.Observation);
        Assert.StartsWith("error: no tool named", environment.Step(new ChatMessage(ChatRoles.Assistant, "", new ToolCall("calculator", "1+1"))).Observation);
        const string poem = "白日依山盡，黃河入海流。\n欲窮千里目，更上一層樓。";
        var end = environment.Step(new ChatMessage(ChatRoles.Assistant, poem));
        Assert.True(end.Done);
        Assert.Equal(Rewards.VerseGraded(verse)([new Completion(prompt, poem, [], [], false)])[0], end.Reward);

        var worked = VerseEnvironment.WorkedAnswer(prompt, poem, RhymeDictionary.Embedded(), Verse.Uncalibrated())!;
        Assert.Equal(new ToolCall("韻", "流"), worked[2].ToolCall);
        Assert.Equal(poem, worked[^1].Content);
        Assert.Null(VerseEnvironment.WorkedAnswer(prompt, "白日依山盡，黃河入海去。\n欲窮千里目，更上一層樓。", RhymeDictionary.Embedded(), Verse.Uncalibrated()));
    }
}
