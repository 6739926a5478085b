using GptSharp.Runs;
using GptSharp.Training;
using GptSharp.Data;
using GptSharp.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Encoders;

/// <summary>A classifier's saved shape: the encoder's config and the label names, in id order.</summary>
public sealed record BertClassifierConfig(BertConfig Bert, IReadOnlyList<string> Labels)
{
    public bool Equals(BertClassifierConfig? other) => other is not null && Bert == other.Bert && Labels.SequenceEqual(other.Labels);
    public override int GetHashCode() => HashCode.Combine(Bert, Labels.Count);
}

/// <summary>A labelled text.</summary>
public sealed record LabeledText(string Text, int Label);

/// <summary>Labelled texts split into train and held-out, with the label names.</summary>
public sealed record LabeledData(IReadOnlyList<string> Labels, IReadOnlyList<LabeledText> Train, IReadOnlyList<LabeledText> HeldOut)
{
    public const double HeldOutFraction = 0.2;

    /// <summary>
    /// Reads JSON lines with <c>text</c> and <c>label</c> (the embedded <c>spam</c> corpus, or a user file). The labels are
    /// <paramref name="labels"/> when given (any other label in the data is an error naming file and line), else the
    /// distinct labels found, sorted. A fixed 20% of records (per seed) is held out.
    /// </summary>
    public static LabeledData Load(string nameOrPath, IReadOnlyList<string>? labels, long seed)
    {
        string path = Corpus.ResolvePath(nameOrPath);
        var documents = Corpus.Read(nameOrPath).ToList();
        foreach (var d in documents)
            if (string.IsNullOrWhiteSpace(d.Field("label"))) throw new InvalidDataException($"{path}:{d.Line}: field 'label' is missing or empty.");
        var names = labels is { Count: > 0 } ? labels : [.. documents.Select(d => d.Field("label")!).Distinct().Order(StringComparer.Ordinal)];
        if (names.Count < 2) throw new InvalidDataException($"{path}: a classifier needs at least two labels; found {string.Join(", ", names)}.");
        var index = names.Select((name, i) => (name, i)).ToDictionary(x => x.name, x => x.i);
        var train = new List<LabeledText>();
        var heldOut = new List<LabeledText>();
        for (int i = 0; i < documents.Count; i++)
        {
            string label = documents[i].Field("label")!;
            if (!index.TryGetValue(label, out int id))
                throw new InvalidDataException($"{path}:{documents[i].Line}: label '{label}' is not one of {string.Join(", ", names)}.");
            (ShardBuilder.IsValidation(seed, Path.GetFileName(path), i, HeldOutFraction) ? heldOut : train).Add(new LabeledText(documents[i].Text, id));
        }
        if (train.Count == 0 || heldOut.Count == 0) throw new InvalidDataException($"{path}: {documents.Count} records are too few for a train and a held-out split.");
        return new LabeledData(names, train, heldOut);
    }

    /// <summary>The label a positive-class F1 is reported for: the rarer one in training (spam, in the built-in data).</summary>
    public int PositiveLabel => Train.GroupBy(t => t.Label).OrderBy(g => g.Count()).ThenBy(g => g.Key).First().Key;
}

/// <summary>A padded classification batch: inputs and key mask (B, T), labels (B).</summary>
public sealed record ClassBatch(long[] Inputs, bool[] KeyMask, long[] Labels, int BatchSize, int SequenceLength, LoaderPosition Next);

/// <summary>Serves classification batches shuffled per epoch from the seed; position "epoch:cursor".</summary>
public sealed class ClassBatchSource : IBatchSource<ClassBatch>
{
    readonly IReadOnlyList<(EncoderExample Example, int Label)> _rows;
    readonly int _batchSize, _padId, _rank, _processes;
    readonly EpochOrder _order;
    LoaderPosition _position;

