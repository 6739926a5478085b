using GptSharp.Alignment;
using GptSharp.Evaluation;
using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Tokenization;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

/// <summary>The arithmetic of RL: group advantages, GRPO's three losses, the adaptive KL controller, running moments.</summary>
public class RlMathTests
{
    [Fact]
    public void GroupAdvantagesAreRelativeToTheirOwnGroup()
    {
        double[] rewards = [1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 3];
        var scaled = GrpoMath.GroupAdvantages(rewards, groupSize: 4, scaleByStd: true);
        // Group 1: mean 0.5, sample std sqrt(4·0.25/3) = 0.57735; group 2 all alike: 0; group 3: mean 0.75, std 1.5.
        double std1 = Math.Sqrt(1.0 / 3);
        double[] expected = [0.5 / (std1 + 1e-4), -0.5 / (std1 + 1e-4), -0.5 / (std1 + 1e-4), 0.5 / (std1 + 1e-4), 0, 0, 0, 0,
            -0.75 / (1.5 + 1e-4), -0.75 / (1.5 + 1e-4), -0.75 / (1.5 + 1e-4), 2.25 / (1.5 + 1e-4)];
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], scaled[i], 9);
        var centred = GrpoMath.GroupAdvantages(rewards, groupSize: 4, scaleByStd: false);
        Assert.Equal([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, -0.75, -0.75, -0.75, 2.25], centred);
        Assert.Throws<ArgumentException>(() => GrpoMath.GroupAdvantages([1, 2, 3], 2, true));
        Assert.Throws<ArgumentOutOfRangeException>(() => GrpoMath.GroupAdvantages([1, 2], 1, true));
    }

    [Fact]
    public void EachGrpoLossReducesTheClippedSurrogateAsItsPaperSays()
    {
        // Two answers: the first 2 tokens long (third masked), the second 3. Ratios e^(logp − old):
        // row 0: 1.5, 0.5 (A = +1); row 1: 1.1, 1.25, 0.7 (A = −2).
        using var scope = NewDisposeScope();
        var old = zeros(2, 3);
        var logp = tensor(new[] { (float)Math.Log(1.5), (float)Math.Log(0.5), 0f, (float)Math.Log(1.1), (float)Math.Log(1.25), (float)Math.Log(0.7) }, [2, 3]);
        var mask = tensor(new[] { 1f, 1f, 0f, 1f, 1f, 1f }, [2, 3]);
        var advantages = tensor(new[] { 1f, -2f });
        // Token loss −min(ρA, clip(ρ)A). Symmetric clip 0.2:
        //   row 0: ρ=1.5 → −min(1.5, 1.2) = −1.2; ρ=0.5 → −min(0.5, 0.8) = −0.5
        //   row 1: ρ=1.1 → −min(−2.2, −2.2) = 2.2; ρ=1.25 → −min(−2.5, −2.4) = 2.5; ρ=0.7 → −min(−1.4, −1.6) = 1.6
        double grpo = ((-1.2 - 0.5) / 2 + (2.2 + 2.5 + 1.6) / 3) / 2;
        double drGrpo = (-1.2 - 0.5 + 2.2 + 2.5 + 1.6) / (2 * 8.0);
        // DAPO clips high at 0.28: row 0 ρ=1.5 → −min(1.5, 1.28) = −1.28; row 1 unchanged (ρ=1.25 < 1.28 → 2.5).
        double dapo = (-1.28 - 0.5 + 2.2 + 2.5 + 1.6) / 5;
        Assert.Equal(grpo, GrpoMath.Loss(GrpoLoss.Grpo, logp, old, advantages, mask, 0.2, 0.2, 8).item<float>(), 5);
        Assert.Equal(drGrpo, GrpoMath.Loss(GrpoLoss.DrGrpo, logp, old, advantages, mask, 0.2, 0.2, 8).item<float>(), 5);
        Assert.Equal(dapo, GrpoMath.Loss(GrpoLoss.Dapo, logp, old, advantages, mask, 0.2, 0.28, 8).item<float>(), 5);

        // β·k3 to the reference: with reference = old (log-ratio to reference −log ρ), k3 = 1/ρ + log ρ − 1 per token.
        double K3(double rho) => 1 / rho - 1 + Math.Log(rho);
        double withKl = ((-1.2 - 0.5 + 0.1 * (K3(1.5) + K3(0.5))) / 2 + (2.2 + 2.5 + 1.6 + 0.1 * (K3(1.1) + K3(1.25) + K3(0.7))) / 3) / 2;
        Assert.Equal(withKl, GrpoMath.Loss(GrpoLoss.Grpo, logp, old, advantages, mask, 0.2, 0.2, 8, old, beta: 0.1).item<float>(), 5);
    }

    [Fact]
    public void EachAdvantageEstimatorAndScalingMatchesItsHandComputedValues()
    {
        double[] rewards = [1, 0, 0, 0, 2, 2, 2, 2];
        // Group 1: mean 0.25, centred 0.75, −0.25 ×3, sample std sqrt(0.75 / 3) = 0.5; group 2 all alike.
        var grpo = GrpoMath.Advantages(rewards, 4, AdvantageEstimator.Grpo, RewardScaling.Group);
        Assert.Equal(0.75 / 0.5001, grpo[0], 9);
        Assert.Equal(-0.25 / 0.5001, grpo[1], 9);
        Assert.All(grpo[4..], a => Assert.Equal(0, a));
        // RLOO: the reward minus the mean of the other three: 1 − 0, 0 − 1/3.
        var rloo = GrpoMath.Advantages(rewards, 4, AdvantageEstimator.Rloo, RewardScaling.None);
        Assert.Equal(1, rloo[0], 12);
        Assert.Equal(-1 / 3.0, rloo[1], 12);
        Assert.All(rloo[4..], a => Assert.Equal(0, a));
        // REINFORCE++: centred as GRPO, over the batch's sample std of the centred values: sqrt(0.75 / 7).
        var reinforce = GrpoMath.Advantages(rewards, 4, AdvantageEstimator.ReinforcePlusPlus, RewardScaling.Batch);
        double batchStd = Math.Sqrt(0.75 / 7) + 1e-4;
        Assert.Equal(0.75 / batchStd, reinforce[0], 9);
        Assert.Equal(-0.25 / batchStd, reinforce[3], 9);
        // RLOO scaled by its group's std, and GRPO unscaled.
        Assert.Equal(1 / 0.5001, GrpoMath.Advantages(rewards, 4, AdvantageEstimator.Rloo, RewardScaling.Group)[0], 9);
        Assert.Equal(0.75, GrpoMath.Advantages(rewards, 4, AdvantageEstimator.Grpo, RewardScaling.None)[0], 12);

        // Each estimator's default scaling, and what the Dr. GRPO loss changes.
        Assert.Equal(RewardScaling.Group, new GrpoConfig().Scaling);
        Assert.Equal(RewardScaling.None, new GrpoConfig { Loss = GrpoLoss.DrGrpo }.Scaling);
        Assert.Equal(RewardScaling.None, new GrpoConfig { Advantage = AdvantageEstimator.Rloo }.Scaling);
        Assert.Equal(RewardScaling.Batch, new GrpoConfig { Advantage = AdvantageEstimator.ReinforcePlusPlus }.Scaling);
        Assert.Equal(RewardScaling.Group, new GrpoConfig { Advantage = AdvantageEstimator.Rloo, ScaleRewards = RewardScaling.Group }.Scaling);
    }

    [Fact]
    public void TheOverlongPenaltyFallsLinearlyOverItsBuffer()
    {
        Assert.Equal(0, GrpoMath.OverlongPenalty(48, maxTokens: 64, buffer: 16, factor: 1));
        Assert.Equal(-0.5, GrpoMath.OverlongPenalty(56, 64, 16, 1), 12);
        Assert.Equal(-1, GrpoMath.OverlongPenalty(64, 64, 16, 1), 12);
        Assert.Equal(-1, GrpoMath.OverlongPenalty(70, 64, 16, 1), 12);
        Assert.Equal(-0.5, GrpoMath.OverlongPenalty(52, 64, 16, 2), 12);   // a quarter of the buffer at factor 2
        Assert.Equal(0, GrpoMath.OverlongPenalty(64, 64, 0, 1));   // off
        Assert.Throws<ArgumentOutOfRangeException>(() => new GrpoConfig { OverlongBuffer = 64 }.Validate());   // the whole answer
        Assert.Throws<ArgumentOutOfRangeException>(() => new GrpoConfig { SamplingRounds = 0 }.Validate());
    }

    [Fact]
    public void GspoClipsOneRatioPerAnswerAndCispoWeightsEveryTokensGradient()
    {
        // Two answers: the first 2 tokens long (third masked), the second 3. log π − log π_old:
        // row 0: 0.1, −0.3 (A = +1); row 1: 0.2, 0.2, 0.2 (A = −1).
        using var scope = NewDisposeScope();
        var logp = tensor(new[] { -1f, -2f, -3f, -0.5f, -0.5f, -0.5f }, [2, 3]).requires_grad_();
        var delta = tensor(new[] { 0.1f, -0.3f, 5f, 0.2f, 0.2f, 0.2f }, [2, 3]);
        var old = (logp - delta).detach();
        var mask = tensor(new[] { 1f, 1f, 0f, 1f, 1f, 1f }, [2, 3]);
        var advantages = tensor(new[] { 1f, -1f });

        // GSPO: sequence ratios e^(mean) = e^−0.1 = 0.904837 and e^0.2 = 1.221403; clip 0.2 leaves row 0 as it is and
        // row 1's pessimistic term is the unclipped −1.221403: losses −0.904837 and +1.221403, averaged over answers.
        double s0 = Math.Exp(-0.1), s1 = Math.Exp(0.2);
        var gspo = GrpoMath.Loss(GrpoLoss.Gspo, logp, old, advantages, mask, 0.2, 0.2, 8);
        Assert.Equal((-s0 + s1) / 2, gspo.item<float>(), 5);
        gspo.backward();
        // d/d log π of row 0's tokens: −A · s0 · (1 / 2 tokens) / (2 answers); its masked token none.
        var grad = logp.grad!.data<float>().ToArray();
        Assert.Equal(-s0 / 4, grad[0], 5);
        Assert.Equal(-s0 / 4, grad[1], 5);
        Assert.Equal(0, grad[2], 6);
        Assert.Equal(s1 / 3 / 2, grad[3], 5);   // row 1 is unclipped: −A · s1 / 3 tokens / 2 answers

        // CISPO: weights clip(ρ, 0, 1.2) detached — e^0.1 = 1.105171, e^−0.3 = 0.740818, 1.2 ×3 — times −A·log π, over 5 tokens.
        logp.grad!.zero_();
        double w0 = Math.Exp(0.1), w1 = Math.Exp(-0.3);
        var cispo = GrpoMath.Loss(GrpoLoss.Cispo, logp, old, advantages, mask, 1, 0.2, 8);
        Assert.Equal(-(w0 * -1 + w1 * -2 + 1.2 * -1 * -0.5 * 3) / 5, cispo.item<float>(), 5);
        cispo.backward();
        grad = logp.grad!.data<float>().ToArray();
        // Every token keeps a gradient, −w·A / 5 — even row 1's, whose ratio is above the clip (PPO's surrogate drops it).
        double[] expected = [-w0 / 5, -w1 / 5, 0, 1.2 / 5, 1.2 / 5, 1.2 / 5];
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], grad[i], 5);

        // The clips each loss uses by default.
        Assert.Equal((3e-4, 4e-4), (new GrpoConfig { Loss = GrpoLoss.Gspo }.LowerClip, new GrpoConfig { Loss = GrpoLoss.Gspo }.UpperClip));
        Assert.Equal((1.0, 0.28), (new GrpoConfig { Loss = GrpoLoss.Cispo }.LowerClip, new GrpoConfig { Loss = GrpoLoss.Cispo }.UpperClip));
        Assert.Equal((0.2, 0.2), (new GrpoConfig().LowerClip, new GrpoConfig().UpperClip));
    }

    [Fact]
    public void ImportanceWeightsCorrectTheRolloutEnginesGapAsTisAndMisSay()
    {
        using var scope = NewDisposeScope();
        // log π_trainer − log π_sampler: row 0: 0.5, −0.1 (third token masked); row 1: 0, 1.5, −0.4.
        var trainer = tensor(new[] { -1f, -2f, 0f, -0.5f, -0.5f, -0.5f }, [2, 3]);
        var sampler = tensor(new[] { -1.5f, -1.9f, -7f, -0.5f, -2f, -0.1f }, [2, 3]);
        var mask = tensor(new[] { 1f, 1f, 0f, 1f, 1f, 1f }, [2, 3]);
        float[] Weights(ImportanceCorrection correction, bool sequence) =>
            GrpoMath.ImportanceWeights(trainer, sampler, mask, correction, sequence, cap: 2).data<float>().ToArray();
        AssertAll([Math.Exp(0.5), Math.Exp(-0.1), 0, 1, 2, Math.Exp(-0.4)], Weights(ImportanceCorrection.Tis, false));   // e^1.5 truncated at 2
        AssertAll([1, 1, 0, 1, 0, 1], Weights(ImportanceCorrection.Mis, false));                                          // |1.5| > ln 2
        AssertAll([Math.Exp(0.4), Math.Exp(0.4), 0, 2, 2, 2], Weights(ImportanceCorrection.Tis, true));                   // sums 0.4 and 1.1
        AssertAll([1, 1, 0, 0, 0, 0], Weights(ImportanceCorrection.Mis, true));
        var (kl, maxRatio) = GrpoMath.Mismatch(trainer, sampler, mask);
        double K3(double d) => Math.Exp(d) - d - 1;
        Assert.Equal((K3(0.5) + K3(-0.1) + K3(0) + K3(1.5) + K3(-0.4)) / 5, kl, 5);
        Assert.Equal(Math.Exp(1.5), maxRatio, 4);

        // The weights multiply the policy term: all ones change nothing, all twos double it.
        var logp = trainer.clone();
        var advantages = tensor(new[] { 1f, -1f });
        float plain = GrpoMath.Loss(GrpoLoss.Grpo, logp, sampler, advantages, mask, 0.2, 0.2, 8).item<float>();
        Assert.Equal(plain, GrpoMath.Loss(GrpoLoss.Grpo, logp, sampler, advantages, mask, 0.2, 0.2, 8, importanceWeights: ones_like(mask)).item<float>(), 6);
        Assert.Equal(2 * plain, GrpoMath.Loss(GrpoLoss.Grpo, logp, sampler, advantages, mask, 0.2, 0.2, 8, importanceWeights: 2 * ones_like(mask)).item<float>(), 5);
        Assert.Throws<ArgumentOutOfRangeException>(() => new GrpoConfig { IsCap = 1 }.Validate());
    }

    static void AssertAll(double[] expected, float[] got)
    {
        Assert.Equal(expected.Length, got.Length);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], got[i], 4);
    }

    [Fact]
    public void AdaptiveKlMovesTheCoefficientTowardTheTarget()
    {
        var kl = new AdaptiveKl(initial: 0.1, target: 6, horizon: 10000);
        kl.Update(meanKl: 6.6, answers: 100);   // 10% over: β·(1 + 0.1·100/10000)
        Assert.Equal(0.1 * 1.001, kl.Value, 12);
        kl.Update(meanKl: 60, answers: 100);    // far over: the error is clipped at +0.2
        Assert.Equal(0.1 * 1.001 * 1.002, kl.Value, 12);
        kl.Update(meanKl: 0, answers: 5000);    // far under: clipped at −0.2
        Assert.Equal(0.1 * 1.001 * 1.002 * 0.9, kl.Value, 12);
        kl.Update(meanKl: 6, answers: 5000);    // on target: unchanged
        Assert.Equal(0.1 * 1.001 * 1.002 * 0.9, kl.Value, 12);
    }

    [Fact]
    public void RunningMomentsMatchTheBatchStatisticsAndSurviveARoundTrip()
    {
        var moments = new RunningMoments();
        moments.Update([1, 2, 3]);
        moments.Update([4, 5]);
        Assert.Equal(5, moments.Count);
        Assert.Equal(3, moments.Mean, 12);
        Assert.Equal(Math.Sqrt(2.5), moments.Std, 12);
        var back = RunningMoments.Parse(moments.Format());
        Assert.Equal((moments.Count, moments.Mean, moments.Std), (back.Count, back.Mean, back.Std));
        Assert.Throws<InvalidDataException>(() => RunningMoments.Parse("1,2"));
    }
}

