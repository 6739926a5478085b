using System.ComponentModel;
using GptSharp.Training;
using Spectre.Console.Cli;

namespace GptSharp.Cli;

/// <summary>
/// The optimiser options every training command takes. Unset, each takes the stage's default from its library
/// record (<see cref="StageDefaults"/>), which <c>--help</c> shows; the option names match <see cref="TrainingConfig"/>'s.
/// </summary>
public abstract class TrainingSettings : CommonSettings, ILibraryDefaults
{
    /// <summary>The stage's defaults, from the library (e.g. <c>SftRun.Defaults</c>).</summary>
    protected abstract TrainingConfig StageDefaults { get; }
    public virtual IEnumerable<object> Defaults => [StageDefaults];

    [CommandOption("--resume")] [Description("Continue the run folder's checkpoint (RL runs: from the rollout after the one it saved).")]
    public bool Resume { get; init; }
    [CommandOption("--device")] [Description("cpu, cuda, cuda:N or auto.")]
    public string Device { get; init; } = "cpu";
    /// <summary>The run's folder, device and reports as the trainers take them, with this command's --resume (and LoRA, where it has it).</summary>
    public RunOptions Run(string runDirectory, string device, Action<StepMetrics> onStep, CancellationToken cancellation) =>
        new(runDirectory) { Resume = Resume, Device = device, OnStep = onStep, Cancellation = cancellation, Lora = Lora() };

    /// <summary>The LoRA settings, or null to train every weight (commands without LoRA options).</summary>
    public virtual GptSharp.Models.LoraConfig? Lora() => null;

    [CommandOption("--steps")] [Description("Optimiser steps.")]
    public int? Steps { get; init; }
    [CommandOption("--batch-size")] [Description("Sequences (or pairs) per step, over all processes under mpirun.")]
    public int? BatchSize { get; init; }
    [CommandOption("--grad-accum")] [Description("Micro-batches whose gradients are summed into one step.")]
    public int? GradAccumulation { get; init; }
    [CommandOption("--lr")] [Description("Peak learning rate.")]
    public double? LearningRate { get; init; }
    [CommandOption("--min-lr-ratio")] [Description("The schedule ends at lr × this (1: constant).")]
    public double? MinLrRatio { get; init; }
    [CommandOption("--warmdown")] [Description("0: cosine decay after warmup; else hold the peak rate and decay linearly over this last fraction of the steps.")]
    public double? WarmdownRatio { get; init; }
    [CommandOption("--warmup")] [Description("Linear warmup steps.")]
    public int? WarmupSteps { get; init; }
    [CommandOption("--weight-decay")] [Description("Decoupled weight decay on matrices (not biases or norms).")]
    public double? WeightDecay { get; init; }
    [CommandOption("--grad-clip")] [Description("Clip the global gradient norm to this (0: off).")]
    public double? GradClip { get; init; }
    [CommandOption("--eval-every")] [Description("Held-out loss every this many steps (and at the end).")]
    public int? EvalEvery { get; init; }
    [CommandOption("--eval-batches")] [Description("Held-out batches per evaluation.")]
    public int? EvalBatches { get; init; }
    [CommandOption("--checkpoint-every")] [Description("Write a checkpoint every this many steps (and at the end).")]
    public int? CheckpointEvery { get; init; }
    [CommandOption("--seed")] [Description("Seeds initialisation, data order and sampling.")]
    public long? Seed { get; init; }
    [CommandOption("--time-limit")] [Description("Stop (with a checkpoint) after this many seconds (0: no limit).")]
    public double? TimeLimitSeconds { get; init; }
    [CommandOption("--optimizer")] [Description("adamw, or muon: Muon for the Transformer blocks' weight matrices, AdamW (at --lr) for embeddings, head, norms and biases.")]
    public OptimizerKind? Optimizer { get; init; }
    [CommandOption("--muon-lr")] [Description("Muon's peak learning rate (with --optimizer muon; the schedule scales it like --lr).")]
    public double? MuonLearningRate { get; init; }
    [CommandOption("--muon-momentum")] [Description("Muon's Nesterov momentum.")]
    public double? MuonMomentum { get; init; }
    [CommandOption("--zero1")] [Description("Under mpirun: each process keeps the optimiser state of its share of the weights only (ZeRO-1).")]
    public bool Zero1 { get; init; }

    /// <summary>The stage's defaults with the options given on the command line in their place.</summary>
    public TrainingConfig Training() => OptionDefaults.Apply(this, StageDefaults) with { ShardOptimizerState = Zero1 };

    /// <summary>The seed the data split and the run use.</summary>
    public long RunSeed => Seed ?? StageDefaults.Seed;
}