    /// <param name="rank">Of <paramref name="processes"/> data-parallel processes, this one takes every processes-th row of each batch.</param>
    public ClassBatchSource(IReadOnlyList<(EncoderExample, int)> rows, int batchSize, int padId, long seed, LoaderPosition position = default,
        int rank = 0, int processes = 1)
    {
        if (rows.Count < batchSize) throw new InvalidDataException($"{rows.Count} examples are fewer than one batch of {batchSize}.");
        (_rows, _batchSize, _padId, _position, _rank, _processes) = (rows, batchSize, padId, position, rank, processes);
        _order = EpochOrder.Seeded(rows.Count, seed);
    }

    public string Position => _position.Format();

    public ClassBatch Next()
    {
        var rows = _order.NextBatch(ref _position, _batchSize, _rank, _processes).Select(i => _rows[i]).ToList();
        return Pack(rows, _padId, _position);
    }

    public static ClassBatch Pack(IReadOnlyList<(EncoderExample Example, int Label)> rows, int padId, LoaderPosition next = default)
    {
        var (inputs, keyMask, t) = EncoderExamples.Pad([.. rows.Select(r => r.Example.Tokens)], padId);
        return new ClassBatch(inputs, keyMask, [.. rows.Select(r => (long)r.Label)], rows.Count, t, next);
    }
}

/// <summary>What fine-tuning reports: the trainer's result, the held-out score and the two baselines on the same split.</summary>
public sealed record BertFinetuneReport(TrainingResult Training, IReadOnlyList<string> Labels, string PositiveLabel,
    ClassificationScore Model, ClassificationScore Majority, ClassificationScore BagOfWords, int TrainExamples, int HeldOutExamples);

/// <summary>
/// Fine-tunes a BERT classifier (encoder from a masked-LM run, fresh pooler and classifier) on labelled texts through the
/// shared trainer, and scores it on the held-out split beside a majority-class and a bag-of-words logistic baseline.
/// </summary>
public static class BertFinetuneRun
{
    /// <param name="fromScratch">Take only the run's shape and tokenizer, not its weights: the same encoder trained on the task
    /// alone from a random start (what pretraining adds is the difference).</param>
    public static BertFinetuneReport Execute(string fromRun, LabeledData data, TrainingConfig training, RunOptions options, bool fromScratch = false)
    {
        var (runDirectory, resume, device, onStep, cancellation) = options;
        options.RejectLora("BERT fine-tuning");
        training.Validate();
        var (pretrained, tokenizer) = BertPretrainRun.Load(fromRun);
        using var _ = pretrained;
        string tokenizerName = Checkpoint.ReadState(fromRun).Tokenizer;
        var config = new BertClassifierConfig(pretrained.Config, data.Labels);
        var train = Encode(data.Train, tokenizer, config.Bert.ContextLength);
        var heldOut = Encode(data.HeldOut, tokenizer, config.Bert.ContextLength);
        var torchDevice = torch.device(device);
        BertForClassification? built = null;
        List<ClassBatch> validation = [];
        var outcome = TrainingRun.Execute(new RunSetup(runDirectory, training, resume, tokenizerName, "BERT fine-tuning (classification)", device), run =>
        {
            var model = built = new BertForClassification(config.Bert, data.Labels.Count);   // fresh pooler and classifier from the run's seed
            if (!fromScratch) model.Encoder.load_state_dict(pretrained.Encoder.state_dict());
            model.to(run.Device);
            var source = new ClassBatchSource(train, training.BatchSize, tokenizer.PadId, training.Seed, run.Position, run.Rank, run.Processes);
            validation = heldOut.Chunk(training.BatchSize).Select(rows => ClassBatchSource.Pack(rows, tokenizer.PadId)).ToList();
            return new RunObjective<ClassBatch>(model, config, Objective(model, run.Device), source,
                () => Predict(model, validation.Take(training.EvalBatches), run.Device).Loss, new
                {
                    objective = "classification", from = RunFolder.Reference(runDirectory, fromRun), fromScratch, model = config, training, tokenizer = run.Tokenizer,
                    trainExamples = train.Count, heldOutExamples = heldOut.Count,
                });
        }, onStep: onStep, cancellation: cancellation);
        var result = outcome.Training;
        using var model = built!;

        model.eval();
        int positive = data.PositiveLabel;
        var actual = data.HeldOut.Select(t => t.Label).ToList();
        var predicted = Predict(model, validation, torchDevice).Labels;
        int majority = ClassificationBaselines.MajorityLabel([.. data.Train.Select(t => t.Label)]);
        var bagOfWords = ClassificationBaselines.BagOfWordsLogistic([.. data.Train.Select(t => t.Text)], [.. data.Train.Select(t => t.Label)],
            [.. data.HeldOut.Select(t => t.Text)], tokenizer, data.Labels.Count, seed: training.Seed);
        return new BertFinetuneReport(result, data.Labels, data.Labels[positive],
            ClassificationScore.Of(predicted, actual, positive),
            ClassificationScore.Of([.. actual.Select(_ => majority)], actual, positive),
            ClassificationScore.Of(bagOfWords, actual, positive), train.Count, heldOut.Count);
    }

