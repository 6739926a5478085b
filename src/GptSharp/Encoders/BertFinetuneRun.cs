using GptSharp.Runs;
using GptSharp.Training;
using GptSharp.Data;
using GptSharp.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Encoders;

/// <summary>
/// A classifier's saved shape: the encoder's config, the label names in id order, how a text's states become one vector
/// (<see cref="Pooling"/>) and whether a text longer than the context is read whole, in windows whose logits are averaged.
/// </summary>
public sealed record BertClassifierConfig(BertConfig Bert, IReadOnlyList<string> Labels, Pooling Pooling = Pooling.Cls, bool Windows = false)
{
    public bool Equals(BertClassifierConfig? other) =>
        other is not null && Bert == other.Bert && Labels.SequenceEqual(other.Labels) && Pooling == other.Pooling && Windows == other.Windows;
    public override int GetHashCode() => HashCode.Combine(Bert, Labels.Count, Pooling, Windows);
}

/// <summary>
/// How a classifier is started and reads its texts. <paramref name="FromScratch"/>: only the pretrained run's shape and
/// tokenizer, not its weights (what pretraining adds is the difference). <paramref name="Windows"/>: every
/// context-sized window of a text is a training example with the text's label, and a text's prediction averages its
/// windows' logits; otherwise a text is its first context − 2 tokens.
/// </summary>
public sealed record FinetuneChoices(bool FromScratch = false, Pooling Pooling = Pooling.Cls, bool Windows = false);

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
    public static BertFinetuneReport Execute(string fromRun, LabeledData data, TrainingConfig training, RunOptions options, FinetuneChoices? choices = null)
    {
        var (fromScratch, pooling, windows) = choices ?? new FinetuneChoices();
        var (runDirectory, resume, device, onStep, cancellation) = options;
        options.RejectLora("BERT fine-tuning");
        training.Validate();
        var (pretrained, tokenizer) = BertPretrainRun.Load(fromRun);
        using var _ = pretrained;
        string tokenizerName = Checkpoint.ReadState(fromRun).Tokenizer;
        var config = new BertClassifierConfig(pretrained.Config, data.Labels, pooling, windows);
        var train = Encode(data.Train, tokenizer, config);
        var heldOut = Encode(data.HeldOut, tokenizer, config);
        var torchDevice = torch.device(device);
        BertForClassification? built = null;
        List<ClassBatch> validation = [];
        var outcome = TrainingRun.Execute(new RunSetup(runDirectory, training, resume, tokenizerName, "BERT fine-tuning (classification)", device), run =>
        {
            var model = built = new BertForClassification(config.Bert, data.Labels.Count, pooling);   // fresh pooler and classifier from the run's seed
            if (!fromScratch) model.Encoder.load_state_dict(pretrained.Encoder.state_dict());
            model.to(run.Device);
            var source = new ClassBatchSource([.. train.Select(w => (w.Example, w.Label))], training.BatchSize, tokenizer.PadId, training.Seed, run.Position, run.Rank, run.Processes);
            validation = heldOut.Select(w => (w.Example, w.Label)).Chunk(training.BatchSize).Select(rows => ClassBatchSource.Pack(rows, tokenizer.PadId)).ToList();
            return new RunObjective<ClassBatch>(model, config, Objective(model, run.Device), source,
                () => Loss(model, validation.Take(training.EvalBatches), run.Device), new
                {
                    objective = "classification", from = RunFolder.Reference(runDirectory, fromRun), fromScratch, model = config, training, tokenizer = run.Tokenizer,
                    trainExamples = data.Train.Count, heldOutExamples = data.HeldOut.Count, trainWindows = train.Count, heldOutWindows = heldOut.Count,
                });
        }, onStep: onStep, cancellation: cancellation);
        var result = outcome.Training;
        using var model = built!;

        model.eval();
        int positive = data.PositiveLabel;
        var actual = data.HeldOut.Select(t => t.Label).ToList();
        var predicted = Predict(model, validation, [.. heldOut.Select(w => w.Text)], data.HeldOut.Count, torchDevice);
        int majority = ClassificationBaselines.MajorityLabel([.. data.Train.Select(t => t.Label)]);
        var bagOfWords = ClassificationBaselines.BagOfWordsLogistic([.. data.Train.Select(t => t.Text)], [.. data.Train.Select(t => t.Label)],
            [.. data.HeldOut.Select(t => t.Text)], tokenizer, data.Labels.Count, seed: training.Seed);
        return new BertFinetuneReport(result, data.Labels, data.Labels[positive],
            ClassificationScore.Of(predicted, actual, positive),
            ClassificationScore.Of([.. actual.Select(_ => majority)], actual, positive),
            ClassificationScore.Of(bagOfWords, actual, positive), data.Train.Count, data.HeldOut.Count);
    }

    /// <summary>
    /// The encoder inputs of each text with its label and index: its first context − 2 tokens, or with
    /// <see cref="BertClassifierConfig.Windows"/> one input per context − 2 tokens. A text with no tokens is an error.
    /// </summary>
    public static List<(EncoderExample Example, int Label, int Text)> Encode(IReadOnlyList<LabeledText> texts, GptTokenizer tokenizer, BertClassifierConfig config) =>
        [.. texts.SelectMany((t, i) => Inputs(t.Text, tokenizer, config).Select(example => (example, t.Label, i)))];

    static IEnumerable<EncoderExample> Inputs(string text, GptTokenizer tokenizer, BertClassifierConfig config)
    {
        if (!config.Windows) return [EncoderExamples.Truncated(text, tokenizer, config.Bert.ContextLength)];
        var windows = EncoderExamples.FromText(text, tokenizer, config.Bert.ContextLength).ToList();
        return windows.Count > 0 ? windows : throw new ArgumentException("The text has no tokens.", nameof(text));
    }

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

    /// <summary>Mean loss per input over batches.</summary>
    static double Loss(BertForClassification model, IEnumerable<ClassBatch> batches, Device device)
    {
        using var noGrad = no_grad();
        double lossSum = 0;
        int count = 0;
        foreach (var batch in batches)
        {
            using var scope = NewDisposeScope();
            var (logits, actual) = Forward(model, batch, device);
            lossSum += nn.functional.cross_entropy(logits, actual, reduction: nn.Reduction.Sum).item<float>();
            count += batch.BatchSize;
        }
        return lossSum / Math.Max(1, count);
    }

    /// <summary>Each text's predicted label: the argmax of the mean logits of its inputs (<paramref name="textOfInput"/>, in batch order).</summary>
    public static List<int> Predict(BertForClassification model, IEnumerable<ClassBatch> batches, IReadOnlyList<int> textOfInput, int texts, Device device)
    {
        using var noGrad = no_grad();
        var sums = new double[texts][];
        int input = 0;
        foreach (var batch in batches)
        {
            using var scope = NewDisposeScope();
            var (logits, _) = Forward(model, batch, device);
            int labels = (int)logits.shape[1];
            var flat = logits.to(ScalarType.Float32).cpu().data<float>().ToArray();
            for (int row = 0; row < batch.BatchSize; row++, input++)
            {
                var sum = sums[textOfInput[input]] ??= new double[labels];
                for (int l = 0; l < labels; l++) sum[l] += flat[row * labels + l];
            }
        }
        if (input != textOfInput.Count) throw new ArgumentException($"{input} inputs in the batches for {textOfInput.Count} input positions.");
        return [.. sums.Select((sum, i) => sum is null ? throw new ArgumentException($"Text {i} has no input.") : Array.IndexOf(sum, sum.Max()))];
    }

    /// <summary>Loads a fine-tuned classifier, its label names and tokenizer.</summary>
    public static (BertForClassification Model, BertClassifierConfig Config, GptTokenizer Tokenizer) Load(string runDirectory)
    {
        var config = Checkpoint.ReadConfig<BertClassifierConfig>(runDirectory);
        var model = new BertForClassification(config.Bert, config.Labels.Count, config.Pooling);
        Checkpoint.LoadWeights(model, Checkpoint.WeightsPath(runDirectory));
        model.eval();
        return (model, config, GptTokenizer.Load(Checkpoint.ReadState(runDirectory).Tokenizer));
    }

    /// <summary>Label probabilities for one text: the softmax of its inputs' mean logits (its first context − 2 tokens, or every window).</summary>
    public static IReadOnlyList<(string Label, double Probability)> Classify(BertForClassification model, BertClassifierConfig config, GptTokenizer tokenizer, string text)
    {
        if (string.IsNullOrWhiteSpace(text)) throw new ArgumentException("The text is empty.", nameof(text));
        var inputs = Inputs(text, tokenizer, config).ToList();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var device = model.parameters().First().device;
        var (ids, mask, t) = EncoderExamples.Pad([.. inputs.Select(i => i.Tokens)], tokenizer.PadId);
        var logits = model.Logits(tensor(ids, [inputs.Count, t], device: device), tensor(mask, [inputs.Count, t], device: device)).mean([0]);
        var p = logits.softmax(-1).to(ScalarType.Float32).cpu().data<float>().ToArray();
        return [.. config.Labels.Select((label, i) => (label, (double)p[i])).OrderByDescending(x => x.Item2)];
    }
}
