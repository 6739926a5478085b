using System.Diagnostics;
using System.Text.Json;
using GptSharp.Data;
using GptSharp.Encoders;
using GptSharp.Evaluation;
using GptSharp.Runs;
using GptSharp.Tokenization;
using GptSharp.Training;

namespace GptSharp.Bench;

/// <summary>
/// <c>bert ROOT [pretrain-steps] [finetune-steps] [seeds] [context] [cls|mean] [first|windows] [learning-rate]</c>: does pretraining by cloze pay on an English task?
/// One fixed split of the spam/ham messages (the stage seed's); an English BPE tokenizer and a tiny BERT pretrained on the
/// Brown corpus, the State of the Union speeches, Moby-Dick and the training split's messages (never the held-out ones);
/// then per seed, interleaved, the same encoder fine-tuned from the pretrained weights and from scratch, beside the
/// bag-of-words logistic baseline on the same tokens; and what the pretrained encoder's embeddings are worth as they are
/// (5-nearest-neighbour spam classification, mean and [CLS] pooling) against bag-of-words vectors. Folders in ROOT are
/// reused when present, so a rerun with more seeds trains only what is new.
/// </summary>
static class BertBench
{
    public static void Run(string[] args)
    {
        string root = args.Length > 1 ? args[1] : "runs/bert-bench";
        int pretrainSteps = args.Length > 2 ? int.Parse(args[2]) : 2000;
        int finetuneSteps = args.Length > 3 ? int.Parse(args[3]) : 400;
        long[] seeds = args.Length > 4 ? [.. args[4].Split(',').Select(long.Parse)] : [1, 2, 3];
        int context = args.Length > 5 ? int.Parse(args[5]) : 256;
        var pooling = args.Length > 6 ? Enum.Parse<Pooling>(args[6], ignoreCase: true) : Pooling.Cls;
        bool windows = args.Length > 7 && args[7] == "windows";
        double learningRate = args.Length > 8 ? double.Parse(args[8], System.Globalization.CultureInfo.InvariantCulture) : 1e-4;
        string reading = (pooling == Pooling.Cls ? "" : "-mean") + (windows ? "-windows" : "") + (learningRate == 1e-4 ? "" : $"-lr{learningRate:G2}");
        Directory.CreateDirectory(root);

        var data = LabeledData.Load("spam", null, new TrainingConfig().Seed);
        string trainCorpus = Path.Combine(root, "spam-train.jsonl");
        File.WriteAllLines(trainCorpus, data.Train.Select(t => JsonSerializer.Serialize(new { text = t.Text })));
        string[] corpora = ["brown", "sotu", "moby-dick", trainCorpus];

        string tokenizerDir = Path.Combine(root, "tokenizer");
        if (!File.Exists(Path.Combine(tokenizerDir, GptTokenizer.SpecFileName)))
        {
            var trained = BpeTrainer.Train(corpora.SelectMany(c => Corpus.Read(c)).Select(d => d.Text), new BpeTrainingOptions(8192, "gpt4"));
            GptTokenizer.Save(trained, "english", tokenizerDir);
        }
        var tokenizer = GptTokenizer.Load(tokenizerDir);
        var lengths = data.Train.Select(t => tokenizer.Encode(t.Text).Length).Order().ToList();
        Console.WriteLine($"spam: {data.Train.Count} train / {data.HeldOut.Count} held-out messages; tokens per message median {lengths[lengths.Count / 2]}, " +
                          $"p90 {lengths[lengths.Count * 9 / 10]}; context {context} reads {100.0 * data.Train.Count(t => tokenizer.Encode(t.Text).Length <= context - 2) / data.Train.Count:F0}% of messages whole");

        string pretrained = Path.Combine(root, "bert-en");
        var clock = Stopwatch.StartNew();
        {
            var report = BertPretrainRun.Execute(BertConfig.Preset("tiny", tokenizer.VocabSize) with { ContextLength = context },
                BertPretrainRun.Defaults with { Steps = pretrainSteps, EvalEvery = 500, CheckpointEvery = 500 }, new MaskingConfig(), corpora, tokenizerDir,
                new RunOptions(pretrained) { Resume = Checkpoint.Find(pretrained) is not null });
            Console.WriteLine($"pretrain: {pretrainSteps} steps on {report.TrainExamples:N0} examples in {clock.Elapsed.TotalSeconds:F0} s; held-out masked-token loss " +
                              $"{report.HeldOut.Loss:F3}, accuracy {100 * report.HeldOut.Accuracy:F1}%");
        }

        // What the pretrained encoder's vectors are worth untouched, measured with the default reading (a run naming a pooling skips it).
        if (args.Length <= 6) MeasureVectors(pretrained, data, tokenizer, context);

        // Fine-tuning, interleaved per seed: pretrained, then from scratch (same shape, tokenizer, recipe and data order).
        var finetune = BertPretrainRun.Defaults with { Steps = finetuneSteps, LearningRate = learningRate, WarmupSteps = finetuneSteps / 10, EvalEvery = finetuneSteps, CheckpointEvery = finetuneSteps };
        var rows = new List<(long Seed, string Start, ClassificationScore Score, double Seconds)>();
        ClassificationScore? bagOfWords = null;
        foreach (long seed in seeds)
            foreach (bool scratch in new[] { false, true })
            {
                string dir = Path.Combine(root, $"spam-{(scratch ? "scratch" : "pretrained")}{reading}-s{seed}");
                var watch = Stopwatch.StartNew();
                var report = BertFinetuneRun.Execute(pretrained, data, finetune with { Seed = seed }, new RunOptions(dir) { Resume = Checkpoint.Find(dir) is not null }, new FinetuneChoices(scratch, pooling, windows));
                bagOfWords ??= report.BagOfWords;
                rows.Add((seed, scratch ? "scratch" : "pretrained", report.Model, watch.Elapsed.TotalSeconds));
                Console.WriteLine($"seed {seed} {(scratch ? "scratch   " : "pretrained")}: accuracy {100 * report.Model.Accuracy:F1}%, F1 {report.Model.F1:F3} ({watch.Elapsed.TotalSeconds:F0} s)");
            }
        Console.WriteLine();
        Console.WriteLine($"| held-out ({data.HeldOut.Count} messages), {seeds.Length} seeds | accuracy | F1 (spam) |");
        Console.WriteLine("|---|---|---|");
        foreach (var start in new[] { "pretrained", "scratch" })
        {
            var mine = rows.Where(r => r.Start == start).ToList();
            Console.WriteLine($"| BERT tiny, context {context}, {pooling} pooling, {(windows ? "whole message in windows" : "first window")}, lr {learningRate:G2}, {start} | {100 * mine.Min(r => r.Score.Accuracy):F1}–{100 * mine.Max(r => r.Score.Accuracy):F1}% | {mine.Min(r => r.Score.F1):F3}–{mine.Max(r => r.Score.F1):F3} |");
        }
        Console.WriteLine($"| bag-of-words logistic (whole message) | {100 * bagOfWords!.Accuracy:F1}% | {bagOfWords.F1:F3} |");
    }

