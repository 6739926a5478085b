using GptSharp.Runs;
using GptSharp.Runtime;
using GptSharp.Tokenization;
using GptSharp.Alignment;
using GptSharp.Models;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

public class LoraTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    [Fact]
    public void AdaptersStartSilentAndAreTheOnlyTrainableParameters()
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(1);
        var config = GptConfig.Gpt2(100, 16, layers: 2, heads: 2, width: 16);
        using var model = new Gpt(config);
        model.eval();
        var tokens = tensor(new long[] { 1, 2, 3, 4 }).unsqueeze(0);
        var before = model.forward(tokens);
        long trainable = Lora.Attach(model, new LoraConfig(Rank: 4, Targets: "c_attn,c_proj"));
        // Per layer: c_attn 4·(16 + 48), attention c_proj 4·(16 + 16), MLP c_proj 4·(64 + 16) — "c_proj" names both.
        Assert.Equal(2 * (4 * (16 + 48) + 4 * (16 + 16) + 4 * (64 + 16)), trainable);
        Assert.Equal(trainable, model.parameters().Where(p => p.requires_grad).Sum(p => p.numel()));
        Assert.True(before.allclose(model.forward(tokens))); // B starts at zero
        Assert.Throws<ArgumentException>(() => new LoraConfig(Targets: "wte").Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoraConfig(Rank: 0).Validate());
    }

    [Fact]
    public void LoraSftTrainsOnlyAdaptersAndTheMergedRunGivesTheSameLogits()
    {
        using var dir = new TempDirectory();
        fixture.SaveInitialRun(dir.File("base"), context: 48);
        IReadOnlyList<ChatMessage> Ask(string title, string author) => [new ChatMessage("user", $"《{title}》的作者是誰？"), new ChatMessage("assistant", $"{author}。")];
        var train = Enumerable.Range(0, 32).Select(i => i % 2 == 0 ? Ask("靜夜思", "李白") : Ask("春曉", "孟浩然")).ToList();
        var training = new TrainingConfig { Steps = 30, BatchSize = 8, LearningRate = 1e-2, WarmupSteps = 2, EvalEvery = 100, CheckpointEvery = 100 };
        var lora = new LoraConfig(Rank: 4, Alpha: 8);
        var losses = new List<double>();
        var report = SftRun.Execute(dir.File("base"), train, [Ask("靜夜思", "李白")], training, new RunOptions(dir.File("sft")) { Resume = false, OnStep = m => losses.Add(m.Loss), Lora = lora });

        var (baseModel, _) = Checkpoint.LoadModel(dir.File("base"));
        using (baseModel)
        {
            // Adapters on c_attn, c_proj (×2) and c_fc of both layers: rank · (in + out) each.
            var c = baseModel.Config;
            long perLayer = 4 * (c.Width + 3 * c.Width) + 4 * (c.Width + c.Width) + 4 * (c.Width + c.MlpHidden) + 4 * (c.MlpHidden + c.Width);
            Assert.Equal(c.Layers * perLayer, report.TrainableParameters);
            Assert.True(losses[^1] < losses[0], $"loss {losses[0]:F2} -> {losses[^1]:F2}");

            // The checkpoint holds the untouched base weights and trained adapters.
            var (saved, _) = SafeTensors.Load(Checkpoint.WeightsPath(dir.File("sft")));
            foreach (var (name, weight) in baseModel.state_dict())
                Assert.True(weight.eq(saved[name]).all().item<bool>(), $"{name} changed, but only adapters should train");
            Assert.True(saved["h.0.attn.c_attn.lora_B"].abs().sum().item<float>() > 0);

            // Adapter-on model vs the run loaded as a plain model (adapters merged into the weights): same logits.
            using var adapted = new Gpt(c);
            Lora.Attach(adapted, lora);
            Checkpoint.LoadWeights(adapted, Checkpoint.WeightsPath(dir.File("sft")));
            var (merged, _) = Checkpoint.LoadModel(dir.File("sft"));
            using (merged)
            {
                Assert.DoesNotContain(merged.state_dict().Keys, k => k.Contains("lora"));
                adapted.eval(); merged.eval();
                using var noGrad = no_grad();
                var tokens = tensor(new long[] { 5, 9, 77, 300, 12, 8 }).unsqueeze(0);
                Assert.True(adapted.forward(tokens).allclose(merged.forward(tokens), rtol: 1e-4, atol: 1e-5));
                Assert.False(baseModel.forward(tokens).allclose(merged.forward(tokens), rtol: 1e-4, atol: 1e-5));
            }
            foreach (var t in saved.Values) t.Dispose();
        }
    }
}
