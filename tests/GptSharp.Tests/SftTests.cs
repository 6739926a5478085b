using GptSharp.Runs;
using GptSharp.Tokenization;
using GptSharp.Alignment;
using GptSharp.Training;
using TorchSharp;

namespace GptSharp.Tests;

public class SftTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    [Fact]
    public void PackedTargetsAreTheNextTokenOnlyWhereTheMaskCovers()
    {
        var chat = new RenderedChat([10, 11, 12, 13, 14], [false, false, true, true, false]);
        var batch = ChatBatchSource.Pack([chat, new RenderedChat([1, 2, 3, 4, 5, 6, 7, 8, 9], [.. Enumerable.Repeat(true, 9)])], sequenceLength: 6, padId: 99);
        Assert.Equal(new long[] { 10, 11, 12, 13, 99, 99 }, batch.Inputs[..6]);
        Assert.Equal(new long[] { -1, 12, 13, -1, -1, -1 }, batch.Targets[..6]);
        Assert.Equal(new long[] { 1, 2, 3, 4, 5, 6 }, batch.Inputs[6..]);   // cut to T + 1 tokens
        Assert.Equal(new long[] { 2, 3, 4, 5, 6, 7 }, batch.Targets[6..]);
        var shortBatch = ChatBatchSource.Pack([chat], sequenceLength: 128, padId: 99);
        Assert.Equal(4, shortBatch.SequenceLength); // the longest row's inputs, not the context
        Assert.Equal(new long[] { -1, 12, 13, -1 }, shortBatch.Targets);
    }

    [Fact]
    public void SftLearnsTheAnswersAndReportsHeldOutLoss()
    {
        using var dir = new TempDirectory();
        var tokenizer = fixture.Tokenizer;
        var config = fixture.SaveInitialRun(dir.File("base"), context: 48);

        var poems = new[] { ("靜夜思", "李白"), ("春曉", "孟浩然"), ("登鸛雀樓", "王之渙"), ("相思", "王維") };
        IReadOnlyList<ChatMessage> Ask((string Title, string Author) p) =>
            [new ChatMessage("user", $"《{p.Title}》的作者是誰？"), new ChatMessage("assistant", $"{p.Author}。")];
        var train = Enumerable.Range(0, 32).Select(i => Ask(poems[i % 4])).ToList();
        var training = new TrainingConfig { Steps = 40, BatchSize = 8, LearningRate = 1e-2, WarmupSteps = 2, EvalEvery = 10, LogEvery = 1, CheckpointEvery = 100 };
        var losses = new List<double>();
        var report = SftRun.Execute(dir.File("base"), train, [Ask(poems[0])], training, new RunOptions(dir.File("sft")) { Resume = false, OnStep = m => losses.Add(m.Loss) });

        Assert.Equal(40, report.Training.StepsDone);
        Assert.True(losses[^1] < losses[0] / 4, $"assistant-token loss did not fall: {losses[0]:F2} -> {losses[^1]:F2}");
        Assert.True(report.Training.FinalValLoss < 1.0, $"held-out loss {report.Training.FinalValLoss}");
        var (tuned, state) = Checkpoint.LoadModel(dir.File("sft"));
        using (tuned)
        {
            var prompt = new ChatTemplate(tokenizer).RenderPrompt([new ChatMessage("user", "《春曉》的作者是誰？")]);
            var answer = new GptSharp.Inference.TokenDecoder(tuned).Generate([prompt],
                new GptSharp.Inference.SamplingOptions(Temperature: 0, MaxNewTokens: 10, StopTokens: [tokenizer.EndId]))[0];
            Assert.Equal("孟浩然。", tokenizer.Decode(answer.Tokens.Where(t => !tokenizer.IsSpecial(t))));
        }
        // The run keeps its own copy of the tokenizer, so the folder stands alone.
        Assert.Equal(Path.GetFullPath(Path.Combine(dir.File("sft"), RunFolder.TokenizerFolder)), state.Tokenizer);
        foreach (string file in Directory.GetFiles(fixture.Directory))
            Assert.Equal(File.ReadAllBytes(file), File.ReadAllBytes(Path.Combine(state.Tokenizer, Path.GetFileName(file))));
    }
}
