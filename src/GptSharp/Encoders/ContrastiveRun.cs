using GptSharp.Data;
using GptSharp.Runs;
using GptSharp.Tokenization;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Encoders;

/// <summary>How contrastive training reads vectors: the pooling (the one the run will be served with) and the softmax temperature over cosine similarities.</summary>
public sealed record ContrastiveConfig(Pooling Pooling = Pooling.Mean, double Temperature = 0.05)
{
    public ContrastiveConfig Validate() => Temperature is > 0 and <= 1 ? this
        : throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "The temperature must be in (0, 1]; 0.05 is usual.");
}

/// <summary>A batch of pairs: queries (B, Tq) and positives (B, Tp), each padded with its key mask, and each pair's group (B).</summary>
public sealed record PairBatch(long[] Queries, bool[] QueryMask, int QueryLength, long[] Positives, bool[] PositiveMask, int PositiveLength,
    long[] Groups, int Pairs, LoaderPosition Next);

/// <summary>Serves pair batches shuffled per epoch from the seed; position "epoch:cursor".</summary>
public sealed class PairBatchSource : IBatchSource<PairBatch>
{
    readonly IReadOnlyList<EncodedPair> _pairs;
    readonly int _batchSize, _padId, _rank, _processes;
    readonly EpochOrder _order;
    LoaderPosition _position;

    public PairBatchSource(IReadOnlyList<EncodedPair> pairs, int batchSize, int padId, long seed, LoaderPosition position = default, int rank = 0, int processes = 1)
    {
        if (pairs.Count < batchSize) throw new InvalidDataException($"{pairs.Count} pairs are fewer than one batch of {batchSize}.");
        (_pairs, _batchSize, _padId, _position, _rank, _processes) = (pairs, batchSize, padId, position, rank, processes);
        _order = EpochOrder.Seeded(pairs.Count, seed);
    }

    public string Position => _position.Format();

    public PairBatch Next() => Pack([.. _order.NextBatch(ref _position, _batchSize, _rank, _processes).Select(i => _pairs[i])], _padId, _position);

    public static PairBatch Pack(IReadOnlyList<EncodedPair> pairs, int padId, LoaderPosition next = default)
    {
        var (queries, queryMask, tq) = EncoderExamples.Pad([.. pairs.Select(p => p.Query.Tokens)], padId);
        var (positives, positiveMask, tp) = EncoderExamples.Pad([.. pairs.Select(p => p.Positive.Tokens)], padId);
        return new PairBatch(queries, queryMask, tq, positives, positiveMask, tp, [.. pairs.Select(p => (long)p.Group)], pairs.Count, next);
    }
}

/// <summary>A pair as encoder inputs (each text's first context − 2 tokens).</summary>
public sealed record EncodedPair(EncoderExample Query, EncoderExample Positive, int Group);

/// <summary>What contrastive training reports: the trainer's result and the held-out contrastive loss.</summary>
public sealed record ContrastiveReport(TrainingResult Training, double HeldOutLoss, int TrainPairs, int HeldOutPairs);

/// <summary>
/// Contrastive training of a BERT encoder (SimCSE / sentence-transformers' multiple-negatives ranking): each query's
/// vector is pulled toward its positive's and pushed from every other positive in the batch (InfoNCE, both directions).
/// Starts from a <c>bert pretrain</c> run and writes one of the same shape (the masked-LM head carried over, frozen), so
/// <c>serve</c> embeds with it and <c>bert finetune</c> starts from it.
/// </summary>
public static class ContrastiveRun
{
    /// <summary>What <c>bert contrastive</c> uses unless told otherwise: 300 steps of 32 pairs, learning rate 1e-4.</summary>
    public static TrainingConfig Defaults { get; } = BertPretrainRun.Defaults with { Steps = 300, LearningRate = 1e-4, WarmupSteps = 30, EvalEvery = 100, CheckpointEvery = 100 };