    /// <summary>
    /// <c>bert-poems ROOT TOKENIZER [pretrain-steps]</c>: a tiny BERT pretrained by cloze on the Tang poems (context 128, the
    /// poems' own tokenizer), then retrieval of each held-out poem (never seen in pretraining: the pretraining run's 1%
    /// held-out documents) by its first line among all of them: recall@1 and @5 by cosine similarity of the first line's
    /// vector to each poem's remaining lines, for BERT (mean and [CLS] pooling) and bag-of-words vectors.
    /// </summary>
    public static void RunPoems(string[] args)
    {
        string root = args.Length > 1 ? args[1] : "runs/bert-poems";
        string tokenizerDir = args.Length > 2 ? args[2] : "runs/speedrun/tokenizer";
        int steps = args.Length > 3 ? int.Parse(args[3]) : 1000;
        var training = BertPretrainRun.Defaults with { Steps = steps, EvalEvery = 500, CheckpointEvery = 500 };
        var tokenizer = GptTokenizer.Load(tokenizerDir);
        string run = Path.Combine(root, "bert-tang");
        var clock = Stopwatch.StartNew();
        var report = BertPretrainRun.Execute(BertConfig.Preset("tiny", tokenizer.VocabSize), training, new MaskingConfig(), ["tang"], tokenizerDir,
            new RunOptions(run) { Resume = Checkpoint.Find(run) is not null });
        Console.WriteLine($"pretrain on tang: {steps} steps, {report.TrainExamples:N0} examples, {clock.Elapsed.TotalSeconds:F0} s; held-out masked-token loss {report.HeldOut.Loss:F3}, accuracy {100 * report.HeldOut.Accuracy:F1}%");
        // The held-out poems: the documents the pretraining run held out, with at least two lines.
        var poems = Corpus.Read("tang").Select((d, i) => (d.Text, i)).Where(p => ShardBuilder.IsValidation(training.Seed, "tang", p.i, 0.01))
            .Select(p => p.Text.Split('\n', StringSplitOptions.RemoveEmptyEntries)).Where(lines => lines.Length >= 2).ToList();
        var queries = poems.Select(lines => lines[0]).ToList();
        var documents = poems.Select(lines => string.Join("\n", lines[1..])).ToList();
        var (model, _) = BertPretrainRun.Load(run);
        using (model)
        {
            Console.WriteLine($"| {poems.Count} held-out poems, first line → the rest | recall@1 | recall@5 |");
            Console.WriteLine("|---|---|---|");
            foreach (var pooling in new[] { Pooling.Mean, Pooling.Cls })
            {
                var q = BertEmbeddings.EmbedTexts(model.Encoder, tokenizer, queries, pooling);
                var d = BertEmbeddings.EmbedTexts(model.Encoder, tokenizer, documents, pooling);
                Console.WriteLine($"| BERT tiny (Tang poems), {pooling} pooling | {100 * EmbeddingScore.RecallAtK(q, d, 1):F1}% | {100 * EmbeddingScore.RecallAtK(q, d, 5):F1}% |");
            }
            using var scope = TorchSharp.torch.NewDisposeScope();
            var bq = EmbeddingScore.Rows(ClassificationBaselines.Features(queries, tokenizer));
            var bd = EmbeddingScore.Rows(ClassificationBaselines.Features(documents, tokenizer));
            Console.WriteLine($"| bag-of-words (log counts) | {100 * EmbeddingScore.RecallAtK(bq, bd, 1):F1}% | {100 * EmbeddingScore.RecallAtK(bq, bd, 5):F1}% |");
        }
    }