/// <summary>Rewards from programs and expected answers, and the tasks a user brings.</summary>
public class RewardProgramTests
{
    static Completion Answer(string prompt, string answer) => new(prompt, answer, [], [], false);

    [Theory]
    [InlineData("42", "42", true)]
    [InlineData(" 42。", "42", true)]
    [InlineData("The answer is 42.", "42", true)]
    [InlineData("答案：42", "42", true)]
    [InlineData("142", "42", false)]
    [InlineData("42 apples", "42", false)]
    [InlineData("李白。", "李白", true)]
    [InlineData("杜甫", "李白", false)]
    public void GivesAnswerAcceptsTheAnswerAloneOrAfterASeparator(string text, string answer, bool expected) =>
        Assert.Equal(expected, Rewards.GivesAnswer(text, answer));

    [Fact]
    public void GradedFormCheckRanksNearMissesAboveNonsense()
    {
        double Score(string answer) => Rewards.FormCloseness([Answer("寫一首詩", answer)])[0];
        double regular = Score("床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。");
        double oneCharacterOff = Score("床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉鄉。");
        double threeLines = Score("床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。\n舉頭望明月，低頭思故鄉。");
        double noClauses = Score("床前明月光疑是地上霜舉頭望明月低頭思故鄉");
        Assert.Equal(1, regular);
        Assert.Equal(0, Score(""));
        Assert.True(oneCharacterOff is > 0.3 and < 0.9, $"{oneCharacterOff}");
        Assert.True(oneCharacterOff > noClauses && threeLines > noClauses && noClauses > 0, $"{oneCharacterOff} {threeLines} {noClauses}");
        Assert.Equal([1.0, 0.0], Rewards.Form([Answer("", "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。"), Answer("", "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉鄉。")]));
    }

