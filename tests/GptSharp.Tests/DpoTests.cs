using GptSharp.Tokenization;
using GptSharp.Alignment;
using GptSharp.Models;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

public class DpoTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    [Fact]
    public void LossIsLog2WhenThePolicyEqualsTheReferenceAndLogProbabilitiesSumOnlyTargets()
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(0);
        var config = GptConfig.Gpt2(50, context: 8, layers: 1, heads: 2, width: 16);
        using var model = new Gpt(config);
        model.eval();
        var batch = new GptSharp.Data.TokenBatch(
            [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 9, 9, 9, 9], [-1, -1, 4, 5, -1, -1, -1, -1, -1, -1, 4, 9, 9, -1, -1, -1], 2, 8, default);
        var (loss, margins) = DpoRun.Loss(model, model, new DpoBatch(batch, [0], [1]), beta: 0.1, CPU);
        Assert.Equal(Math.Log(2), loss.item<float>(), 5);
        Assert.Equal(0f, margins[0].item<float>(), 6);

        var logp = DpoRun.SequenceLogProbabilities(model, batch, CPU);
        using var noGrad = no_grad();
        var all = model.forward(tensor(batch.Inputs, [2, 8])).log_softmax(-1);
        double expected = all[0, 2, 4].item<float>() + all[0, 3, 5].item<float>();
        Assert.Equal(expected, logp[0].item<float>(), 4);
    }

    [Fact]
    public void SharedAnswersAreScoredOnceWithTheLossOfEveryPairApart()
    {
        using var scope = NewDisposeScope();
        RenderedChat Chat(params int[] tokens) => new(tokens, [false, .. tokens.Skip(1).Select(_ => true)]);
        var (a, b, c) = (Chat(1, 2, 3), Chat(1, 2, 4, 5), Chat(1, 2, 6));
        (RenderedChat, RenderedChat)[] pairs = [(a, b), (a, c), (b, c)];
        var shared = DpoBatch.Pack(pairs, sequenceLength: 8, padId: 0);
        Assert.Equal(3, shared.Rows.BatchSize);
        Assert.Equal(new long[] { 0, 0, 1 }, shared.ChosenRows);
        Assert.Equal(new long[] { 1, 2, 2 }, shared.RejectedRows);

        var config = GptConfig.Gpt2(16, context: 8, layers: 1, heads: 2, width: 16);
        torch.manual_seed(1);
        using var policy = new Gpt(config);
        torch.manual_seed(2);
        using var reference = new Gpt(config);
        policy.eval();
        reference.eval();
        var (together, margins) = DpoRun.Loss(policy, reference, shared, beta: 0.5, CPU);
        var apart = pairs.Select(p => DpoRun.Loss(policy, reference, DpoBatch.Pack([p], 8, 0), beta: 0.5, CPU)).ToList();
        Assert.Equal(apart.Average(x => (double)x.Loss.item<float>()), together.item<float>(), 5);
        for (int i = 0; i < pairs.Length; i++) Assert.Equal(apart[i].Margins[0].item<float>(), margins[i].item<float>(), 5);
        Assert.NotEqual(0f, margins[0].item<float>());   // two different models: the test compares real margins
    }

    [Fact]
    public void DpoRaisesTheChosenAnswerAboveTheRejectedOne()
    {
        using var dir = new TempDirectory();
        var tokenizer = fixture.Tokenizer;
        var config = fixture.SaveInitialRun(dir.File("sft"), context: 32);
        var facts = new[] { ("靜夜思", "李白", "杜甫"), ("春曉", "孟浩然", "王維") };
        PreferencePair Pair((string Title, string Right, string Wrong) f) =>
            new([new ChatMessage("user", $"《{f.Title}》的作者是誰？")], $"{f.Right}。", $"{f.Wrong}。");
        var train = Enumerable.Range(0, 16).Select(i => Pair(facts[i % 2])).ToList();
        var training = new TrainingConfig { Steps = 30, BatchSize = 4, LearningRate = 3e-3, WarmupSteps = 2, EvalEvery = 10, CheckpointEvery = 100, WeightDecay = 0 };
        var report = DpoRun.Execute(dir.File("sft"), train, facts.Select(Pair).ToList(), training, new RunOptions(dir.File("dpo")) { Resume = false }, beta: 0.5);
        Assert.Equal(1.0, report.HeldOutPreferenceAccuracy);
        Assert.True(report.HeldOutLoss < 0.3, $"held-out DPO loss {report.HeldOutLoss} (log 2 = 0.693 at the start)");
    }
}
