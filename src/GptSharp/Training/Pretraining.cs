using GptSharp.Data;
using GptSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Training;

/// <summary>Batches of a token shard for the trainer; the position is "epoch:cursor".</summary>
public sealed class ShardBatchSource(TokenBatchLoader loader) : IBatchSource<TokenBatch>
{
    public TokenBatch Next() => loader.Next();
    public string Position => loader.Position.Format();
}

/// <summary>
/// The GPT objective: predict the next token; loss is the mean cross-entropy over targets that are not -1. Pretraining
/// targets every position; supervised fine-tuning sets non-assistant targets to -1.
/// </summary>
public static class Pretraining
{
    public static Func<TokenBatch, ObjectiveOutput> Objective(Gpt model, Device device) => batch =>
    {
        var inputs = tensor(batch.Inputs, [batch.BatchSize, batch.SequenceLength], device: device);
        var targets = tensor(batch.Targets, [batch.BatchSize, batch.SequenceLength], device: device);
        var logits = model.forward(inputs);
        return new ObjectiveOutput(Gpt.Loss(logits, targets), batch.Targets.LongCount(t => t >= 0));
    };

    /// <summary>Mean loss over a fixed list of batches (for held-out data that is not a shard).</summary>
    public static Func<double> ValidationLoss(Gpt model, IReadOnlyList<TokenBatch> batches, Device device) => () =>
    {
        double total = 0;
        foreach (var batch in batches)
        {
            using var scope = NewDisposeScope();
            total += Objective(model, device)(batch).Loss.item<float>();
        }
        return total / Math.Max(1, batches.Count);
    };

    /// <summary>Mean loss over the same <paramref name="batches"/> validation batches every time (fixed seed, from the start).</summary>
    public static Func<double> ValidationLoss(Gpt model, MappedTokenShard validation, int batchSize, int sequenceLength, int batches, Device device)
    {
        // A validation split smaller than one batch still gets evaluated, with fewer rows.
        long windows = (validation.Count - 1) / sequenceLength;
        int rows = (int)Math.Max(1, Math.Min(batchSize, windows));
        int count = (int)Math.Max(1, Math.Min(batches, windows / rows));
        var loader = new TokenBatchLoader(validation, rows, sequenceLength, seed: 0);
        return ValidationLoss(model, [.. Enumerable.Range(0, count).Select(_ => loader.Next())], device);
    }
}
