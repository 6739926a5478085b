namespace GptSharp.Training;

/// <summary>
/// How a model is optimised; shared by every objective (pretraining, SFT, reward, DPO, ...).
/// </summary>
public sealed record TrainingConfig
{
    public int Steps { get; init; } = 1000;
    /// <summary>Sequences per micro-batch.</summary>
    public int BatchSize { get; init; } = 16;
    /// <summary>Micro-batches whose gradients are summed before one optimiser step.</summary>
    public int GradAccumulation { get; init; } = 1;
    public double LearningRate { get; init; } = 3e-3;
    /// <summary>The schedule decays to LearningRate × MinLrRatio.</summary>
    public double MinLrRatio { get; init; } = 0.1;
    /// <summary>0: cosine decay after warmup; otherwise the rate holds at its peak and decays linearly over this last
    /// fraction of the steps (warmup–stable–decay, as the modded-nanogpt speedruns and nanochat schedule it).</summary>
    public double WarmdownRatio { get; init; }
    public int WarmupSteps { get; init; } = 50;
    /// <summary>Decoupled weight decay, applied to parameters with two or more dimensions only (not to biases or norms).</summary>
    public double WeightDecay { get; init; } = 0.1;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.95;
    public double Epsilon { get; init; } = 1e-8;
    /// <summary>Clip the global gradient norm to this (0: off).</summary>
    public double GradClip { get; init; } = 1.0;
    public int EvalEvery { get; init; } = 100;
    public int EvalBatches { get; init; } = 20;
    public int CheckpointEvery { get; init; } = 200;
    public int LogEvery { get; init; } = 10;
    public long Seed { get; init; } = 1337;
    /// <summary>Stop after this many seconds of training (0: no limit); a checkpoint is written at the stop.</summary>
    public double TimeLimitSeconds { get; init; }
    /// <summary>AdamW for every parameter, or Muon for the Transformer blocks' weight matrices (AdamW for the rest).</summary>
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.AdamW;
    /// <summary>Muon's peak learning rate (the schedule scales it as it scales <see cref="LearningRate"/>).</summary>
    public double MuonLearningRate { get; init; } = 0.02;
    /// <summary>Muon's momentum (Nesterov).</summary>
    public double MuonMomentum { get; init; } = 0.95;
    /// <summary>Under mpirun: ZeRO-1, each process keeps and updates the optimiser state of its share of the parameters only.</summary>
    public bool ShardOptimizerState { get; init; }

    public TrainingConfig Validate()
    {
        if (Steps < 1) throw new ArgumentOutOfRangeException(nameof(Steps), Steps, "Steps must be >= 1.");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be >= 1.");
        if (GradAccumulation < 1) throw new ArgumentOutOfRangeException(nameof(GradAccumulation), GradAccumulation, "GradAccumulation must be >= 1.");
        if (LearningRate <= 0) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "LearningRate must be > 0.");
        if (MinLrRatio is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(MinLrRatio), MinLrRatio, "MinLrRatio must be in [0, 1].");
        if (WarmdownRatio is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(WarmdownRatio), WarmdownRatio, "WarmdownRatio must be in [0, 1] (0: cosine).");
        if (WarmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(WarmupSteps), WarmupSteps, "WarmupSteps must be >= 0.");
        if (Beta1 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, "Beta1 must be in [0, 1).");
        if (Beta2 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, "Beta2 must be in [0, 1).");
        if (GradClip < 0) throw new ArgumentOutOfRangeException(nameof(GradClip), GradClip, "GradClip must be >= 0 (0: off).");
        if (EvalEvery < 1) throw new ArgumentOutOfRangeException(nameof(EvalEvery), EvalEvery, "EvalEvery must be >= 1.");
        if (CheckpointEvery < 1) throw new ArgumentOutOfRangeException(nameof(CheckpointEvery), CheckpointEvery, "CheckpointEvery must be >= 1.");
        if (MuonLearningRate <= 0) throw new ArgumentOutOfRangeException(nameof(MuonLearningRate), MuonLearningRate, "MuonLearningRate must be > 0.");
        if (MuonMomentum is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(MuonMomentum), MuonMomentum, "MuonMomentum must be in [0, 1).");
        return this;
    }

    /// <summary>Learning rate at a step: linear warmup, then cosine decay to LearningRate × MinLrRatio at the last step,
    /// or (with <see cref="WarmdownRatio"/>) the peak until the warmdown, then a straight line to that minimum.</summary>
    public double LearningRateAt(int step)
    {
        if (step < WarmupSteps) return LearningRate * (step + 1) / WarmupSteps;
        double minimum = LearningRate * MinLrRatio;
        if (WarmdownRatio > 0)
        {
            double warmdown = Math.Max(1, WarmdownRatio * (Steps - 1));
            double left = Steps - 1 - step;   // steps to the last one
            return left >= warmdown ? LearningRate : minimum + (LearningRate - minimum) * Math.Max(0, left) / warmdown;
        }
        double progress = Steps <= WarmupSteps ? 1 : Math.Min(1, (step - WarmupSteps) / (double)Math.Max(1, Steps - 1 - WarmupSteps));
        return minimum + 0.5 * (LearningRate - minimum) * (1 + Math.Cos(Math.PI * progress));
    }
}

/// <summary>Which optimiser updates the Transformer's weight matrices.</summary>
public enum OptimizerKind
{
    AdamW,
    /// <summary><see cref="Muon"/> for the blocks' matrices, AdamW for embeddings, the output head, norms and biases.</summary>
    Muon,
}
