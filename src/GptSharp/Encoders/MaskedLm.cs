using GptSharp.Training;
using GptSharp.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Encoders;

/// <summary>A padded encoder batch: inputs (B, T), targets (B, T; −1 = no loss) and key mask (B, T; true = real token).</summary>
public sealed record EncoderBatch(long[] Inputs, long[] Targets, bool[] KeyMask, int BatchSize, int SequenceLength, LoaderPosition Next);

/// <summary>
/// Serves masked-LM batches: examples shuffled per epoch from the seed, masked afresh each time with a generator
/// seeded by the batch's position (so a resumed run masks exactly as an uninterrupted one), padded to the longest.
/// </summary>
public sealed class MlmBatchSource : IBatchSource<EncoderBatch>
{
    readonly IReadOnlyList<EncoderExample> _examples;
    readonly MlmMasker _masker;
    readonly int _batchSize, _padId, _rank, _processes;
    readonly long _seed;
    readonly EpochOrder _order;
    LoaderPosition _position;

    /// <param name="rank">Of <paramref name="processes"/> data-parallel processes, this one takes every processes-th example
    /// of each (global) batch, masked exactly as one process would mask it.</param>
    public MlmBatchSource(IReadOnlyList<EncoderExample> examples, MlmMasker masker, int batchSize, int padId, long seed, LoaderPosition position = default,
        int rank = 0, int processes = 1)
    {
        if (examples.Count < batchSize) throw new InvalidDataException($"{examples.Count} examples are fewer than one batch of {batchSize}.");
        (_examples, _masker, _batchSize, _padId, _seed, _position, _rank, _processes) = (examples, masker, batchSize, padId, seed, position, rank, processes);
        _order = EpochOrder.Seeded(examples.Count, seed);
    }

    public string Position => _position.Format();

    public EncoderBatch Next()
    {
        var indices = _order.NextBatch(ref _position, _batchSize);
        // Masks drawn from the batch's own position, so a resumed run masks exactly as an uninterrupted one.
        long epoch = _position.Epoch, start = _position.Cursor - _batchSize;
        var random = new Random((int)((_seed * 1_000_003 + epoch * 7919 + start * 104_729) & 0x7fffffff));
        var masked = indices.Select(i => _examples[i]).Select(r => _masker.Mask(r.Tokens, r.WordIds, random)).Where((_, i) => i % _processes == _rank).ToList();
        return Pack(masked, _padId, _position);
    }

    /// <summary>Masks and pads examples into one batch (fixed <paramref name="random"/> → fixed masks, as for validation).</summary>
    public static EncoderBatch Pack(IReadOnlyList<EncoderExample> rows, MlmMasker masker, int padId, Random random, LoaderPosition next = default)
        => Pack([.. rows.Select(r => masker.Mask(r.Tokens, r.WordIds, random))], padId, next);

    static EncoderBatch Pack(IReadOnlyList<(long[] Inputs, long[] Targets)> masked, int padId, LoaderPosition next)
    {
        var (inputs, keyMask, t) = EncoderExamples.Pad([.. masked.Select(m => m.Inputs)], padId);
        var (targets, _, _) = EncoderExamples.Pad([.. masked.Select(m => m.Targets)], -1); // padding is never a target
        return new EncoderBatch(inputs, targets, keyMask, masked.Count, t, next);
    }
}

/// <summary>Masked-token loss and accuracy of a held-out set.</summary>
public sealed record MaskedLmScore(double Loss, double Accuracy, long MaskedTokens);

/// <summary>The masked-LM objective: cross-entropy of the original token at each chosen position only.</summary>
public static class MaskedLm
{
    public static Func<EncoderBatch, ObjectiveOutput> Objective(BertForMaskedLm model, Device device) => batch =>
    {
        var (logits, targets) = MaskedLogits(model, batch, device);
        return new ObjectiveOutput(nn.functional.cross_entropy(logits, targets), targets.shape[0]);
    };

    /// <summary>Logits (M, V) and original tokens (M) at the batch's M chosen positions; the head runs on those alone.</summary>
    public static (Tensor Logits, Tensor Targets) MaskedLogits(BertForMaskedLm model, EncoderBatch batch, Device device)
    {
        var inputs = tensor(batch.Inputs, [batch.BatchSize, batch.SequenceLength], device: device);
        var keyMask = tensor(batch.KeyMask, [batch.BatchSize, batch.SequenceLength], device: device);
        var targets = tensor(batch.Targets, device: device);
        var chosen = (targets >= 0).nonzero().squeeze(1);
        if (chosen.shape[0] == 0) throw new InvalidDataException("A masked-LM batch has no chosen token; use longer texts or a larger batch.");
        var hidden = model.Encoder.Hidden(inputs, null, keyMask);
        var logits = model.Head(hidden.view(-1, hidden.shape[2]).index_select(0, chosen));
        return (logits, targets.index_select(0, chosen));
    }

    /// <summary>Loss and top-1 accuracy over fixed validation batches (masks drawn once, so every evaluation is comparable).</summary>
    public static MaskedLmScore Evaluate(BertForMaskedLm model, IReadOnlyList<EncoderBatch> batches, Device device)
    {
        using var noGrad = no_grad();
        double lossSum = 0;
        long correct = 0, total = 0;
        foreach (var batch in batches)
        {
            using var scope = NewDisposeScope();
            var (logits, targets) = MaskedLogits(model, batch, device);
            long n = targets.shape[0];
            lossSum += nn.functional.cross_entropy(logits, targets, reduction: nn.Reduction.Sum).item<float>();
            correct += logits.argmax(-1).eq(targets).sum().item<long>();
            total += n;
        }
        return new MaskedLmScore(lossSum / Math.Max(1, total), correct / (double)Math.Max(1, total), total);
    }
}