    /// <summary>Each text's first context-length − 2 tokens; a text with no tokens is an error.</summary>
    public static List<(EncoderExample, int)> Encode(IReadOnlyList<LabeledText> texts, GptTokenizer tokenizer, int contextLength) =>
        [.. texts.Select(t => (EncoderExamples.Truncated(t.Text, tokenizer, contextLength), t.Label))];

    public static Func<ClassBatch, ObjectiveOutput> Objective(BertForClassification model, Device device) => batch =>
    {
        var (logits, labels) = Forward(model, batch, device);
        return new ObjectiveOutput(nn.functional.cross_entropy(logits, labels), batch.BatchSize);
    };

    static (Tensor Logits, Tensor Labels) Forward(BertForClassification model, ClassBatch batch, Device device)
    {
        var inputs = tensor(batch.Inputs, [batch.BatchSize, batch.SequenceLength], device: device);
        var keyMask = tensor(batch.KeyMask, [batch.BatchSize, batch.SequenceLength], device: device);
        return (model.Logits(inputs, keyMask), tensor(batch.Labels, device: device));
    }

    /// <summary>Mean loss and predicted labels over batches.</summary>
    public static (double Loss, List<int> Labels) Predict(BertForClassification model, IEnumerable<ClassBatch> batches, Device device)
    {
        using var noGrad = no_grad();
        double lossSum = 0;
        var labels = new List<int>();
        foreach (var batch in batches)
        {
            using var scope = NewDisposeScope();
            var (logits, actual) = Forward(model, batch, device);
            lossSum += nn.functional.cross_entropy(logits, actual, reduction: nn.Reduction.Sum).item<float>();
            labels.AddRange(logits.argmax(-1).data<long>().ToArray().Select(v => (int)v));
        }
        return (lossSum / Math.Max(1, labels.Count), labels);
    }

    /// <summary>Loads a fine-tuned classifier, its label names and tokenizer.</summary>
    public static (BertForClassification Model, IReadOnlyList<string> Labels, GptTokenizer Tokenizer) Load(string runDirectory)
    {
        var config = Checkpoint.ReadConfig<BertClassifierConfig>(runDirectory);
        var model = new BertForClassification(config.Bert, config.Labels.Count);
        Checkpoint.LoadWeights(model, Checkpoint.WeightsPath(runDirectory));
        model.eval();
        return (model, config.Labels, GptTokenizer.Load(Checkpoint.ReadState(runDirectory).Tokenizer));
    }

    /// <summary>Label probabilities for one text (its first context-length − 2 tokens).</summary>
    public static IReadOnlyList<(string Label, double Probability)> Classify(BertForClassification model, IReadOnlyList<string> labels, GptTokenizer tokenizer, string text)
    {
        if (string.IsNullOrWhiteSpace(text)) throw new ArgumentException("The text is empty.", nameof(text));
        var example = EncoderExamples.Truncated(text, tokenizer, model.Config.ContextLength);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var device = model.parameters().First().device;
        var logits = model.forward(tensor(example.Tokens.Select(t => (long)t).ToArray(), [1, example.Tokens.Length], device: device));
        var p = logits[0].softmax(-1).data<float>().ToArray();
        return [.. labels.Select((label, i) => (label, (double)p[i])).OrderByDescending(x => x.Item2)];
    }
}
