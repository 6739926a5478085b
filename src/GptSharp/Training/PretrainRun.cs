using GptSharp.Runs;
using System.Text.Json;
using GptSharp.Data;
using GptSharp.Models;
using TorchSharp;

namespace GptSharp.Training;

/// <summary>
/// A whole pretraining run over prepared shards: model from a config, data loader, trainer, fresh start or resume,
/// <c>config.json</c>, checkpoints, metrics and the loss plot. The CLI's <c>pretrain</c> and the speedrun both use it.
/// </summary>
public static class PretrainRun
{
    /// <summary>Trains into <paramref name="runDirectory"/>; with <paramref name="resume"/> continues its checkpoint.</summary>
    /// <param name="onStart">Receives the model, the step training starts from and the optimiser (sharded or not), before the first step.</param>
    public static TrainingResult Execute(GptConfig config, TrainingConfig training, string dataDirectory, string runDirectory, bool resume,
        string device = "cpu", Action<Gpt, int, AdamW>? onStart = null, Action<StepMetrics>? onStep = null, CancellationToken cancellation = default)
    {
        config.Validate();
        training.Validate();
        var data = ShardSummary.Load(dataDirectory);
        if (data.VocabSize != config.VocabSize)
            throw new InvalidDataException($"{dataDirectory}: the data's vocab size is {data.VocabSize}, the model's {config.VocabSize}.");
        var torchDevice = torch.device(device);
        torch.manual_seed(training.Seed);
        using var model = new Gpt(config);
        model.to(torchDevice);
        using var train = new MappedTokenShard(Path.Combine(dataDirectory, ShardSummary.TrainFile));
        using var val = new MappedTokenShard(Path.Combine(dataDirectory, ShardSummary.ValFile));

        var (start, position) = Checkpoint.StartingPoint(runDirectory, resume);

        // Under mpirun with N processes: each takes every N-th window of the global batch and gradients are averaged,
        // so the run matches a single process with the same --batch-size.
        using var world = DataParallel.Join(training.BatchSize, training.ShardOptimizerState);
        int perProcess = training.BatchSize / (world?.Size ?? 1);
        var loader = new TokenBatchLoader(train, perProcess, config.ContextLength, training.Seed, position, world?.Rank ?? 0, world?.Size ?? 1);
        var trainer = new Trainer<TokenBatch>(model, training, runDirectory, data.Tokenizer, Pretraining.Objective(model, torchDevice),
            new ShardBatchSource(loader), Pretraining.ValidationLoss(model, val, training.BatchSize, config.ContextLength, training.EvalBatches, torchDevice))
        {
            OnStep = onStep,
            Parallel = world is null ? null : new DataParallel(world) { ShardOptimizerState = training.ShardOptimizerState },
        };
        bool root = world?.IsRoot ?? true;
        if (resume) trainer.Resume();
        else if (root) Checkpoint.WriteRunConfig(runDirectory, new { objective = "pretrain", model = config, training, processes = world?.Size ?? 1, data = Path.GetFullPath(dataDirectory), tokenizer = data.Tokenizer });
        onStart?.Invoke(model, start, trainer.Optimizer);
        var result = trainer.Run(start, cancellation: cancellation);
        if (root) LossPlot.Write(runDirectory, "Pretraining");
        return result;
    }
}