    [Fact]
    public void AProgramThatThrowsNamesThePrompt()
    {
        var program = Rewards.FromProgram(c => c.Answer.Length > 3 ? throw new FormatException("cannot parse") : 1);
        var e = Assert.Throws<RewardProgramException>(() => program([Answer("fine", "ok"), Answer("What is 2+2?", "four!")]));
        Assert.Equal("What is 2+2?", e.Prompt);
        Assert.Contains("What is 2+2?", e.Message);
        Assert.Contains("cannot parse", e.Message);
        var nan = Rewards.FromProgram(_ => double.NaN);
        Assert.Contains("NaN", Assert.Throws<RewardProgramException>(() => nan([Answer("p", "a")])).Message);
    }

    [Fact]
    public void ExpectedAnswersScoreAndRefuseAnUnknownPrompt()
    {
        var reward = Rewards.ExpectedAnswers(new Dictionary<string, string> { ["2+3="] = "5", ["7×6="] = "42" });
        Assert.Equal([1.0, 0.0, 1.0], reward([Answer("2+3=", "5"), Answer("7×6=", "41"), Answer("7×6=", "= 42")]));
        Assert.Contains("9-1=", Assert.Throws<RewardProgramException>(() => reward([Answer("9-1=", "8")])).Message);
    }

