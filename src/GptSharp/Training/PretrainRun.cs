using GptSharp.Data;
using GptSharp.Models;
using GptSharp.Runs;
using TorchSharp;

namespace GptSharp.Training;

/// <summary>
/// A whole pretraining run over prepared shards, on the run scaffold: a model from a config, the shard loader (each MPI
/// process takes every N-th window of the global batch) and the next-token loss. The CLI's <c>pretrain</c> and the
/// speedrun both use it.
/// </summary>
public static class PretrainRun
{
    /// <summary>The optimiser settings <c>pretrain</c> uses unless told otherwise.</summary>
    public static TrainingConfig Defaults { get; } = new();

    /// <summary>Trains into the run folder of <paramref name="options"/>; with <see cref="RunOptions.Resume"/> continues its checkpoint.</summary>
    /// <param name="onStart">Receives the model, the step training starts from and the optimiser (sharded or not), before the first step.</param>
    public static TrainingResult Execute(GptConfig config, TrainingConfig training, string dataDirectory, RunOptions options,
        Action<Gpt, int, AdamW>? onStart = null)
    {
        var (runDirectory, resume, device, onStep, cancellation) = options;
        options.RejectLora("Pretraining");
        config.Validate();
        var data = ShardSummary.Load(dataDirectory);
        if (data.VocabSize != config.VocabSize)
            throw new InvalidDataException($"{dataDirectory}: the data's vocab size is {data.VocabSize}, the model's {config.VocabSize}.");
        using var train = new MappedTokenShard(Path.Combine(dataDirectory, ShardSummary.TrainFile));
        using var val = new MappedTokenShard(Path.Combine(dataDirectory, ShardSummary.ValFile));
        Gpt? model = null;
        try
        {
            return TrainingRun.Execute(new RunSetup(runDirectory, training, resume, data.Tokenizer, "Pretraining", device), run =>
            {
                model = new Gpt(config);
                model.to(run.Device);
                var loader = new TokenBatchLoader(train, training.BatchSize / run.Processes, config.ContextLength, training.Seed, run.Position, run.Rank, run.Processes);
                return new RunObjective<TokenBatch>(model, config, Pretraining.Objective(model, run.Device), new ShardBatchSource(loader),
                    Pretraining.ValidationLoss(model, val, training.BatchSize, config.ContextLength, training.EvalBatches, run.Device),
                    new { objective = "pretrain", model = config, training, processes = run.Processes, data = RunFolder.Reference(runDirectory, dataDirectory), tokenizer = run.Tokenizer });
            }, (start, optimizer) => onStart?.Invoke(model!, start, optimizer), onStep, cancellation).Training;
        }
        finally
        {
            model?.Dispose();
        }
    }
}