    public static ContrastiveReport Execute(string fromRun, ContrastiveData data, TrainingConfig training, ContrastiveConfig contrastive, RunOptions options)
    {
        var (runDirectory, resume, device, onStep, cancellation) = options;
        options.RejectLora("contrastive training");
        training.Validate();
        contrastive.Validate();
        var (pretrained, tokenizer) = BertPretrainRun.Load(fromRun);
        using var _ = pretrained;
        string tokenizerName = Checkpoint.ReadState(fromRun).Tokenizer;
        var config = pretrained.Config;
        var train = Encode(data.Train, tokenizer, config.ContextLength);
        var heldOut = Encode(data.HeldOut, tokenizer, config.ContextLength);
        BertForMaskedLm? built = null;
        List<PairBatch> validation = [];
        var outcome = TrainingRun.Execute(new RunSetup(runDirectory, training, resume, tokenizerName, "BERT contrastive training", device), run =>
        {
            var model = built = new BertForMaskedLm(config);
            model.load_state_dict(pretrained.state_dict());
            foreach (var (name, parameter) in model.named_parameters())
                if (!name.StartsWith("bert.", StringComparison.Ordinal)) parameter.requires_grad = false;   // the masked-LM head rides along unchanged
            model.to(run.Device);
            var source = new PairBatchSource(train, training.BatchSize, tokenizer.PadId, training.Seed, run.Position, run.Rank, run.Processes);
            validation = heldOut.Chunk(training.BatchSize).Where(rows => rows.Length >= 2).Select(rows => PairBatchSource.Pack(rows, tokenizer.PadId)).ToList();
            return new RunObjective<PairBatch>(model, config, Objective(model.Encoder, contrastive, run.Device), source,
                () => HeldOutLoss(model.Encoder, validation.Take(training.EvalBatches), contrastive, run.Device), new
                {
                    objective = "contrastive", from = RunFolder.Reference(runDirectory, fromRun), model = config, contrastive, training, tokenizer = run.Tokenizer,
                    trainPairs = train.Count, heldOutPairs = heldOut.Count,
                });
        }, onStep: onStep, cancellation: cancellation);
        using var trained = built!;
        trained.eval();
        return new ContrastiveReport(outcome.Training, HeldOutLoss(trained.Encoder, validation, contrastive, torch.device(device)), train.Count, heldOut.Count);
    }

    static List<EncodedPair> Encode(IReadOnlyList<TextPair> pairs, GptTokenizer tokenizer, int contextLength) =>
        [.. pairs.Select(p => new EncodedPair(EncoderExamples.Truncated(p.Query, tokenizer, contextLength), EncoderExamples.Truncated(p.Positive, tokenizer, contextLength), p.Group))];

    /// <summary>
    /// InfoNCE over cosine similarities, averaged over both directions: query i's positive is positive i among the batch's
    /// positives, and positive i's query is query i. queries, positives (B, C); groups (B), where pairs of one group ≥ 0
    /// are not each other's negatives (their similarities are left out of the softmax).
    /// </summary>
    public static Tensor Loss(Tensor queries, Tensor positives, double temperature, Tensor? groups = null)
    {
        using var scope = NewDisposeScope();
        long pairs = queries.shape[0];
        var logits = Unit(queries).mm(Unit(positives).t()) / temperature;   // (B, B): query i against positive j
        if (groups is not null)
        {
            var alike = groups.unsqueeze(1).eq(groups.unsqueeze(0)).logical_and(groups.ge(0).unsqueeze(1))
                .logical_and(eye(pairs, dtype: ScalarType.Bool, device: groups.device).logical_not());
            logits = logits.masked_fill(alike, double.NegativeInfinity);
        }
        var targets = arange(pairs, dtype: ScalarType.Int64, device: queries.device);
        return ((nn.functional.cross_entropy(logits, targets) + nn.functional.cross_entropy(logits.t(), targets)) / 2).MoveToOuterDisposeScope();
    }

    static Tensor Unit(Tensor x) => x / x.norm(-1, keepdim: true).clamp_min(1e-12);

    static Func<PairBatch, ObjectiveOutput> Objective(Bert encoder, ContrastiveConfig contrastive, Device device) => batch =>
        new ObjectiveOutput(BatchLoss(encoder, batch, contrastive, device), batch.Pairs);

    static Tensor BatchLoss(Bert encoder, PairBatch batch, ContrastiveConfig contrastive, Device device)
    {
        using var scope = NewDisposeScope();
        var queries = Vectors(encoder, batch.Queries, batch.QueryMask, batch.Pairs, batch.QueryLength, contrastive.Pooling, device);
        var positives = Vectors(encoder, batch.Positives, batch.PositiveMask, batch.Pairs, batch.PositiveLength, contrastive.Pooling, device);
        return Loss(queries, positives, contrastive.Temperature, tensor(batch.Groups, device: device)).MoveToOuterDisposeScope();
    }

    static Tensor Vectors(Bert encoder, long[] ids, bool[] mask, int rows, int length, Pooling pooling, Device device)
    {
        var keyMask = tensor(mask, [rows, length], device: device);
        return BertEmbeddings.Pool(encoder.Hidden(tensor(ids, [rows, length], device: device), null, keyMask), keyMask, pooling);   // (B, C)
    }

    /// <summary>The mean contrastive loss per pair over batches (no gradients).</summary>
    static double HeldOutLoss(Bert encoder, IEnumerable<PairBatch> batches, ContrastiveConfig contrastive, Device device)
    {
        using var noGrad = no_grad();
        double sum = 0;
        int pairs = 0;
        foreach (var batch in batches)
        {
            using var scope = NewDisposeScope();
            sum += BatchLoss(encoder, batch, contrastive, device).item<float>() * batch.Pairs;
            pairs += batch.Pairs;
        }
        return sum / Math.Max(1, pairs);
    }
}
