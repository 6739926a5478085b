using System.Globalization;
using System.Text.Json;
using GptSharp.Alignment;
using GptSharp.Data;
using GptSharp.Evaluation;
using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Runtime;
using GptSharp.Tokenization;
using GptSharp.Training;

namespace GptSharp.Speedrun;

/// <summary>What a speedrun may change: vocabulary, model preset and each stage's length. Everything else is the
/// stages' library defaults.</summary>
public sealed record SpeedrunOptions
{
    public int VocabSize { get; init; } = 8192;
    /// <summary>The Llama layout (rotary positions, RMSNorm, SwiGLU, untied head) at <c>tiny</c>'s size: lower loss than
    /// GPT-2's at the same pretraining time (<c>bench -- recipe</c>).</summary>
    public string Preset { get; init; } = "tiny-llama";
    /// <summary>As many steps as the earlier recipe's 1,500 AdamW steps of <c>tiny</c> took on 2 cores.</summary>
    public int PretrainSteps { get; init; } = 1350;
    public int SftSteps { get; init; } = SftRun.Defaults.Steps;
    /// <summary>Training titles the SFT model answers K times for on-policy comparisons.</summary>
    public int FeedbackPrompts { get; init; } = 720;
    /// <summary>Reward-model steps on the feedback comparisons: about two passes over them (16 titles' comparisons a step);
    /// more overfits them, as InstructGPT found.</summary>
    public int RewardSteps { get; init; } = 140;
    public int PpoSteps { get; init; } = PpoRun.Defaults.Steps;
    /// <summary>GRPO steps on the verse task, four a rollout (two passes over two minibatches): rhyme and the tonal rules
    /// are learnt in about 300, the strict score (no repeated character with them) still rises at 1,000.</summary>
    public int GrpoSteps { get; init; } = 1000;
    /// <summary>Also teach the calculator (the sft-tools and grpo-tools stages, arithmetic in the score; about 100 s on
    /// 2 cores). Off by default: the main job's twenty minutes go to the verse task's GRPO.</summary>
    public bool WithTools { get; init; }
    /// <summary>Fine-tuning steps that teach the SFT model to call the calculator (arithmetic conversations only): the
    /// <c>tiny</c> model starts copying numbers into its calls after about 500 (batches of 8).</summary>
    public int ToolSftSteps { get; init; } = 1000;
    /// <summary>GRPO steps on the arithmetic task with the calculator, from the tool-SFT model.</summary>
    public int ToolGrpoSteps { get; init; } = 30;
    /// <summary>DPO steps on the feedback comparisons (8 titles' comparisons a step).</summary>
    public int DpoSteps { get; init; } = 80;
    /// <summary>N of the best-of-N baseline: N poems per title, the reward model keeps one.</summary>
    public int BestOf { get; init; } = 4;
    /// <summary>Seed of every stage after SFT (feedback samples, reward model, PPO, GRPO, DPO); null: each stage's default.
    /// The RL seeds bench varies it to show how much RL results move from seed to seed.</summary>
    public long? AlignmentSeed { get; init; }
    /// <summary>Seed of every stage, pretraining and SFT included (an independently pretrained base); the alignment stages
    /// take <see cref="AlignmentSeed"/> when it is set. Null: each stage's default.</summary>
    public long? Seed { get; init; }
    /// <summary>Held-out titles for the verifiable form score.</summary>
    public int ScorePrompts { get; init; } = 200;
    /// <summary>Held-out items per evaluation task.</summary>
    public int EvalItems { get; init; } = 60;
}

/// <summary>
/// The speedrun as data: each stage's folder and settings. The <c>speedrun</c> command runs the stages from it and the
/// report card prints its commands, so a reported command trains exactly what the stage trained (same <c>config.json</c>).
/// </summary>
public sealed class SpeedrunPlan
{
    public const string FileName = "plan.json";
    public static readonly string[] TokenizerCorpora = ["tang", "songci", "sotu", "brown", "moby-dick"];
    public static readonly string[] PretrainCorpora = ["tang"];

    public SpeedrunPlan(string runDirectory, SpeedrunOptions? options = null)
    {
        RunDirectory = runDirectory;
        Options = options ?? new SpeedrunOptions();
    }

    public string RunDirectory { get; }
    public SpeedrunOptions Options { get; }

