using GptSharp.Evaluation;
using GptSharp.Serving;
using GptSharp.Encoders;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

public class BertTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    static BertConfig Tiny(int vocab, double dropout = 0) =>
        new() { VocabSize = vocab, ContextLength = 32, Layers = 2, Heads = 2, Width = 32, Dropout = dropout };

    /// <summary>A small pretrained encoder in <c>dir/bert</c>: a few masked-LM steps on a repeated line of a poem.</summary>
    void PretrainSmall(TempDirectory dir)
    {
        string poems = dir.File("poems.jsonl");
        File.WriteAllLines(poems, Enumerable.Range(0, 200).Select(i => System.Text.Json.JsonSerializer.Serialize(new { text = $"床前明月光，疑是地上霜。{i}" })));
        BertPretrainRun.Execute(Tiny(8), new TrainingConfig { Steps = 5, BatchSize = 8, WarmupSteps = 1, EvalEvery = 1000, EvalBatches = 2, CheckpointEvery = 1000 }, new MaskingConfig(), [poems], fixture.Directory, new RunOptions(dir.File("bert")) { Resume = false }, heldOutFraction: 0.1);
    }

    [Fact]
    public void MaskingChoosesFifteenPercentThenEightyTenTen()
    {
        const int vocab = 2000, special = 7, maskId = 3;
        var masker = new MlmMasker(vocab, maskId, Enumerable.Range(0, special), new MaskingConfig());
        var random = new Random(5);
        long maskable = 0, chosen = 0, masked = 0, randomised = 0, kept = 0, specialChosen = 0;
        for (int n = 0; n < 3000; n++)
        {
            int[] tokens = [0, .. Enumerable.Range(0, 62).Select(_ => random.Next(special, vocab)), 1];
            int[] words = [-1, .. Enumerable.Range(0, 62), -1];
            var (inputs, targets) = masker.Mask(tokens, words, random);
            for (int i = 0; i < tokens.Length; i++)
            {
                bool isSpecial = tokens[i] < special;
                if (isSpecial) { if (targets[i] >= 0 || inputs[i] != tokens[i]) specialChosen++; continue; }
                maskable++;
                if (targets[i] < 0) { Assert.Equal(tokens[i], inputs[i]); continue; }
                Assert.Equal(tokens[i], targets[i]);
                chosen++;
                if (inputs[i] == maskId) masked++;
                else if (inputs[i] == tokens[i]) kept++;
                else { randomised++; Assert.True(inputs[i] >= special, "a random replacement must be an ordinary token"); }
            }
        }
        Assert.Equal(0, specialChosen);
        // 186,000 maskable tokens: the binomial standard error of 15% is 0.08%, of the 80/10/10 split under 0.3%.
        Assert.InRange(chosen / (double)maskable, 0.145, 0.155);
        Assert.InRange(masked / (double)chosen, 0.79, 0.81);
        Assert.InRange(randomised / (double)chosen, 0.093, 0.107);
        Assert.InRange(kept / (double)chosen, 0.093, 0.107);
    }

    [Fact]
    public void WholeWordMaskingTakesEveryTokenOfAChosenWord()
    {
        var masker = new MlmMasker(500, 3, [0, 1, 2, 3], new MaskingConfig { WholeWord = true });
        var random = new Random(9);
        int words = 0, chosenWords = 0;
        for (int n = 0; n < 2000; n++)
        {
            int[] tokens = [.. Enumerable.Range(0, 30).Select(_ => random.Next(10, 500))];
            int[] wordIds = [.. Enumerable.Range(0, 30).Select(i => i / 3)]; // ten words of three tokens
            var (_, targets) = masker.Mask(tokens, wordIds, random);
            for (int w = 0; w < 10; w++)
            {
                var flags = targets.Skip(3 * w).Take(3).Select(t => t >= 0).Distinct().ToList();
                Assert.Single(flags); // all or none
                words++;
                if (flags[0]) chosenWords++;
            }
        }
        Assert.InRange(chosenWords / (double)words, 0.14, 0.16);
    }

    [Fact]
    public void WordIdsGroupTokensByPreTokenizerPiece()
    {
        var tokenizer = fixture.Tokenizer;
        string text = "床前明月光, hello world";
        var (ids, words) = tokenizer.EncodeWords(text);
        Assert.Equal(tokenizer.Encode(text), ids);
        Assert.Equal(ids.Length, words.Length);
        var pieces = words.Distinct().Select(w => tokenizer.Decode(ids.Where((_, i) => words[i] == w))).ToList();
        Assert.Equal(["床", "前", "明", "月", "光", ",", " hello", " world"], pieces);

        var example = EncoderExamples.Truncated(text, tokenizer, contextLength: 6);
        Assert.Equal([tokenizer.BosId, .. ids[..4], tokenizer.EosId], example.Tokens);
        Assert.Equal(-1, example.WordIds[0]);
        Assert.Equal(-1, example.WordIds[^1]);
        Assert.Throws<ArgumentException>(() => EncoderExamples.Truncated("", tokenizer, 16));
        Assert.Throws<ArgumentOutOfRangeException>(() => EncoderExamples.Truncated(text, tokenizer, 2));
    }

    [Fact]
    public void EncoderAttendsBothWaysAndIgnoresPadding()
    {
        using var scope = NewDisposeScope();
        manual_seed(1);
        using var bert = new Bert(Tiny(100));
        bert.eval();
        using var noGrad = no_grad();
        var tokens = tensor(new long[] { 5, 6, 7, 8 }).unsqueeze(0);
        var changedLast = tensor(new long[] { 5, 6, 7, 9 }).unsqueeze(0);
        var h = bert.Hidden(tokens, null, null);
        // Position 0 sees position 3: unlike a causal GPT, its state changes with a later token.
        Assert.False(h[0, 0].allclose(bert.Hidden(changedLast, null, null)[0, 0], rtol: 1e-4, atol: 1e-5));
        // Padding behind a key mask changes nothing for the real tokens.
        var padded = tensor(new long[] { 5, 6, 7, 8, 0, 0 }).unsqueeze(0);
        var keyMask = tensor(new[] { true, true, true, true, false, false }).unsqueeze(0);
        Assert.True(h.allclose(bert.Hidden(padded, null, keyMask).narrow(1, 0, 4), rtol: 1e-4, atol: 1e-5));
        Assert.Throws<ArgumentException>(() => bert.Hidden(zeros(1, 33, ScalarType.Int64), null, null));
    }

    [Fact]
    public void MaskedLmLossCountsChosenPositionsOnly()
    {
        using var scope = NewDisposeScope();
        manual_seed(2);
        using var model = new BertForMaskedLm(Tiny(50));
        model.eval();
        var batch = new EncoderBatch([1, 3, 9, 3, 2, 1, 7, 3, 2, 0], [-1, 11, -1, 12, -1, -1, -1, 13, -1, -1],
            [true, true, true, true, true, true, true, true, true, false], 2, 5, default);
        var output = MaskedLm.Objective(model, CPU)(batch);
        Assert.Equal(3, output.Tokens);
        var logits = model.Logits(tensor(batch.Inputs, [2, 5]), tensor(batch.KeyMask, [2, 5])).view(10, 50);
        var expected = nn.functional.cross_entropy(logits, tensor(batch.Targets), ignore_index: -1);
        Assert.Equal(expected.item<float>(), output.Loss.item<float>(), 4);
    }

    [Fact]
    public void PretrainingLearnsTheClozeResumesExactlyAndFillsMasks()
    {
        using var dir = new TempDirectory();
        string[] lines = ["床前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。", "春眠不覺曉，處處聞啼鳥。", "白日依山盡，黃河入海流。"];
        string corpus = dir.File("poems.jsonl");
        File.WriteAllLines(corpus, Enumerable.Range(0, 400).Select(i => System.Text.Json.JsonSerializer.Serialize(new { text = lines[i % 4] })));
        var config = Tiny(8, dropout: 0.1);
        TrainingConfig Training(int steps) => new() { Steps = steps, BatchSize = 16, LearningRate = 5e-3, WarmupSteps = 5, EvalEvery = 1000, EvalBatches = 4, LogEvery = 1, CheckpointEvery = 1000 };
        var masking = new MaskingConfig();

        var straight = new List<double>();
        var report = BertPretrainRun.Execute(config, Training(600), masking, [corpus], fixture.Directory, new RunOptions(dir.File("straight")) { Resume = false, OnStep = m => straight.Add(m.Loss) }, heldOutFraction: 0.1);
        Assert.True(straight.TakeLast(10).Average() < straight.Take(10).Average() / 3, $"loss {straight[0]:F2} -> {straight[^1]:F2}");
        Assert.True(report.HeldOut.Accuracy > 0.6, $"held-out masked-token accuracy {report.HeldOut.Accuracy:P1}");
        Assert.True(report.HeldOutExamples > 0 && report.TrainExamples + report.HeldOutExamples == 400);

        // Half, then a resume from the checkpoint for the rest: the same losses, masks and dropout included.
        var halves = new List<double>();
        var whole = new List<double>();
        BertPretrainRun.Execute(config, Training(40), masking, [corpus], fixture.Directory, new RunOptions(dir.File("whole")) { Resume = false, OnStep = m => whole.Add(m.Loss) }, heldOutFraction: 0.1);
        BertPretrainRun.Execute(config, Training(40), masking, [corpus], fixture.Directory, new RunOptions(dir.File("halves")) { Resume = false, OnStep = m => halves.Add(m.Loss), UntilStep = 20 }, heldOutFraction: 0.1);
        BertPretrainRun.Execute(config, Training(40), masking, [corpus], fixture.Directory, new RunOptions(dir.File("halves")) { Resume = true, OnStep = m => halves.Add(m.Loss) }, heldOutFraction: 0.1);
        Assert.Equal(whole, halves);
        var (model, tokenizer) = BertPretrainRun.Load(dir.File("straight"));
        using (model)
        {
            // The filler depends on the context around the mask: 光 is likelier after 床前明月 than after 春眠不覺.
            double Probability(string text, string token) =>
                FillMask.Predict(model, tokenizer, text, topK: tokenizer.VocabSize)[0].Single(f => f.Text == token).Probability;
            var fillers = FillMask.Predict(model, tokenizer, "床前明月<|mask|>，疑是地上霜。", topK: 3);
            Assert.Single(fillers);
            Assert.Equal(3, fillers[0].Count);
            Assert.True(fillers[0][0].Probability >= fillers[0][1].Probability && fillers[0][1].Probability >= fillers[0][2].Probability);
            Assert.True(Probability("床前明月<|mask|>，疑是地上霜。", "光") > 2 * Probability("春眠不覺<|mask|>，處處聞啼鳥。", "光"));
            Assert.True(Probability("春眠不覺<|mask|>，處處聞啼鳥。", "曉") > 2 * Probability("床前明月<|mask|>，疑是地上霜。", "曉"));
            Assert.Throws<ArgumentException>(() => FillMask.Predict(model, tokenizer, "床前明月光", 3));
            Assert.Throws<ArgumentException>(() => FillMask.Predict(model, tokenizer, " ", 3));
            Assert.Throws<ArgumentException>(() => FillMask.Predict(model, tokenizer, string.Concat(Enumerable.Repeat("床前明月光", 10)) + "<|mask|>", 3));
        }
    }

    [Fact]
    public void F1AndBaselinesAreComputedAsDefined()
    {
        // 3 true positives, 1 false positive, 2 false negatives, 4 true negatives.
        int[] actual = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
        int[] predicted = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0];
        var score = ClassificationScore.Of(predicted, actual, positive: 1);
        Assert.Equal(0.7, score.Accuracy, 6);
        Assert.Equal(0.75, score.Precision, 6);
        Assert.Equal(0.6, score.Recall, 6);
        Assert.Equal(2 * 0.75 * 0.6 / 1.35, score.F1, 6);
        Assert.Equal(0, ClassificationBaselines.MajorityLabel([0, 1, 0, 2]));

        var tokenizer = fixture.Tokenizer;
        string[] train = [.. Enumerable.Range(0, 40).Select(i => i % 2 == 0 ? $"win free money now {i}" : $"meeting notes for monday {i}")];
        int[] labels = [.. Enumerable.Range(0, 40).Select(i => i % 2 == 0 ? 1 : 0)];
        var bow = ClassificationBaselines.BagOfWordsLogistic(train, labels, ["free money to win", "notes from the meeting"], tokenizer, 2, iterations: 100);
        Assert.Equal([1, 0], bow);
    }

    [Fact]
    public void FineTuningBeatsTheMajorityAndBadLabelsNameTheLine()
    {
        using var dir = new TempDirectory();
        var tokenizer = fixture.Tokenizer;
        PretrainSmall(dir);

        string data = dir.File("labels.jsonl");
        var random = new Random(3);
        File.WriteAllLines(data, Enumerable.Range(0, 300).Select(i => System.Text.Json.JsonSerializer.Serialize(i % 3 == 0
            ? new { text = $"win free money now, click {random.Next(1000)}", label = "spam" }
            : new { text = $"notes from the meeting on day {random.Next(1000)}", label = "ham" })));
        var labeled = LabeledData.Load(data, null, seed: 1);
        Assert.Equal(["ham", "spam"], labeled.Labels);
        Assert.Equal("spam", labeled.Labels[labeled.PositiveLabel]);
        var report = BertFinetuneRun.Execute(dir.File("bert"), labeled, new TrainingConfig { Steps = 60, BatchSize = 16, LearningRate = 5e-3, WarmupSteps = 4, EvalEvery = 20, EvalBatches = 4, CheckpointEvery = 1000 }, new RunOptions(dir.File("spam")) { Resume = false });
        Assert.True(report.Model.Accuracy > report.Majority.Accuracy + 0.2, $"BERT {report.Model.Accuracy:P1} vs majority {report.Majority.Accuracy:P1}");
        Assert.Equal(0, report.Majority.F1); // the majority class is ham: no spam found
        var (model, config, loadedTokenizer) = BertFinetuneRun.Load(dir.File("spam"));
        using (model)
        {
            Assert.Equal(Pooling.Cls, config.Pooling);
            var probabilities = BertFinetuneRun.Classify(model, config, loadedTokenizer, "win free money now, click 7");
            Assert.Equal("spam", probabilities[0].Label);
            Assert.Equal(1.0, probabilities.Sum(p => p.Probability), 4);
            Assert.Throws<ArgumentException>(() => BertFinetuneRun.Classify(model, config, loadedTokenizer, "  "));
        }

        File.WriteAllLines(data, ["{\"text\":\"hello\",\"label\":\"ham\"}", "{\"text\":\"buy\",\"label\":\"eggs\"}"]);
        var unknown = Assert.Throws<InvalidDataException>(() => LabeledData.Load(data, ["ham", "spam"], 1));
        Assert.Contains(":2:", unknown.Message);
        Assert.Contains("'eggs'", unknown.Message);
        File.WriteAllLines(data, ["{\"text\":\"hello\",\"label\":\"ham\"}", "{\"text\":\"buy\"}"]);
        Assert.Contains(":2: field 'label'", Assert.Throws<InvalidDataException>(() => LabeledData.Load(data, null, 1)).Message);
        File.WriteAllLines(data, ["{\"text\":\"\",\"label\":\"ham\"}"]);
        Assert.Contains(":1: field 'text'", Assert.Throws<InvalidDataException>(() => LabeledData.Load(data, null, 1)).Message);
    }

    [Fact]
    public void WindowsReadTheLabelAtTheEndOfALongTextThatTheFirstWindowNeverSees()
    {
        using var dir = new TempDirectory();
        PretrainSmall(dir);
        // Every text opens with the same 40+ tokens; only its last words tell the label, past the first window of 30.
        string opening = string.Concat(Enumerable.Repeat("the minutes of the meeting ", 8));
        Assert.True(fixture.Tokenizer.Encode(opening).Length > 30);
        string data = dir.File("labels.jsonl");
        var random = new Random(5);
        File.WriteAllLines(data, Enumerable.Range(0, 300).Select(i => System.Text.Json.JsonSerializer.Serialize(i % 2 == 0
            ? new { text = $"{opening}win free money {random.Next(100)}", label = "spam" }
            : new { text = $"{opening}see you at noon {random.Next(100)}", label = "ham" })));
        var labeled = LabeledData.Load(data, null, seed: 1);
        var training = new TrainingConfig { Steps = 60, BatchSize = 16, LearningRate = 5e-3, WarmupSteps = 4, EvalEvery = 30, EvalBatches = 2, CheckpointEvery = 1000 };

        var firstWindow = BertFinetuneRun.Execute(dir.File("bert"), labeled, training, new RunOptions(dir.File("first")) { Resume = false }, new FinetuneChoices(Pooling: Pooling.Mean));
        var windows = BertFinetuneRun.Execute(dir.File("bert"), labeled, training, new RunOptions(dir.File("windows")) { Resume = false }, new FinetuneChoices(Pooling: Pooling.Mean, Windows: true));
        Assert.True(firstWindow.Model.Accuracy <= firstWindow.Majority.Accuracy + 0.05, $"first window {firstWindow.Model.Accuracy:P1} vs majority {firstWindow.Majority.Accuracy:P1}");
        Assert.True(windows.Model.Accuracy >= 0.9, $"windows {windows.Model.Accuracy:P1}");
        Assert.Equal(labeled.HeldOut.Count, windows.HeldOutExamples);

        var (model, config, tokenizer) = BertFinetuneRun.Load(dir.File("windows"));
        using (model)
        {
            Assert.Equal((Pooling.Mean, true), (config.Pooling, config.Windows));
            Assert.Equal("spam", BertFinetuneRun.Classify(model, config, tokenizer, $"{opening}win free money 7")[0].Label);
            Assert.Equal("ham", BertFinetuneRun.Classify(model, config, tokenizer, $"{opening}see you at noon 7")[0].Label);
        }
    }

    [Fact]
    public void ContrastiveLossIsInfoNceBothWaysOverCosinesAndLeavesPairsOfOneGroupOutOfTheNegatives()
    {
        using var scope = torch.NewDisposeScope();
        var queries = torch.tensor(new float[] { 3, 0, 0, 2 }, [2, 2]);            // unit (1, 0) and (0, 1), scaled: cosines ignore length
        var positives = torch.tensor(new float[] { 1, 0, 0.6f, 0.8f }, [2, 2]);
        static double Nll(double target, double other) => -Math.Log(Math.Exp(target) / (Math.Exp(target) + Math.Exp(other)));
        // Similarities: q0·p0 1, q0·p1 0.6, q1·p0 0, q1·p1 0.8; at temperature 0.5 each is doubled.
        double queriesToPositives = (Nll(2, 1.2) + Nll(1.6, 0)) / 2, positivesToQueries = (Nll(2, 0) + Nll(1.6, 1.2)) / 2;
        Assert.Equal((queriesToPositives + positivesToQueries) / 2, ContrastiveRun.Loss(queries, positives, 0.5).item<float>(), 5);
        Assert.Equal((queriesToPositives + positivesToQueries) / 2, ContrastiveRun.Loss(queries, positives, 0.5, torch.tensor(new long[] { 0, 1 })).item<float>(), 5);
        Assert.Equal((queriesToPositives + positivesToQueries) / 2, ContrastiveRun.Loss(queries, positives, 0.5, torch.tensor(new long[] { -1, -1 })).item<float>(), 5);
        Assert.Equal(0, ContrastiveRun.Loss(queries, positives, 0.5, torch.tensor(new long[] { 4, 4 })).item<float>(), 5);   // alike: no negatives left
        Assert.Throws<ArgumentOutOfRangeException>(() => new ContrastiveConfig(Temperature: 0).Validate());
    }

    [Fact]
    public void ContrastiveTrainingTeachesPairsThatShareNoTokenAndWritesAServableEncoder()
    {
        using var dir = new TempDirectory();
        PretrainSmall(dir);
        // Ten topics: a query names one by a word, its positive by another word that shares no token with it.
        string[] asked = ["山", "水", "月", "风", "花", "雪", "云", "雨", "鸟", "松"], answered = ["江", "海", "星", "日", "草", "冰", "天", "雷", "鱼", "竹"];
        var random = new Random(11);
        string pairs = dir.File("pairs.jsonl");
        File.WriteAllLines(pairs, Enumerable.Range(0, 400).Select(i => System.Text.Json.JsonSerializer.Serialize(
            new { text = $"{asked[i % 10]}{random.Next(10)}", positive = $"{answered[i % 10]}{random.Next(10)}", group = $"{i % 10}" })));
        var data = ContrastiveData.Load(pairs, seed: 1);
        Assert.Equal(400, data.Train.Count + data.HeldOut.Count);
        Assert.All(data.Train, p => Assert.InRange(p.Group, 0, 9));

        var (start, tokenizer) = BertPretrainRun.Load(dir.File("bert"));
        double before;
        using (start) before = EmbeddingScore.Of(start.Encoder, tokenizer, data).Value;
        var report = ContrastiveRun.Execute(dir.File("bert"), data, new TrainingConfig { Steps = 80, BatchSize = 16, LearningRate = 3e-3, WarmupSteps = 5, EvalEvery = 40, EvalBatches = 4, CheckpointEvery = 1000 },
            new ContrastiveConfig(), new RunOptions(dir.File("pairs-run")) { Resume = false });
        var (trained, _) = BertPretrainRun.Load(dir.File("pairs-run"));   // the same shape as a pretraining run: served and fine-tuned as one
        using (trained)
        using (var pretrained = BertPretrainRun.Load(dir.File("bert")).Model)
        {
            double after = EmbeddingScore.Of(trained.Encoder, tokenizer, data).Value;
            Assert.True(after >= 0.8 && after > before + 0.2, $"held-out recall@5 {before:P1} → {after:P1}");
            Assert.True(report.HeldOutLoss < 1.0, $"held-out loss {report.HeldOutLoss:F3}");
            var trainedHead = trained.named_parameters().Where(p => !p.name.StartsWith("bert.")).ToList();
            Assert.NotEmpty(trainedHead);
            foreach (var (name, parameter) in trainedHead)   // the masked-LM head rode along frozen
                Assert.True(parameter.allclose(pretrained.named_parameters().Single(p => p.name == name).parameter, 0, 0), name);
        }
        Assert.True(ServedEncoder.IsEncoderRun(dir.File("pairs-run")));

        File.WriteAllLines(pairs, ["{\"text\":\"山\",\"positive\":\"江\"}", "{\"text\":\"水\"}"]);
        Assert.Contains(":2: field 'positive'", Assert.Throws<InvalidDataException>(() => ContrastiveData.Load(pairs, 1)).Message);
        File.WriteAllLines(pairs, ["{\"text\":\"山\",\"positive\":\"江\"}"]);
        Assert.Contains("at least two", Assert.Throws<InvalidDataException>(() => ContrastiveData.Load(pairs, 1)).Message);
    }
}
