using GptSharp.Tokenization;
using GptSharp.Alignment;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

public class RewardTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    [Fact]
    public void PairwiseLossMatchesBradleyTerryByHand()
    {
        using var scope = NewDisposeScope();
        var chosen = tensor(new float[] { 2f, 0f, -1f });
        var rejected = tensor(new float[] { 0f, 0f, 1f });
        double expected = new[] { 2.0, 0.0, -2.0 }.Select(d => -Math.Log(1 / (1 + Math.Exp(-d)))).Average();
        Assert.Equal(expected, RewardModel.PairwiseLoss(chosen, rejected).item<float>(), 5);
    }

    [Fact]
    public void PairsPackChosenRowsFirstWithTheirLastTokens()
    {
        var a = new RenderedChat([1, 2, 3], [false, true, true]);
        var b = new RenderedChat([1, 2, 3, 4, 5, 6], [false, true, true, true, true, true]);
        var batch = PairBatchSource.Pack([(a, b)], sequenceLength: 4, padId: 0);
        Assert.Equal(new long[] { 1, 2, 3, 0, 1, 2, 3, 4 }, batch.Tokens);
        Assert.Equal(new long[] { 2, 3 }, batch.LastIndex); // the rejected row is cut to T tokens
        var shortBatch = PairBatchSource.Pack([(a, a)], sequenceLength: 128, padId: 0);
        Assert.Equal(3, shortBatch.SequenceLength); // padded to the longest row, not the context
        Assert.Equal(new long[] { 1, 2, 3 }, shortBatch.Tokens);   // the same conversation on both sides is one row
        Assert.Equal(new long[] { 0 }, shortBatch.ChosenRows);
        Assert.Equal(new long[] { 0 }, shortBatch.RejectedRows);
    }

    [Fact]
    public void OnePromptsComparisonsScoreEachAnswerOnceWithTheLossOfScoringEveryPairApart()
    {
        using var scope = NewDisposeScope();
        RenderedChat Chat(params int[] tokens) => new(tokens, [.. tokens.Select(_ => true)]);
        var (a, b, c) = (Chat(1, 2, 3), Chat(1, 2, 4, 5), Chat(1, 2, 6));
        (RenderedChat, RenderedChat)[] pairs = [(a, b), (a, c), (b, c)];   // K = 3 answers ranked a > b > c
        var shared = PairBatchSource.Pack(pairs, sequenceLength: 8, padId: 0);
        Assert.Equal(3, shared.Rows);
        Assert.Equal(new long[] { 0, 0, 1 }, shared.ChosenRows);
        Assert.Equal(new long[] { 1, 2, 2 }, shared.RejectedRows);

        torch.manual_seed(0);
        using var model = new RewardModel(Models.GptConfig.Gpt2(16, context: 8, layers: 1, heads: 2, width: 16));
        model.eval();
        var objective = RewardRun.Objective(model, CPU);
        double together = objective(shared).Loss.item<float>();
        double apart = pairs.Select(p => (double)objective(PairBatchSource.Pack([p], 8, 0)).Loss.item<float>()).Average();
        Assert.Equal(apart, together, 5);
    }

    [Fact]
    public void RewardModelLearnsToPreferTheRightAuthor()
    {
        using var dir = new TempDirectory();
        var tokenizer = fixture.Tokenizer;
        var config = fixture.SaveInitialRun(dir.File("base"), context: 32);
        var facts = new[] { ("靜夜思", "李白", "杜甫"), ("春曉", "孟浩然", "王維"), ("登鸛雀樓", "王之渙", "李白"), ("相思", "王維", "孟浩然") };
        PreferencePair Pair((string Title, string Right, string Wrong) f) =>
            new([new ChatMessage("user", $"《{f.Title}》的作者是誰？")], $"{f.Right}。", $"{f.Wrong}。");
        var train = Enumerable.Range(0, 32).Select(i => Pair(facts[i % 4])).ToList();
        var heldOut = facts.Select(Pair).ToList();
        var training = new TrainingConfig { Steps = 40, BatchSize = 8, LearningRate = 3e-3, WarmupSteps = 2, EvalEvery = 20, CheckpointEvery = 100, WeightDecay = 0 };
        var report = RewardRun.Execute(dir.File("base"), train, heldOut, training, new RunOptions(dir.File("rm")) { Resume = false });
        Assert.Equal(1.0, report.HeldOutAccuracy);
        Assert.True(report.HeldOutLoss < 0.3, $"held-out loss {report.HeldOutLoss}");
        using var loaded = RewardModel.Load(dir.File("rm"));
        Assert.Equal(config, loaded.Config);
    }
}
