using GptSharp.Runs;
using GptSharp.Tokenization;
using GptSharp.Alignment;
using GptSharp.Models;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

public class PpoTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    [Fact]
    public void MeanRewardRisesOverATinyPpoRun()
    {
        using var dir = new TempDirectory();
        var tokenizer = fixture.Tokenizer;
        torch.manual_seed(0);
        var config = GptConfig.Gpt2(tokenizer.VocabSize, context: 32, layers: 1, heads: 2, width: 32);
        using var actor = new Gpt(config);
        using var reference = new Gpt(config);
        Checkpoint.LoadWeights(reference, SaveAndPath(dir, actor));
        using var critic = new RewardModel(config);
        using var model = new ActorCritic(actor, critic);
        var score = LowHalfShare(tokenizer);

        var ppo = new PpoConfig { RolloutPrompts = 16, Epochs = 2, MiniBatch = 8, Rollout = new() { MaxNewTokens = 8, Temperature = 0.7 }, KlCoefficient = 0.01 };
        using var experience = new PpoExperience(model, reference, score, tokenizer, ["寫一個字"], ppo, CPU, seed: 3);
        var training = new TrainingConfig { Steps = 160, BatchSize = 8, LearningRate = 1e-2, WarmupSteps = 2, WeightDecay = 0, EvalEvery = 1000, CheckpointEvery = 1000 };
        var trainer = new Trainer<PpoBatch>(model, config, training, dir.File("ppo"), fixture.Directory, PpoExperience.Objective(model, ppo), experience);
        trainer.Run();

        var scores = experience.Rollouts.Select(r => r.MeanScore).ToList();
        Assert.Equal(40, scores.Count); // 160 steps, 4 minibatches per rollout
        Assert.True(scores.TakeLast(5).Average() > scores.Take(5).Average() + 0.2,
            $"mean reward did not rise: {string.Join(", ", scores.Select(s => s.ToString("F2")))}");
        Assert.All(experience.Rollouts, r => Assert.True(r.MeanResponseLength is > 0 and <= 8));
    }

    [Fact]
    public void PpoRunResumesExactlyAtARolloutBoundary()
    {
        using var dir = new TempDirectory();
        var tokenizer = fixture.Tokenizer;
        var config = fixture.SaveInitialRun(dir.File("sft"), context: 32);
        torch.manual_seed(1);
        using (var rewardModel = new RewardModel(config))
            Checkpoint.Save(dir.File("reward"), rewardModel, config, null, new TrainingState(0, "0:0", "", fixture.Directory));
        var ppo = new PpoConfig { RolloutPrompts = 8, Epochs = 2, MiniBatch = 4, Rollout = new() { MaxNewTokens = 6, Temperature = 0.7 } };
        var training = new TrainingConfig { Steps = 16, BatchSize = 4, LearningRate = 1e-3, WarmupSteps = 0, MinLrRatio = 1, WeightDecay = 0, EvalEvery = 1000, CheckpointEvery = 1000 };
        string[] prompts = ["寫一首詩", "寫一個字", "春曉"];

        var straight = new List<double>();
        var whole = PpoRun.Execute(dir.File("sft"), dir.File("reward"), prompts, ppo, training, new RunOptions(dir.File("straight")) { OnStep = m => straight.Add(m.Loss) }, program: LowHalfShare(tokenizer));
        var halves = new List<double>();
        var first = PpoRun.Execute(dir.File("sft"), dir.File("reward"), prompts, ppo, training, new RunOptions(dir.File("halves")) { OnStep = m => halves.Add(m.Loss), UntilStep = 8 }, program: LowHalfShare(tokenizer));
        var saved = PpoExperience.ParsePosition(Checkpoint.ReadState(dir.File("halves")).DataPosition);
        Assert.Equal(2, saved.Iteration); // 4 steps per rollout: the next is the third
        Assert.Equal(16, saved.Moments!.Count); // the reward normaliser has seen both rollouts' 8 scores
        var second = PpoRun.Execute(dir.File("sft"), dir.File("reward"), prompts, ppo, training, new RunOptions(dir.File("halves")) { Resume = true, OnStep = m => halves.Add(m.Loss) }, program: LowHalfShare(tokenizer));
        Assert.Equal(straight, halves);
        Assert.Equal(whole.Rollouts.Select(r => r.MeanScore), first.Rollouts.Concat(second.Rollouts).Select(r => r.MeanScore));
    }

    [Fact]
    public void PtxAddsTheWeightedPretrainingLoss()
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(4);
        var config = GptConfig.Gpt2(64, context: 16, layers: 1, heads: 2, width: 16);
        using var model = new ActorCritic(new Gpt(config), new RewardModel(config));
        var sequences = randint(0, 64, [2, 10], dtype: ScalarType.Int64);
        var positions = tensor(new long[] { 4, 5, 6, 4, 5, 6 }, [2, 3]);
        var tokens = sequences.gather(1, positions + 1);
        var mask = ones(2, 3);
        Tensor oldLogp;
        using (no_grad()) oldLogp = PpoExperience.ResponseLogProbabilities(model.Actor, sequences, positions, tokens, 0.7);
        var inputs = randint(0, 64, [2, 8], dtype: ScalarType.Int64);
        var targets = randint(0, 64, [2, 8], dtype: ScalarType.Int64);
        var batch = new PpoBatch(sequences, positions, tokens, mask, oldLogp, zeros(2, 3), ones(2, 3), zeros(2, 3), inputs, targets);
        model.eval();
        double without = PpoExperience.Objective(model, new PpoConfig())(batch).Loss.item<float>();
        double with = PpoExperience.Objective(model, new PpoConfig { PtxCoefficient = 0.5 })(batch).Loss.item<float>();
        double lm = Gpt.Loss(model.Actor.forward(inputs), targets).item<float>();
        Assert.Equal(without + 0.5 * lm, with, 4);
    }

    /// <summary>A program reward: the share of an answer's tokens from the lower half of the vocabulary (about 0.5 at random).</summary>
    internal static RewardFunction LowHalfShare(GptTokenizer tokenizer) => Rewards.FromProgram(c =>
        c.AnswerTokens.Length == 0 ? 0 : c.AnswerTokens.Count(t => t < tokenizer.VocabSize / 2) / (double)c.AnswerTokens.Length);

    static string SaveAndPath(TempDirectory dir, Gpt model)
    {
        Checkpoint.Save(dir.File("init"), model, null, new TrainingState(0, "0:0", "", ""));
        return Checkpoint.WeightsPath(dir.File("init"));
    }
}
