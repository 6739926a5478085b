using GptSharp.Runs;
using GptSharp.Runtime;
using System.Diagnostics;
using GptSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Training;

/// <summary>A stream of training batches whose position can be saved and restored.</summary>
public interface IBatchSource<out TBatch>
{
    TBatch Next();
    /// <summary>The position of the next batch, as text for <see cref="TrainingState.DataPosition"/>.</summary>
    string Position { get; }
}

/// <summary>What an objective returns for one micro-batch: the mean loss and the tokens (or examples) it covered.</summary>
public readonly record struct ObjectiveOutput(Tensor Loss, long Tokens);

/// <summary>One logged optimiser step.</summary>
public sealed record StepMetrics(int Step, double Loss, double LearningRate, double GradNorm, double TokensPerSecond, double ElapsedSeconds, double? ValLoss);

/// <summary>How a training run ended.</summary>
public sealed record TrainingResult(int StepsDone, double FinalLoss, double? FinalValLoss, double Seconds, bool StoppedEarly);

/// <summary>
/// The one training loop every objective uses (pretraining, SFT, reward, DPO, ...): gradient accumulation, global-norm
/// clipping, AdamW (or Muon for the blocks' matrices) with warmup and a cosine or warmdown schedule, periodic
/// evaluation, metrics.jsonl, atomic checkpoints and exact resume. The objective is a function from a batch to a loss;
/// everything else is shared.
/// </summary>
public sealed class Trainer<TBatch>
{
    readonly nn.Module _model;
    readonly object _modelConfig;
    readonly TrainingConfig _config;
    readonly string _runDirectory, _tokenizer;
    readonly Func<TBatch, ObjectiveOutput> _objective;
    readonly IBatchSource<TBatch> _batches;
    readonly Func<double>? _evaluate;

    /// <param name="evaluate">Returns the validation loss; called every <see cref="TrainingConfig.EvalEvery"/> steps and at the end.</param>
    public Trainer(Gpt model, TrainingConfig config, string runDirectory, string tokenizer,
        Func<TBatch, ObjectiveOutput> objective, IBatchSource<TBatch> batches, Func<double>? evaluate = null)
        : this(model, model.Config, config, runDirectory, tokenizer, objective, batches, evaluate)
    {
    }

    /// <summary>For any module: <paramref name="modelConfig"/> is the config record saved with its checkpoint (a reward
    /// model's or actor-critic's is its GPT backbone's; a BERT's is its <c>BertConfig</c>).</summary>
    public Trainer(nn.Module model, object modelConfig, TrainingConfig config, string runDirectory, string tokenizer,
        Func<TBatch, ObjectiveOutput> objective, IBatchSource<TBatch> batches, Func<double>? evaluate = null)
    {
        _model = model;
        _modelConfig = modelConfig;
        _config = config.Validate();
        _runDirectory = runDirectory;
        _tokenizer = tokenizer;
        _objective = objective;
        _batches = batches;
        _evaluate = evaluate;
        Optimizer = new AdamW(model.named_parameters(), config);
    }

    public AdamW Optimizer { get; }

    /// <summary>
    /// Data parallelism across MPI processes: gradients and the logged loss are averaged after each step's backward,
    /// parameters are checked to be identical every <see cref="SyncCheckEvery"/> steps, and only rank 0 writes metrics
    /// and checkpoints and reports steps.
    /// </summary>
    public DataParallel? Parallel
    {
        get => _parallel;
        init
        {
            _parallel = value;
            if (value is { ShardOptimizerState: true }) Optimizer.Shard(value.World.Rank, value.World.Size);
        }
    }
    readonly DataParallel? _parallel;

    public int SyncCheckEvery { get; init; } = 50;
    bool IsRoot => Parallel?.World.IsRoot ?? true;

    /// <summary>Called after every optimiser step (for progress displays).</summary>
    public Action<StepMetrics>? OnStep { get; set; }