    public string Folder(string stage) => Path.Combine(RunDirectory, stage);
    public string Tokenizer => Folder("tokenizer");
    public string Data => Folder("data");
    public string Pretrain => Folder("pretrain");
    public string Sft => Folder("sft");
    public string Feedback => Folder("feedback");
    /// <summary>The on-policy comparisons the reward model and DPO learn from.</summary>
    public string FeedbackPairs => Path.Combine(Feedback, "pairs.jsonl");
    public string Reward => Folder("reward");
    public string Ppo => Folder("ppo");
    public string Policy => Path.Combine(Ppo, RlRun.PolicyFolder);
    public string Grpo => Folder("grpo");
    public string GrpoPolicy => Path.Combine(Grpo, RlRun.PolicyFolder);
    /// <summary>The SFT model taught to call the calculator.</summary>
    public string ToolSft => Folder("sft-tools");
    /// <summary>GRPO on arithmetic with the calculator.</summary>
    public string ToolGrpo => Folder("grpo-tools");
    public string ToolGrpoPolicy => Path.Combine(ToolGrpo, RlRun.PolicyFolder);
    public string Dpo => Folder("dpo");
    public string Export => Folder("export");

    public BpeTrainingOptions TokenizerTraining => new(Options.VocabSize);
    public ShardOptions Shards => new(PretrainCorpora);
    public GptConfig Model(int vocabSize) => GptConfig.Preset(Options.Preset, vocabSize);

    /// <summary>Pretraining: Muon for the blocks' matrices, AdamW at four times its usual rate for the embeddings, head and
    /// norms, both held at their peak and then decayed to zero over the last 40% of the steps (the recipe that won
    /// <c>bench -- recipe</c>); warmup, evaluation and checkpoints scaled to the short run.</summary>
    public TrainingConfig PretrainTraining => PretrainRun.Defaults with
    {
        Steps = Options.PretrainSteps, WarmupSteps = Math.Min(100, Options.PretrainSteps / 10), EvalEvery = 250, CheckpointEvery = 250,
        Optimizer = OptimizerKind.Muon, LearningRate = 0.012, WarmdownRatio = 0.4, MinLrRatio = 0,
        Seed = Options.Seed ?? PretrainRun.Defaults.Seed,
    };
    public TrainingConfig SftTraining => SftRun.Defaults with { Steps = Options.SftSteps, Seed = Options.Seed ?? SftRun.Defaults.Seed };
    public FeedbackOptions FeedbackSettings => AlignmentSeed is long seed ? new FeedbackOptions { Seed = seed } : new FeedbackOptions();
    public TrainingConfig RewardTraining => Seeded(RewardRun.Defaults with { Steps = Options.RewardSteps });
    public PpoConfig PpoSettings => new();
    public TrainingConfig PpoTraining => Seeded(PpoRun.Defaults with { Steps = Options.PpoSteps, BatchSize = PpoSettings.MiniBatch });
    /// <summary>DAPO's loss (token-level mean, the upper clip at 0.28) and two passes over each rollout: from the same SFT
    /// models and seeds, 250 rollouts so ended well above one pass of GRPO's loss, which in one run settled on a template
    /// with a repeated character and never left it (docs/results.md, 2026-12-06).</summary>
    public GrpoConfig GrpoSettings => new() { Loss = GrpoLoss.Dapo, Epochs = 2 };
    /// <summary>At three times GRPO's usual rate: at 1e-4, 300 steps took the rhyme from 4% to 23% of poems, at 3e-4 to 99%.</summary>
    public TrainingConfig GrpoTraining => Seeded(GrpoRun.Defaults with
    {
        Steps = Options.GrpoSteps, BatchSize = GrpoSettings.MiniBatch, LearningRate = 3e-4, CheckpointEvery = GrpoSettings.StepsPerRollout * GrpoSelectEvery,
    });
    /// <summary>Rollouts between GRPO's held-out measurements (and its checkpoints): 10, not the command's 5 — 25 measures
    /// of a score that rises to the end are enough, and the stage is 8 s shorter.</summary>
    public int GrpoSelectEvery => 10;
    /// <summary>Small batches, many steps, a constant rate higher than SFT's: copying numbers is learnt late, after a
    /// number of steps more than of examples (batches of 4 never got there in 1,500 steps, of 16 it took as long).</summary>
    public TrainingConfig ToolSftTraining => SftRun.Defaults with { Steps = Options.ToolSftSteps, BatchSize = 8, LearningRate = 1.5e-3, MinLrRatio = 1 };
    /// <summary>Sampling at 0.5: at 1.0 a half-taught model miscopies most numbers and few groups have a right answer to learn from.</summary>
    public GrpoConfig ToolGrpoSettings => new() { Tools = Arithmetic.ToolName, Rollout = new() { Temperature = 0.5 } };
    public TrainingConfig ToolGrpoTraining => Seeded(GrpoRun.Defaults with { Steps = Options.ToolGrpoSteps, BatchSize = ToolGrpoSettings.MiniBatch });
    public TrainingConfig DpoTraining => Seeded(DpoRun.Defaults with { Steps = Options.DpoSteps });