    /// <summary>
    /// <c>bert-contrastive POEMS_RUN SPAM_RUN [steps] [seeds]</c>: contrastive training of the pretrained encoders of
    /// <c>bert-poems</c> and <c>bert</c> — a held-out poem found by its first line (pairs: the training poems' first line →
    /// the rest) and spam/ham by 5 nearest neighbours (pairs: two messages of one label) — each measured before, after (per
    /// seed) and by bag-of-words vectors on the same held-out texts. Runs are written beside each pretraining run.
    /// </summary>
    public static void RunContrastive(string[] args)
    {
        string poemsRun = args.Length > 1 ? args[1] : "runs/bert-poems/bert-tang";
        string spamRun = args.Length > 2 ? args[2] : "runs/bert-bench/bert-en";
        int steps = args.Length > 3 ? int.Parse(args[3]) : 300;
        long[] seeds = args.Length > 4 ? [.. args[4].Split(',').Select(long.Parse)] : [1, 2, 3];
        long split = BertPretrainRun.Defaults.Seed;   // the pretraining runs' held-out documents and the spam split
        var tasks = new[]
        {
            (Name: "poem by its first line", Run: poemsRun, Data: (Func<ContrastiveData>)(() => ContrastiveData.FirstLines("tang", split))),
            (Name: "spam/ham", Run: spamRun, Data: () => ContrastiveData.SameLabel(LabeledData.Load("spam", null, split), split)),
        };
        Console.WriteLine("| task | measure | pretrained BERT | after contrastive training (per seed) | bag-of-words vectors | seconds per run |");
        Console.WriteLine("|---|---|---|---|---|---|");
        foreach (var task in tasks)
        {
            var data = task.Data();
            var (pretrained, tokenizer) = BertPretrainRun.Load(task.Run);
            (string Measure, double Value) before;
            using (pretrained) before = EmbeddingScore.Of(pretrained.Encoder, tokenizer, data);
            var bagOfWords = EmbeddingScore.Of(null, tokenizer, data);
            var after = new List<double>();
            var seconds = new List<double>();
            foreach (long seed in seeds)
            {
                string dir = $"{task.Run}-contrastive-s{seed}";
                var watch = Stopwatch.StartNew();
                var report = ContrastiveRun.Execute(task.Run, data, ContrastiveRun.Defaults with { Steps = steps, Seed = seed, EvalEvery = steps, CheckpointEvery = steps },
                    new ContrastiveConfig(), new RunOptions(dir) { Resume = Checkpoint.Find(dir) is not null });
                seconds.Add(watch.Elapsed.TotalSeconds);
                var (trained, _) = BertPretrainRun.Load(dir);
                using (trained) after.Add(EmbeddingScore.Of(trained.Encoder, tokenizer, data).Value);
                Console.WriteLine($"{task.Name}, seed {seed}: {before.Measure} {100 * before.Value:F1}% → {100 * after[^1]:F1}% (held-out loss {report.HeldOutLoss:F3}; " +
                                  $"{report.TrainPairs:N0} train / {report.HeldOutPairs:N0} held-out pairs; {seconds[^1]:F0} s)");
            }
            Console.WriteLine($"| {task.Name} | {before.Measure} | {100 * before.Value:F1}% | {string.Join(", ", after.Select(a => $"{100 * a:F1}%"))} | {100 * bagOfWords.Value:F1}% | {seconds.Average():F0} |");
        }
    }