    /// <summary>
    /// Trains from <paramref name="startStep"/> (0, or the step a resumed checkpoint reached) to
    /// <see cref="TrainingConfig.Steps"/> (or <paramref name="untilStep"/>, to stop part-way on the same schedule), the
    /// time limit, or cancellation — then writes a checkpoint.
    /// </summary>
    public TrainingResult Run(int startStep = 0, int? untilStep = null, CancellationToken cancellation = default)
    {
        int lastStep = Math.Min(untilStep ?? _config.Steps, _config.Steps);
        var metrics = IsRoot ? new MetricsLog(_runDirectory, startStep) : null;
        var watch = Stopwatch.StartNew();
        double lastLoss = double.NaN;
        double? lastVal = null;
        int step = startStep;
        bool stoppedEarly = false;
        _model.train();
        while (step < lastStep)
        {
            bool stop = cancellation.IsCancellationRequested || (_config.TimeLimitSeconds > 0 && watch.Elapsed.TotalSeconds >= _config.TimeLimitSeconds);
            if (Parallel is not null) stop = Parallel.Average(stop ? 1 : 0) > 0; // every process stops at the same step
            if (stop)
            {
                stoppedEarly = true;
                break;
            }
            var stepWatch = Stopwatch.StartNew();
            double lr = _config.LearningRateAt(step);
            double lossSum = 0, gradNorm;
            long tokens = 0;
            using (var scope = NewDisposeScope())
            {
                Optimizer.ZeroGrad();
                for (int micro = 0; micro < _config.GradAccumulation; micro++)
                {
                    using var microScope = NewDisposeScope();
                    var output = _objective(_batches.Next());
                    var loss = output.Loss;
                    // Each process's loss is a mean over its own tokens; weighted by its share of them, the averaged
                    // gradients are those of the mean over the whole global batch, as one process would compute it.
                    if (Parallel is not null) loss = loss * (output.Tokens / Math.Max(1e-9, Parallel.Average(output.Tokens)));
                    (loss / _config.GradAccumulation).backward();
                    lossSum += loss.item<float>();
                    tokens += output.Tokens;
                }
                bool sharded = Parallel is { ShardOptimizerState: true };
                if (Parallel is not null)
                {
                    if (sharded) Parallel.ReduceGradientsToOwners(Optimizer);
                    else Parallel.AverageGradients(Optimizer.Parameters);
                    lossSum = Parallel.Average(lossSum);
                    tokens *= Parallel.World.Size;
                }
                gradNorm = sharded ? Parallel!.ShardedGradNorm(Optimizer) : Optimizer.GradNorm();
                // Clipping scales the gradients inside the update rather than in a pass of its own.
                double gradScale = _config.GradClip > 0 && gradNorm > _config.GradClip ? _config.GradClip / (gradNorm + 1e-6) : 1;
                Optimizer.Step(lr, gradScale);
                if (sharded) Parallel!.BroadcastUpdatedParameters(Optimizer);
            }
            TorchRuntime.ReleaseStepGarbage();
            step++;
            lastLoss = lossSum / _config.GradAccumulation;
            if (!double.IsFinite(lastLoss))
                throw new InvalidOperationException($"Training diverged at step {step}: loss is {lastLoss}. Lower --learning-rate or check the data; " +
                    (Checkpoint.Find(_runDirectory) is null ? "no checkpoint was written before it." : "the last checkpoint is intact."));

            double tokensPerSecond = tokens / stepWatch.Elapsed.TotalSeconds; // training only, before any evaluation
            double? val = null;
            if (_evaluate is not null && (step % _config.EvalEvery == 0 || step == _config.Steps)) lastVal = val = Evaluate();
            var record = new StepMetrics(step, lastLoss, lr, gradNorm, tokensPerSecond, watch.Elapsed.TotalSeconds, val);
            if (Parallel is not null && (step % SyncCheckEvery == 0 || step == lastStep)) Parallel.CheckInSync(Optimizer.Parameters, step);
            if (IsRoot)
            {
                if (step % _config.LogEvery == 0 || val is not null || step == _config.Steps) metrics!.Append(record);
                OnStep?.Invoke(record);
            }
            if (step % _config.CheckpointEvery == 0) SaveCheckpoint(step, lastVal);
        }
        if (stoppedEarly && _evaluate is not null) lastVal = Evaluate();
        SaveCheckpoint(step, lastVal);
        Parallel?.World.Barrier(); // no process reads the checkpoint before it is whole
        return new TrainingResult(step - startStep, lastLoss, lastVal, watch.Elapsed.TotalSeconds, stoppedEarly);
    }

    /// <summary>Restores model, optimiser, RNG and returns the step to continue from; the caller restores the batch source from <see cref="TrainingState.DataPosition"/>.</summary>
    public TrainingState Resume() => Checkpoint.Resume(_runDirectory, _model, _modelConfig, Optimizer);

    double Evaluate()
    {
        _model.eval();
        try
        {
            using var noGrad = no_grad();
            return _evaluate!();
        }
        finally
        {
            _model.train();
        }
    }

    /// <summary>Every process calls this; the root writes. Under ZeRO-1 the others stream their optimiser state to it.</summary>
    void SaveCheckpoint(int step, double? valLoss)
    {
        bool sharded = Parallel is { ShardOptimizerState: true };
        if (!IsRoot)
        {
            if (sharded) Parallel!.SendOptimizerState(Optimizer);
            return;
        }
        Checkpoint.Save(_runDirectory, _model, _modelConfig, Optimizer, new TrainingState(step, _batches.Position, Checkpoint.CaptureRng(), _tokenizer, valLoss),
            sharded ? i => Parallel!.ReceiveOptimizerState(Optimizer, i) : null);
    }
}