    [Fact]
    public void TheBuiltInTaskChecksEachKindOfQuestionItsOwnWay()
    {
        var task = RlTasks.BuiltIn();
        var chats = BuiltInDatasets.Build().TrainChats;
        var author = chats.First(c => c[0].Content.EndsWith("的作者是誰？"));
        var poem = chats.First(c => c[0].Content.StartsWith("寫一首詩"));
        Assert.Contains(author[0].Content, task.Prompts);
        Assert.Contains(poem[0].Content, task.Prompts);
        var scores = task.Program([Answer(author[0].Content, author[1].Content), Answer(author[0].Content, "無名氏。"),
            Answer(poem[0].Content, poem[1].Content), Answer(poem[0].Content, "春")]);
        Assert.Equal([1.0, 0.0, 1.0, 0.0], scores);
    }

    [Fact]
    public void ATaskFileIsReadWithErrorsThatNameTheLineAndField()
    {
        using var dir = new TempDirectory();
        string good = dir.File("task.jsonl");
        File.WriteAllText(good, "{\"prompt\":\"2+3=\",\"answer\":\"5\"}\n\n{\"prompt\":\"4+4=\",\"answer\":\"8\"}\n");
        var task = RlTasks.FromFile(good);
        Assert.Equal(["2+3=", "4+4="], task.Prompts);
        Assert.Equal([1.0, 0.0], task.Program([Answer("2+3=", "5"), Answer("4+4=", "9")]));

        string Error(string text)
        {
            string path = dir.File($"bad{text.GetHashCode():x}.jsonl");
            File.WriteAllText(path, text);
            return Assert.Throws<InvalidDataException>(() => RlTasks.FromFile(path)).Message;
        }
        Assert.Contains(":2: expected a string field \"answer\"", Error("{\"prompt\":\"a\",\"answer\":\"1\"}\n{\"prompt\":\"b\"}\n"));
        Assert.Contains(":1: invalid JSON", Error("{prompt: a}\n"));
        Assert.Contains(":2: the prompt appears earlier with another answer", Error("{\"prompt\":\"a\",\"answer\":\"1\"}\n{\"prompt\":\"a\",\"answer\":\"2\"}\n"));
        Assert.Contains(":1: \"prompt\" is empty", Error("{\"prompt\":\"\",\"answer\":\"1\"}\n"));
        Assert.Contains("no prompts", Error("\n"));
        Assert.Throws<FileNotFoundException>(() => RlTasks.FromFile(dir.File("missing.jsonl")));
    }
}