    TrainingConfig Seeded(TrainingConfig training) => AlignmentSeed is long seed ? training with { Seed = seed } : training;

    /// <summary>The seed of the stages after SFT: <see cref="SpeedrunOptions.AlignmentSeed"/>, else <see cref="SpeedrunOptions.Seed"/>.</summary>
    long? AlignmentSeed => Options.AlignmentSeed ?? Options.Seed;
    public double DpoBeta => DpoRun.DefaultBeta;

    /// <summary>The main job: every stage in order, its folder, the command that reproduces it (RUN stands for the
    /// speedrun's folder) and the function that runs it (<see cref="MainJob"/>).</summary>
    public IReadOnlyList<SpeedrunStage> Stages =>
    [
        new("tokenizer", "tokenizer", $"gptsharp tokenizer train --corpus {string.Join(',', TokenizerCorpora)} --vocab-size {Options.VocabSize} --out RUN/tokenizer", MainJob.Tokenizer),
        new("data", "data", $"gptsharp data prepare --corpus {string.Join(',', PretrainCorpora)} --tokenizer RUN/tokenizer --out RUN/data", MainJob.Data),
        new("pretrain", "pretrain", $"gptsharp pretrain --preset {Options.Preset} --data RUN/data --run-dir RUN/pretrain{Flags(PretrainTraining, PretrainRun.Defaults)}", MainJob.Pretrain),
        new("sft", "sft", $"gptsharp sft --from RUN/pretrain --data builtin --run-dir RUN/sft{Flags(SftTraining, SftRun.Defaults)}", MainJob.Sft),
        new("feedback", "feedback", $"gptsharp feedback collect --run-dir RUN/sft --task verse --prompts {Options.FeedbackPrompts} --out RUN/feedback/pairs.jsonl{(AlignmentSeed is long seed ? $" --seed {seed}" : "")}", MainJob.Feedback),
        new("reward", "reward", $"gptsharp reward --from RUN/sft --data RUN/feedback/pairs.jsonl --run-dir RUN/reward{Flags(RewardTraining, RewardRun.Defaults)}", MainJob.Reward),
        new("ppo", "ppo", $"gptsharp ppo --from RUN/sft --reward-model RUN/reward --task verse --run-dir RUN/ppo{Flags(PpoTraining, PpoRun.Defaults)}", MainJob.Ppo),
        new("grpo", "grpo", $"gptsharp grpo --from RUN/sft --task verse{GrpoFlags(GrpoSettings)} --select-every {GrpoSelectEvery} --run-dir RUN/grpo{Flags(GrpoTraining, GrpoRun.Defaults)}", MainJob.Grpo),
        new("dpo", "dpo", $"gptsharp dpo --from RUN/sft --data RUN/feedback/pairs.jsonl --run-dir RUN/dpo{Flags(DpoTraining, DpoRun.Defaults)}", MainJob.Dpo),
        .. Options.WithTools ? ToolStages : [],
        new("score", "score", $"gptsharp form-score --task verse --run-dir RUN/pretrain,RUN/sft,RUN/ppo/policy,RUN/grpo/policy,RUN/dpo --prompts {Options.ScorePrompts}; " +
                              $"gptsharp form-score --task verse --run-dir RUN/sft --best-of {Options.BestOf} --reward-model RUN/reward --prompts {Options.ScorePrompts}" +
                              (Options.WithTools ? $"; gptsharp arithmetic-score --run-dir RUN/sft,RUN/ppo/policy,RUN/grpo/policy,RUN/dpo,RUN/sft-tools,RUN/grpo-tools/policy --problems {RlTasks.ScoreProblems}" : ""),
            MainJob.Score),
        new("eval", "eval", $"gptsharp eval --run-dir RUN/pretrain,RUN/ppo/policy --shots 0,1,2,4 --items {Options.EvalItems}", MainJob.Eval),
        new("export", "export", "gptsharp export gguf --run-dir RUN/ppo/policy --out RUN/export/chat.gguf; gptsharp export hf --run-dir RUN/ppo/policy --out RUN/export/hf", MainJob.Export),
    ];

    /// <summary>Tool use, with <see cref="SpeedrunOptions.WithTools"/>: the SFT model taught to call the calculator, then GRPO on arithmetic with it.</summary>
    public IReadOnlyList<SpeedrunStage> ToolStages =>
    [
        new("sft-tools", "sft-tools", $"gptsharp sft --from RUN/sft --data arithmetic --run-dir RUN/sft-tools{Flags(ToolSftTraining, SftRun.Defaults)}", MainJob.ToolSft),
        new("grpo-tools", "grpo-tools", $"gptsharp grpo --from RUN/sft-tools --task arithmetic{GrpoFlags(ToolGrpoSettings)} --run-dir RUN/grpo-tools{Flags(ToolGrpoTraining, GrpoRun.Defaults)}", MainJob.ToolGrpo),
    ];

