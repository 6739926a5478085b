using GptSharp.Evaluation;
using GptSharp.Runtime;
using System.ComponentModel;
using GptSharp.Alignment;
using GptSharp.Training;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class PpoSettings : AdaptableSettings
{
    [CommandOption("--from")] [Description("The SFT run: the actor starts from it and it is the frozen reference.")]
    public string Sft { get; init; } = "runs/sft";
    [CommandOption("--reward-model")] [Description("The reward-model run: frozen scorer, and the critic's starting point.")]
    public string Reward { get; init; } = "runs/reward";
    [CommandOption("-r|--run-dir")] [Description("Folder for the PPO run; the tuned policy goes to its policy/ folder.")]
    public string RunDir { get; init; } = "runs/ppo";
    [CommandOption("--scorer")] [Description("`reward-model`, or `form`: 1 for a regular poem, else 0 (a program, not a learned reward).")]
    public string Scorer { get; init; } = "reward-model";
    [CommandOption("--task")] [Description("The prompts and the gold check: `form` (write a poem for a title; 1 for a regular form) or `verse` (a poem for a title and its instruction, gold the strict verse check; see gptsharp verse check).")]
    public string Task { get; init; } = "form";
    [CommandOption("--select-every")] [Description("Measure the held-out gold (form) score every this many rollouts and keep the best policy (0: keep the last).")]
    public int SelectEvery { get; init; } = 5;
    [CommandOption("--ptx-data")] [Description("Token shards (from `data prepare`) for the ptx loss (default: none, no ptx loss).")]
    public string? PtxData { get; init; }

    // PPO's own settings, named as PpoConfig's properties.
    [CommandOption("--kl")] [Description("KL penalty coefficient against the reference.")]
    public double? KlCoefficient { get; init; }
    [CommandOption("--kl-target")] [Description("Adaptive KL: scale the coefficient after each rollout towards this mean KL per answer (default: fixed).")]
    public double? KlTarget { get; init; }
    [CommandOption("--normalize-rewards")] [Description("Normalise scores by their running mean and standard deviation (`--normalize-rewards false` turns it off).")]
    public bool? NormalizeRewards { get; init; }
    [CommandOption("--kl-estimator")] [Description("K1 or K3.")]
    public KlEstimator? RewardKl { get; init; }
    [CommandOption("--rollout")] [Description("Prompts sampled per rollout (one answer each).")]
    public int? RolloutPrompts { get; init; }
    [CommandOption("--epochs")] [Description("Passes over each rollout's experience.")]
    public int? Epochs { get; init; }
    [CommandOption("--minibatch")] [Description("Answers per optimisation minibatch.")]
    public int? MiniBatch { get; init; }
    [CommandOption("--max-tokens")] [Description("Longest answer a rollout samples, in tokens.")]
    public int? MaxNewTokens { get; init; }
    [CommandOption("--temperature")] [Description("Rollout sampling temperature (log-probabilities are taken at it too).")]
    public double? Temperature { get; init; }
    [CommandOption("--rollout-engine")] [Description("What samples the rollouts: auto (the CPU engine on a CPU), torch, cpu, cpu-f16, cpu-bf16, cpu-q8_0 or cpu-q4_0 (see generate --engine).")]
    public string? Engine { get; init; }
    [CommandOption("--entropy")] [Description("Entropy bonus coefficient.")]
    public double? EntropyCoefficient { get; init; }
    [CommandOption("--ptx")] [Description("Pretraining-mix (PPO-ptx) loss weight; needs --ptx-data.")]
    public double? PtxCoefficient { get; init; }

    protected override TrainingConfig StageDefaults => PpoRun.Defaults;
    public override Spectre.Console.ValidationResult Validate() =>
        BatchSize is not null ? Spectre.Console.ValidationResult.Error("--batch-size: PPO's optimisation batch is --minibatch.")
        : Engine is not null && GptSharp.Inference.Cpu.DecodeEngine.Problem(Engine, "--rollout-engine") is { } problem ? Spectre.Console.ValidationResult.Error(problem)
        : base.Validate();
    public override IEnumerable<object> Defaults => [.. base.Defaults, new PpoConfig()];
}

/// <summary><c>gptsharp ppo</c>: RLHF of an SFT run against a reward model, on the built-in poem prompts.</summary>
sealed class PpoCommand : Command<PpoSettings>
{
    public override int Execute(CommandContext context, PpoSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        // The built-in split is fixed: the score's held-out titles never reach training, whatever --seed.
        var task = s.Task switch
        {
            "form" => RlTasks.Form(),
            "verse" => RlTasks.Verse(),
            _ => throw new ArgumentException($"--task {s.Task}: expected form or verse."),
        };
        var prompts = task.Prompts;
        var ppo = OptionDefaults.Apply(s, new PpoConfig());
        var training = s.Training() with { BatchSize = ppo.MiniBatch };
        var tokenizer = GptSharp.Tokenization.GptTokenizer.Load(GptSharp.Runs.Checkpoint.ReadState(s.Sft).Tokenizer);
        PpoReport report = null!;
        ProgressDisplay.Run("ppo", training.Steps, "steps", s.Quiet, (Action<double, string?> progress) =>
        {
            RolloutStats? last = null;
            report = PpoRun.Execute(s.Sft, s.Reward, prompts, ppo, training,
                s.Run(s.RunDir, runtime.Device, m => progress(m.Step, last is null ? null : $"reward {last.MeanScore:F3} KL {last.MeanKl:F3}"), cancellation),
                onRollout: r =>
                {
                    last = r;
                    if (s.Quiet) Console.WriteLine($"rollout {r.Iteration}: reward {r.MeanScore:F3}{(r.MeanGold is double g ? $", gold {g:F3}" : "")}, KL {r.MeanKl:F3} (β {r.KlCoefficient:G3}), length {r.MeanResponseLength:F1}");
                },
                program: s.Scorer switch
                {
                    "reward-model" => null,
                    "form" or "program" => task.Program,
                    _ => throw new ArgumentException($"--scorer {s.Scorer}: expected reward-model or program (the task's own check; form is its old name)."),
                },
                gold: task.Gold,
                selection: s.SelectEvery > 0 ? new PolicySelection(p => task.HeldOutGold!(p, tokenizer), s.SelectEvery) : null,
                ptxData: s.PtxData);
            return report;
        });
        var first = report.Rollouts.Take(3).Average(r => r.MeanScore);
        var final = report.Rollouts.TakeLast(3).Average(r => r.MeanScore);
        AnsiConsole.MarkupLine($"PPO: {report.Rollouts.Count} rollouts, mean reward {first:F3} → {final:F3} (first/last 3), final KL {report.Rollouts[^1].MeanKl:F3}. " +
                               (report.Kept is { } kept ? $"Kept the policy of step {kept.Step} (held-out gold {kept.Score:F3}). " : "") +
                               $"Policy in {Markup.Escape(Path.Combine(s.RunDir, RlRun.PolicyFolder))}.");
        return 0;
    }
}