/// <summary>RL runs on a tiny model: GRPO learns, resumes exactly, survives a failing reward; feedback collection
/// resumes after a crash; the best policy is kept.</summary>
public class RlRunTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    static readonly string[] Prompts = ["寫一首詩", "寫一個字", "春曉", "靜夜思"];

    /// <summary>A gold program the reward correlates with: 1 when most of the answer's tokens are from the lower half.</summary>
    RewardFunction MostlyLow() => Rewards.FromProgram(c =>
        c.AnswerTokens.Count(t => t < fixture.Tokenizer.VocabSize / 2) * 2 > c.AnswerTokens.Length ? 1 : 0);

    static GrpoConfig TinyGrpo => new() { PromptsPerRollout = 4, GroupSize = 4, MiniBatch = 8, Rollout = new() { MaxNewTokens = 8 }, MaskTruncated = false };

    [Fact]
    public void GrpoRaisesTheRewardAndTheGoldScoreOfATinyModel()
    {
        using var dir = new TempDirectory();
        fixture.SaveInitialRun(dir.File("sft"), context: 32);
        var training = GrpoRun.Defaults with { Steps = 60, BatchSize = 8, LearningRate = 1e-2, CheckpointEvery = 1000 };
        var report = GrpoRun.Execute(dir.File("sft"), Prompts, PpoTests.LowHalfShare(fixture.Tokenizer), TinyGrpo, training, new RunOptions(dir.File("grpo")), gold: MostlyLow());

        var rewards = report.Rollouts.Select(r => r.MeanReward).ToList();
        Assert.Equal(30, rewards.Count); // 16 answers per rollout, 2 minibatches of 8
        Assert.True(rewards.TakeLast(5).Average() > rewards.Take(5).Average() + 0.2, $"reward did not rise: {string.Join(", ", rewards.Select(r => r.ToString("F2")))}");
        var gold = report.Rollouts.Select(r => r.MeanGold!.Value).ToList();
        Assert.True(gold.TakeLast(5).Average() > gold.Take(5).Average() + 0.2, $"gold did not rise: {string.Join(", ", gold.Select(r => r.ToString("F2")))}");
        Assert.Equal(30, File.ReadLines(Path.Combine(dir.File("grpo"), GrpoRun.RolloutFile)).Count());
        Assert.True(File.Exists(Checkpoint.WeightsPath(Path.Combine(dir.File("grpo"), RlRun.PolicyFolder))));
    }

    [Fact]
    public void DynamicSamplingReplacesGroupsThatAllScoredTheSame()
    {
        using var dir = new TempDirectory();
        fixture.SaveInitialRun(dir.File("sft"), context: 32);
        var (policy, _) = Checkpoint.LoadModel(dir.File("sft"));
        using var _p = policy;
        // One prompt always scores 1 (its groups teach nothing); the other scores its first token's parity.
        RewardFunction reward = Rewards.FromProgram(c => c.Prompt == "春曉" ? 1 : c.AnswerTokens.Length > 0 ? c.AnswerTokens[0] % 2 : 0);
        string[] prompts = ["春曉", "靜夜思"];
        GrpoRolloutStats Rollout(GrpoConfig config)
        {
            using var experience = new GrpoExperience(policy, null, reward, fixture.Tokenizer, prompts, config, seed: 3);
            var batch = experience.Next();
            Assert.Equal(config.MiniBatch, batch.Advantages.shape[0]);   // the same shapes either way: steps per rollout unchanged
            return experience.Rollouts.Single();
        }
        var plain = Rollout(TinyGrpo);
        Assert.Equal(4, plain.SampledGroups);
        // The rollout engine (the CPU engine in F32) and the trainer (libtorch) agree to rounding.
        Assert.True(plain.MismatchKl is >= 0 and < 1e-6, $"KL {plain.MismatchKl}");
        Assert.True(plain.MismatchMaxRatio is >= 1 and < 1.01, $"max ratio {plain.MismatchMaxRatio}");
        Assert.True(plain.TeachingShare < 1, "the seed's first rollout should hold a group of the uniform prompt");
        var dynamic = Rollout(TinyGrpo with { DynamicSampling = true, SamplingRounds = 8 });
        Assert.Equal(1, dynamic.TeachingShare);
        Assert.True(dynamic.SampledGroups > 4, $"{dynamic.SampledGroups} groups sampled");
        Assert.Equal(plain.MeanReward, dynamic.MeanReward);   // the first round is what the policy does, and is the same
        // Out of rounds: what does not teach tops the rollout up.
        var capped = Rollout(TinyGrpo with { DynamicSampling = true, SamplingRounds = 1 });
        Assert.Equal(plain.TeachingShare, capped.TeachingShare);
    }

    [Fact]
    public void OnPolicyDistillationBringsTheStudentsAnswersTowardTheTeachers()
    {
        using var dir = new TempDirectory();
        var config = fixture.SaveInitialRun(dir.File("student"), context: 32);
        // A teacher of the same tokenizer with preferences of its own: the same shape, every matrix moved by noise.
        manual_seed(7);
        using (var teacher = new GptSharp.Models.Gpt(config))
        {
            using (no_grad())
                foreach (var (name, p) in teacher.named_parameters())
                {
                    if (p.dim() > 1) p.add_(randn_like(p) * 0.1);   // the student's output layer starts at zero: every logit equal
                }
            Checkpoint.Save(dir.File("teacher"), teacher, null, new TrainingState(0, "0:0", "", fixture.Directory));
        }
        var distill = new DistillConfig { PromptsPerRollout = 8, MiniBatch = 8, Rollout = new() { MaxNewTokens = 8, Temperature = 1 } };
        var training = DistillRun.Defaults with { Steps = 60, BatchSize = 8, LearningRate = 1e-2, CheckpointEvery = 1000 };
        double Agreement(string studentRun)
        {
            var (student, _) = Checkpoint.LoadModel(studentRun);
            var (teacher, _) = Checkpoint.LoadModel(dir.File("teacher"));
            using (student)
            using (teacher)
            {
                var greedy = new Inference.SamplingOptions { Temperature = 0, MaxNewTokens = 8, StopTokens = [] };
                var prompts = Rollout.RenderPrompts(fixture.Tokenizer, Prompts);
                var mine = new Inference.TokenDecoder(student).Generate([.. prompts], greedy);
                var theirs = new Inference.TokenDecoder(teacher).Generate([.. prompts], greedy);
                return mine.Zip(theirs, (a, b) => a.Tokens.Zip(b.Tokens).TakeWhile(p => p.First == p.Second).Count()).Average();
            }
        }
        double before = Agreement(dir.File("student"));
        var report = DistillRun.Execute(dir.File("student"), dir.File("teacher"), Prompts, distill, training, new RunOptions(dir.File("distill")));
        var kl = report.Rollouts.Select(r => r.ReverseKl).ToList();
        Assert.True(kl.TakeLast(5).Average() < 0.7 * kl.Take(5).Average(), $"KL(student ‖ teacher) did not fall: {string.Join(", ", kl.Select(k => k.ToString("F3")))}");
        double after = Agreement(Path.Combine(dir.File("distill"), RlRun.PolicyFolder));
        Assert.True(after > before + 1, $"greedy answers agree with the teacher's for {before:F2} tokens before, {after:F2} after");
        Assert.Equal(60, File.ReadLines(Path.Combine(dir.File("distill"), DistillRun.RolloutFile)).Count());

        // A teacher of another tokenizer is refused, naming both.
        using (var other = new GptSharp.Models.Gpt(GptSharp.Models.GptConfig.Gpt2(Tokenization.GptTokenizer.Load("gpt2").VocabSize, 32, layers: 1, heads: 1, width: 16)))
            Checkpoint.Save(dir.File("gpt2-teacher"), other, null, new TrainingState(0, "0:0", "", "gpt2"));
        var error = Assert.Throws<ArgumentException>(() => DistillRun.Execute(dir.File("student"), dir.File("gpt2-teacher"), Prompts, distill, training, new RunOptions(dir.File("refused"))));
        Assert.Contains("gpt2", error.Message);
        Assert.Contains(fixture.Tokenizer.Spec.Name, error.Message);
    }

    [Fact]
    public void TheThreeDivergencesMatchTheirDefinitions()
    {
        using var scope = NewDisposeScope();
        // One position, three tokens: student (0.7, 0.2, 0.1), teacher (0.2, 0.5, 0.3).
        double[] s = [0.7, 0.2, 0.1], t = [0.2, 0.5, 0.3];
        var student = tensor(s.Select(p => (float)Math.Log(p)).ToArray(), [1, 1, 3]);
        var teacher = tensor(t.Select(p => (float)Math.Log(p)).ToArray(), [1, 1, 3]);
        double Kl(double[] p, double[] q) => p.Zip(q, (a, b) => a * Math.Log(a / b)).Sum();
        double[] m = [.. s.Zip(t, (a, b) => (a + b) / 2)];
        Assert.Equal(Kl(s, t), DistillMath.PerToken(Divergence.ReverseKl, student, teacher).item<float>(), 5);
        Assert.Equal(Kl(t, s), DistillMath.PerToken(Divergence.ForwardKl, student, teacher).item<float>(), 5);
        Assert.Equal(0.5 * Kl(t, m) + 0.5 * Kl(s, m), DistillMath.PerToken(Divergence.Jsd, student, teacher).item<float>(), 5);
        Assert.Equal(0, DistillMath.PerToken(Divergence.ReverseKl, student, student).item<float>(), 6);
    }

    [Fact]
    public void GrpoResumesExactlyAndSurvivesARewardProgramThatThrows()
    {
        using var dir = new TempDirectory();
        fixture.SaveInitialRun(dir.File("sft"), context: 32);
        var config = TinyGrpo with { Loss = GrpoLoss.Dapo, Beta = 0.05, Epochs = 2 };
        var training = GrpoRun.Defaults with { Steps = 16, BatchSize = 8, LearningRate = 1e-3, CheckpointEvery = 4 }; // 4 steps per rollout
        var reward = PpoTests.LowHalfShare(fixture.Tokenizer);

        var straight = new List<double>();
        GrpoRun.Execute(dir.File("sft"), Prompts, reward, config, training, new RunOptions(dir.File("straight")) { OnStep = m => straight.Add(m.Loss) });

        // The third rollout's reward fails: the step fails naming the prompt; the run resumes from its checkpoint.
        int calls = 0;
        RewardFunction flaky = completions => ++calls == 3
            ? Rewards.FromProgram(c => throw new InvalidOperationException("the checker crashed"))(completions)
            : reward(completions);
        var halves = new List<double>();
        var e = Assert.ThrowsAny<Exception>(() => GrpoRun.Execute(dir.File("sft"), Prompts, flaky, config, training, new RunOptions(dir.File("halves")) { OnStep = m => halves.Add(m.Loss) }));
        var failure = e as RewardProgramException ?? e.InnerException as RewardProgramException;
        Assert.NotNull(failure);
        Assert.Contains(failure.Prompt, Prompts);
        Assert.Equal(8, Checkpoint.ReadState(dir.File("halves")).Step);
        Assert.Equal("2", Checkpoint.ReadState(dir.File("halves")).DataPosition);
        GrpoRun.Execute(dir.File("sft"), Prompts, reward, config, training, new RunOptions(dir.File("halves")) { Resume = true, OnStep = m => halves.Add(m.Loss) });
        Assert.Equal(straight, halves);
    }

    [Fact]
    public void AnswersCutByTheLengthLimitAreScoredButMaskedFromLearning()
    {
        var tokenizer = fixture.Tokenizer;
        var completions = new List<Completion>
        {
            new("a", "x", [1, 2, 3], [7, 8, tokenizer.EndId], Truncated: false),
            new("b", "y", [1, 2], [9, 9, 9, 9], Truncated: true),
        };
        using var masked = Rollout.Layout(completions, tokenizer.PadId, CPU, keepTruncated: false);
        Assert.Equal([1f, 1f, 1f, 0f, 0f, 0f, 0f, 0f], masked.Mask.data<float>().ToArray());
        Assert.Equal([2L, 3, 4, 0, 1, 2, 3, 4], masked.Positions.data<long>().ToArray()); // the logit before each answer token; row 0's 4th slot is padding
        using var kept = Rollout.Layout(completions, tokenizer.PadId, CPU, keepTruncated: true);
        Assert.Equal([1f, 1f, 1f, 0f, 1f, 1f, 1f, 1f], kept.Mask.data<float>().ToArray());
    }

    [Fact]
    public void BestPolicyKeepsTheLatestWithinToleranceOfTheBestAndRemembersIt()
    {
        using var dir = new TempDirectory();
        var config = fixture.SaveInitialRun(dir.File("sft"), context: 16);
        var (model, _) = Checkpoint.LoadModel(dir.File("sft"));
        using var _m = model;
        var scores = new Queue<double>([0.50, 0.70, 0.68, 0.50]);
        var keeper = new BestPolicy(dir.File("policy"), fixture.Directory, _ => scores.Dequeue(), tolerance: 0.04);
        foreach (int step in new[] { 10, 20, 30, 40 }) keeper.Consider(step, model);
        Assert.Equal(new GoldCheck(30, 0.68), keeper.Kept);
        Assert.Equal(30, Checkpoint.ReadState(dir.File("policy")).Step);
        var reread = new BestPolicy(dir.File("policy"), fixture.Directory, _ => 0);
        Assert.Equal(keeper.Kept, reread.Kept);
        Assert.Equal([10, 20, 30, 40], reread.History.Select(h => h.Step));
    }

    [Fact]
    public void FeedbackCollectionResumesAfterACrashWithTheSameComparisons()
    {
        using var dir = new TempDirectory();
        fixture.SaveInitialRun(dir.File("sft"), context: 32);
        var (policy, _) = Checkpoint.LoadModel(dir.File("sft"));
        using var _p = policy;
        var tokenizer = fixture.Tokenizer;
        var labeler = Rewards.FromProgram(c => c.Answer.Length); // longer is better: few ties, easy to check
        var options = new FeedbackOptions(AnswersPerPrompt: 3, Temperature: 1.0, MaxNewTokens: 6, PromptsPerBatch: 2, Seed: 5);
        string[] prompts = ["寫一首詩", "寫一個字", "春曉", "靜夜思", "登高", "江雪"];

        string straight = dir.File("straight.jsonl");
        var report = Feedback.Collect(policy, tokenizer, prompts, labeler, options, straight, "sft");
        Assert.Equal(6, report.Prompts);
        var pairs = ChatData.ReadPreferences(straight).ToList();
        Assert.Equal(report.Pairs, pairs.Count);
        Assert.InRange(pairs.Count, 6, 18); // at most K(K−1)/2 = 3 per prompt
        foreach (var group in pairs.GroupBy(p => p.Group))
        {
            Assert.InRange(group.Count(), 1, 3);
            Assert.Single(group.Select(p => p.Prompt[0].Content).Distinct());
        }
        Assert.All(pairs, p => Assert.True(p.Chosen.Length > p.Rejected.Length));
        var groups = PairBatchSource<int>.Groups(pairs)!;
        Assert.Equal(pairs.Select(p => p.Group).Distinct().Count(), groups.Count);

        // A crash after four prompts, mid-append of the next batch: one whole line of prompt 4, then half a line.
        string crashed = dir.File("crashed.jsonl");
        Feedback.Collect(policy, tokenizer, prompts[..4], labeler, options, crashed, "sft");
        string nextLine = File.ReadLines(straight).First(l => l.Contains("\"prompt-4\""));
        File.AppendAllText(crashed, nextLine + "\n" + nextLine[..(nextLine.Length / 2)]);
        var resumed = Feedback.Collect(policy, tokenizer, prompts, labeler, options, crashed, "sft");
        Assert.True(resumed.Resumed);
        Assert.Equal(File.ReadAllText(straight), File.ReadAllText(crashed));
        Assert.Equal(report.Pairs, resumed.Pairs);

        Assert.Contains("3 answers per prompt", Assert.Throws<InvalidDataException>(() =>
            Feedback.Collect(policy, tokenizer, prompts, labeler, options with { AnswersPerPrompt = 4 }, crashed, "sft")).Message);
        File.Copy(straight, dir.File("orphan.jsonl"));
        Assert.Throws<IOException>(() => Feedback.Collect(policy, tokenizer, prompts, labeler, options, dir.File("orphan.jsonl"), "sft"));
    }

    [Fact]
    public void BestOfNKeepsTheAnswerTheChooserScoresHighest()
    {
        using var dir = new TempDirectory();
        fixture.SaveInitialRun(dir.File("sft"), context: 48);
        var (policy, _) = Checkpoint.LoadModel(dir.File("sft"));
        using var _p = policy;
        var tokenizer = fixture.Tokenizer;
        var longest = Rewards.FromProgram(c => c.Answer.Length);
        string[] prompt = ["寫一首詩，題為《春曉》。"];
        // Best-of-3 samples its candidates with seeds 1, 2, 3: the plain score with those seeds gives each one.
        var candidates = Enumerable.Range(1, 3).Select(seed => FormScore.Measure(policy, tokenizer, prompt, 0.7, seed).Examples[0].Poem).ToList();
        var best = FormScore.Measure(policy, tokenizer, prompt, 0.7, 1, bestOf: 3, chooser: longest);
        Assert.Equal(candidates.MaxBy(c => c.Length), best.Examples[0].Poem);
        Assert.Equal(1, best.Distinct);
        Assert.Throws<ArgumentException>(() => FormScore.Measure(policy, tokenizer, prompt, 0.7, 1, bestOf: 2, chooser: null));
    }

    [Fact]
    public void HeldOutComparisonsAreWholeTitles()
    {
        var pairs = Enumerable.Range(0, 300).Select(i => new PreferencePair([new ChatMessage("user", $"p{i / 3}")], $"a{i}", $"b{i}", $"g{i / 3}")).ToList();
        var (train, heldOut) = ChatData.SplitByGroup(pairs, 1337, "reward");
        Assert.Equal(300, train.Count + heldOut.Count);
        Assert.InRange(heldOut.Count, 3, 30);
        Assert.Empty(train.Select(p => p.Group).Intersect(heldOut.Select(p => p.Group)));
        Assert.All(heldOut.GroupBy(p => p.Group), g => Assert.Equal(3, g.Count()));
        var (_, few) = ChatData.SplitByGroup(pairs.Take(6).ToList(), 1337, "reward"); // two titles: one is still held out
        Assert.Equal(3, few.Count);
    }

    [Fact]
    public void PairsOfOneGroupTrainInOneBatchAndAGroupHoldsOnePrompt()
    {
        using var dir = new TempDirectory();
        string path = dir.File("pairs.jsonl");
        string Line(string prompt, string chosen, string group) =>
            $"{{\"prompt\":[{{\"role\":\"user\",\"content\":\"{prompt}\"}}],\"chosen\":\"{chosen}\",\"rejected\":\"{chosen}x\",\"group\":\"{group}\"}}\n";
        File.WriteAllText(path, Line("p1", "a", "g1") + Line("p1", "b", "g1") + Line("p1", "c", "g1") + Line("p2", "d", "g2")
            + Line("p3", "e", "g3") + Line("p3", "f", "g3") + "{\"prompt\":[{\"role\":\"user\",\"content\":\"p4\"}],\"chosen\":\"g\",\"rejected\":\"h\"}\n");
        var pairs = ChatData.ReadPreferences(path).ToList();
        var groups = PairBatchSource<int>.Groups(pairs)!;
        Assert.Equal([[0, 1, 2], [3], [4, 5], [6]], groups.Select(g => g.ToList()));

        var chats = pairs.Select((p, i) => (new RenderedChat([i], []), new RenderedChat([i], []))).ToList();
        var source = new PairBatchSource<List<int>>(chats, batchSize: 2, seed: 3, batch => [.. batch.Select(b => b.Item1.Tokens[0])], groups: groups);
        for (int n = 0; n < 6; n++)
        {
            var batch = source.Next();
            var whole = groups.Where(g => g.Any(batch.Contains)).ToList();
            Assert.Equal(2, whole.Count);
            Assert.Equal(whole.SelectMany(g => g).Order(), batch.Order());
        }

        File.AppendAllText(path, Line("p9", "z", "g1"));
        Assert.Contains(":8: group 'g1' holds the answers to the prompt of line 1", Assert.Throws<InvalidDataException>(() => ChatData.ReadPreferences(path).ToList()).Message);
    }
}
