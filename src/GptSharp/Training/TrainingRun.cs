using GptSharp.Data;
using GptSharp.Runs;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Training;

/// <summary>Where and how a training command runs: the run folder, whether it resumes, the optimiser settings and device.</summary>
/// <param name="Tokenizer">The tokenizer the model reads (a folder, copied into the run, or a built-in name).</param>
/// <param name="PlotTitle">Title of the run's <c>loss.png</c>.</param>
/// <param name="DataParallel">Whether the objective can train across MPI processes; when not, running it under mpirun is
/// an error instead of N processes writing one folder.</param>
public sealed record RunSetup(string Directory, TrainingConfig Training, bool Resume, string Tokenizer, string PlotTitle,
    string Device = "cpu", bool DataParallel = true, string Command = "this command");

/// <summary>What the scaffold knows before the objective is built: where training starts and which process this is.</summary>
/// <param name="DataPosition">The batch source's saved position (null for a fresh run).</param>
/// <param name="Tokenizer">How the run's files name its tokenizer: <c>tokenizer</c> (its copy) or a built-in name.</param>
public sealed record RunContext(int StartStep, string? DataPosition, int Rank, int Processes, Device Device, string Tokenizer)
{
    public bool IsRoot => Rank == 0;
    /// <summary>The saved position as "epoch:cursor" (the start for a fresh run).</summary>
    public LoaderPosition Position => DataPosition is null ? default : LoaderPosition.Parse(DataPosition);
}

/// <summary>What an objective supplies: its model (and the config record saved with it), batch source and loss.</summary>
/// <param name="Evaluate">Validation loss, every <see cref="TrainingConfig.EvalEvery"/> steps and at the end.</param>
/// <param name="Description">Written to the run's <c>config.json</c> on a fresh start (what was trained, from what, on what).</param>
public sealed record RunObjective<TBatch>(nn.Module Model, object ModelConfig, Func<TBatch, ObjectiveOutput> Loss, IBatchSource<TBatch> Batches,
    Func<double>? Evaluate, object Description);

/// <summary>How a run ended, and whether this process is the one that writes.</summary>
public sealed record RunOutcome(TrainingResult Training, bool IsRoot);

/// <summary>
/// The one run scaffold behind every training command (pretraining, SFT, reward, DPO, PPO, BERT): run folder,
/// <c>config.json</c>, a copy of the tokenizer, seeds, data-parallel wiring (rank 0 writes, sharded batches, gradient
/// all-reduce, ZeRO-1), the resume guard, metrics and the loss plot. An objective supplies only its model, batches and loss.
/// </summary>
public static class TrainingRun
{
    /// <param name="build">Builds the objective for this process; it shards its batches by <see cref="RunContext.Rank"/>.</param>
    /// <param name="onStart">Receives the step training starts from and the optimiser (sharded or not), before the first step.</param>
    /// <param name="untilStep">Stop there (with a checkpoint) on the full run's schedule.</param>
    public static RunOutcome Execute<TBatch>(RunSetup setup, Func<RunContext, RunObjective<TBatch>> build,
        Action<int, AdamW>? onStart = null, Action<StepMetrics>? onStep = null, CancellationToken cancellation = default, int? untilStep = null)
    {
        var training = setup.Training.Validate();
        var (start, position) = Checkpoint.Start(setup.Directory, setup.Resume);
        using var world = DataParallel.Join(training.BatchSize, training.ShardOptimizerState);
        if (world is not null && !setup.DataParallel)
            throw new NotSupportedException($"{setup.Command} does not train data-parallel: run it as one process, without mpirun.");
        torch.manual_seed(training.Seed);
        // A resumed run reads its own copy: the folder it was first copied from may be gone, or the run may have moved.
        string ownCopy = Path.Combine(setup.Directory, RunFolder.TokenizerFolder);
        string source = setup.Resume && Directory.Exists(ownCopy) ? ownCopy : setup.Tokenizer;
        string tokenizer = Directory.Exists(source) ? RunFolder.TokenizerFolder : source;
        var context = new RunContext(start, position, world?.Rank ?? 0, world?.Size ?? 1, torch.device(setup.Device), tokenizer);
        var objective = build(context);
        if (context.IsRoot)
        {
            Directory.CreateDirectory(setup.Directory);
            RunFolder.KeepTokenizer(setup.Directory, source);
        }
        var trainer = new Trainer<TBatch>(objective.Model, objective.ModelConfig, training, setup.Directory, tokenizer,
            objective.Loss, objective.Batches, objective.Evaluate)
        {
            OnStep = onStep,
            Parallel = world is null ? null : new DataParallel(world) { ShardOptimizerState = training.ShardOptimizerState },
        };
        if (setup.Resume) trainer.Resume();
        else if (context.IsRoot) Checkpoint.WriteRunConfig(setup.Directory, objective.Description);
        onStart?.Invoke(start, trainer.Optimizer);
        var result = trainer.Run(start, untilStep, cancellation);
        // A run stopped before its first logged step has nothing to plot yet.
        if (context.IsRoot && File.Exists(Path.Combine(setup.Directory, MetricsLog.FileName))) LossPlot.Write(setup.Directory, setup.PlotTitle);
        return new RunOutcome(result, context.IsRoot);
    }
}
