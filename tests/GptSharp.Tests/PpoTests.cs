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
        int promptLength = new ChatTemplate(tokenizer).RenderPrompt([new ChatMessage("user", "寫一個字")]).Length;
        // A program as the reward: the share of response tokens from the lower half of the vocabulary (about 0.5 at random).
        Tensor Score(Tensor sequences, Tensor last)
        {
            var position = arange(sequences.shape[1]).unsqueeze(0);
            var inResponse = (position >= promptLength) & (position <= last.unsqueeze(1));
            var low = (sequences < tokenizer.VocabSize / 2) & inResponse;
            return low.sum(1).to(ScalarType.Float32) / inResponse.sum(1).clamp_min(1).to(ScalarType.Float32);
        }

        var ppo = new PpoConfig { RolloutPrompts = 16, Epochs = 2, MiniBatch = 8, MaxNewTokens = 8, KlCoefficient = 0.01 };
        using var experience = new PpoExperience(model, reference, Score, tokenizer, ["寫一個字"], ppo, CPU, seed: 3);
        var training = new TrainingConfig { Steps = 160, BatchSize = 8, LearningRate = 1e-2, WarmupSteps = 2, WeightDecay = 0, EvalEvery = 1000, CheckpointEvery = 1000 };
        var trainer = new Trainer<PpoBatch>(model, config, training, dir.File("ppo"), fixture.Directory, PpoExperience.Objective(model, ppo), experience);
        trainer.Run();

        var scores = experience.Rollouts.Select(r => r.MeanScore).ToList();
        Assert.Equal(40, scores.Count); // 160 steps, 4 minibatches per rollout
        Assert.True(scores.TakeLast(5).Average() > scores.Take(5).Average() + 0.2,
            $"mean reward did not rise: {string.Join(", ", scores.Select(s => s.ToString("F2")))}");
        Assert.All(experience.Rollouts, r => Assert.True(r.MeanResponseLength is > 0 and <= 8));
    }

    static string SaveAndPath(TempDirectory dir, Gpt model)
    {
        Checkpoint.Save(dir.File("init"), model, null, new TrainingState(0, "0:0", "", ""));
        return Checkpoint.WeightsPath(dir.File("init"));
    }
}