    /// <summary>The command-line options that turn a stage's defaults into <paramref name="training"/>.</summary>
    static string Flags(TrainingConfig training, TrainingConfig defaults)
    {
        var flags = new List<string>();
        foreach (var property in typeof(TrainingConfig).GetProperties())
        {
            object? value = property.GetValue(training), standard = property.GetValue(defaults);
            if (Equals(value, standard)) continue;
            if (!OptionNames.TryGetValue(property.Name, out string? option))
                throw new InvalidOperationException($"The speedrun sets {property.Name}, which no command-line option can: add one, or keep the stage's default.");
            flags.Add($" {option} {(value is Enum ? value.ToString()!.ToLowerInvariant() : Convert.ToString(value, CultureInfo.InvariantCulture))}");
        }
        return string.Concat(flags);
    }

    /// <summary>The <c>grpo</c> options that turn its defaults into <paramref name="settings"/> (the ones the speedrun changes;
    /// tools come from the task).</summary>
    static string GrpoFlags(GrpoConfig settings)
    {
        var standard = new GrpoConfig();
        var flags = new List<string>();
        if (settings.Loss != standard.Loss) flags.Add($" --loss {settings.Loss switch { GrpoLoss.DrGrpo => "dr_grpo", var loss => loss.ToString().ToLowerInvariant() }}");
        if (settings.Epochs != standard.Epochs) flags.Add($" --epochs {settings.Epochs}");
        if (settings.Rollout.Temperature != standard.Rollout.Temperature) flags.Add($" --temperature {settings.Rollout.Temperature.ToString(CultureInfo.InvariantCulture)}");
        if (settings with { Loss = standard.Loss, Epochs = standard.Epochs, Rollout = standard.Rollout with { Temperature = standard.Rollout.Temperature }, Tools = standard.Tools } != standard)
            throw new InvalidOperationException("The speedrun changes a GRPO setting its reported command does not carry: add its option here.");
        return string.Concat(flags);
    }

    /// <summary>The training commands' option for each <see cref="TrainingConfig"/> property.</summary>
    static readonly Dictionary<string, string> OptionNames = new()
    {
        [nameof(TrainingConfig.Steps)] = "--steps", [nameof(TrainingConfig.BatchSize)] = "--batch-size",
        [nameof(TrainingConfig.GradAccumulation)] = "--grad-accum", [nameof(TrainingConfig.LearningRate)] = "--lr",
        [nameof(TrainingConfig.MinLrRatio)] = "--min-lr-ratio", [nameof(TrainingConfig.WarmupSteps)] = "--warmup",
        [nameof(TrainingConfig.WeightDecay)] = "--weight-decay", [nameof(TrainingConfig.GradClip)] = "--grad-clip",
        [nameof(TrainingConfig.EvalEvery)] = "--eval-every", [nameof(TrainingConfig.EvalBatches)] = "--eval-batches",
        [nameof(TrainingConfig.CheckpointEvery)] = "--checkpoint-every", [nameof(TrainingConfig.Seed)] = "--seed",
        [nameof(TrainingConfig.TimeLimitSeconds)] = "--time-limit", [nameof(TrainingConfig.WarmdownRatio)] = "--warmdown",
        [nameof(TrainingConfig.Optimizer)] = "--optimizer", [nameof(TrainingConfig.MuonLearningRate)] = "--muon-lr",
        [nameof(TrainingConfig.MuonMomentum)] = "--muon-momentum",
    };

    /// <summary>Records the options in <c>RUN/plan.json</c>, for the report card and for reruns.</summary>
    public void Save()
    {
        Directory.CreateDirectory(RunDirectory);
        AtomicFile.WriteAllText(Path.Combine(RunDirectory, FileName), JsonSerializer.Serialize(Options, Checkpoint.Json));
    }

    /// <summary>The plan a speedrun folder recorded (the default plan for a folder from before plans were recorded).</summary>
    public static SpeedrunPlan Load(string runDirectory)
    {
        string path = Path.Combine(runDirectory, FileName);
        if (!File.Exists(path)) return new SpeedrunPlan(runDirectory);
        try { return new SpeedrunPlan(runDirectory, JsonSerializer.Deserialize<SpeedrunOptions>(File.ReadAllText(path), Checkpoint.Json)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: invalid JSON: {e.Message}", e); }
    }
}