    /// <summary>5-NN spam accuracy on the split with the pretrained encoder's vectors (mean and [CLS]) beside bag-of-words vectors.</summary>
    static void MeasureVectors(string pretrained, LabeledData data, GptTokenizer tokenizer, int context)
    {
        var (encoder, _) = BertPretrainRun.Load(pretrained);
        using (encoder)
        {
            var trainTexts = data.Train.Select(t => t.Text).ToList();
            var heldTexts = data.HeldOut.Select(t => t.Text).ToList();
            int[] trainLabels = [.. data.Train.Select(t => t.Label)], heldLabels = [.. data.HeldOut.Select(t => t.Label)];
            foreach (var vectors in new[] { Pooling.Mean, Pooling.Cls })
            {
                var watch = Stopwatch.StartNew();
                var train = BertEmbeddings.EmbedTexts(encoder.Encoder, tokenizer, trainTexts, vectors);
                var held = BertEmbeddings.EmbedTexts(encoder.Encoder, tokenizer, heldTexts, vectors);
                Console.WriteLine($"5-NN spam accuracy, pretrained BERT {vectors} pooling: {100 * EmbeddingScore.NearestNeighbourAccuracy(train, trainLabels, held, heldLabels):F1}% " +
                                  $"({watch.Elapsed.TotalSeconds:F0} s to embed {train.Length + held.Length} messages)");
            }
            using var scope = TorchSharp.torch.NewDisposeScope();
            var bowTrain = EmbeddingScore.Rows(ClassificationBaselines.Features(trainTexts, tokenizer));
            var bowHeld = EmbeddingScore.Rows(ClassificationBaselines.Features(heldTexts, tokenizer));
            Console.WriteLine($"5-NN spam accuracy, bag-of-words vectors (log counts, whole message): {100 * EmbeddingScore.NearestNeighbourAccuracy(bowTrain, trainLabels, bowHeld, heldLabels):F1}%");
            var bowCut = EmbeddingScore.Rows(ClassificationBaselines.Features([.. trainTexts.Select(t => Cut(t, tokenizer, context))], tokenizer));
            var bowHeldCut = EmbeddingScore.Rows(ClassificationBaselines.Features([.. heldTexts.Select(t => Cut(t, tokenizer, context))], tokenizer));
            Console.WriteLine($"5-NN spam accuracy, bag-of-words vectors of the same {context - 2} tokens BERT reads: {100 * EmbeddingScore.NearestNeighbourAccuracy(bowCut, trainLabels, bowHeldCut, heldLabels):F1}%");
        }
    }

    /// <summary>The text of a message's first context − 2 tokens (what the encoder reads of it).</summary>
    static string Cut(string text, GptTokenizer tokenizer, int context)
    {
        var ids = tokenizer.Encode(text);
        return tokenizer.Decode(ids[..Math.Min(ids.Length, context - 2)]);
    }
}
