using System.ComponentModel;
using GptSharp.Alignment;
using GptSharp.Evaluation;
using GptSharp.Runtime;
using GptSharp.Training;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class DistillSettings : TrainingSettings
{
    [CommandOption("--from")] [Description("The student run (an SFT run, or any GPT run of the teacher's tokenizer).")]
    public string From { get; init; } = "runs/sft";
    [CommandOption("--teacher")] [Description("The teacher run, of the same tokenizer: an RL policy folder, a larger model (default: runs/grpo/policy).")]
    public string Teacher { get; init; } = "runs/grpo/policy";
    [CommandOption("--task")] [Description("Where the prompts come from: form, verse, arithmetic, builtin, or a JSONL file of {\"prompt\", \"answer\"} lines (only the prompts are used).")]
    public string Task { get; init; } = "verse";
    [CommandOption("-r|--run-dir")] [Description("Folder for the distillation run; the student goes to its policy/ folder.")]
    public string RunDir { get; init; } = "runs/distill";
    [CommandOption("--divergence")] [Description("What pulls the student's distribution toward the teacher's at each token: reverse (KL(student ‖ teacher), mode-seeking), forward (KL(teacher ‖ student)) or jsd (both to the mixture). Default: reverse.")]
    public string Divergence { get; init; } = "reverse";
    [CommandOption("--rollout")] [Description("Prompts per rollout (one answer each).")]
    public int? PromptsPerRollout { get; init; }
    [CommandOption("--minibatch")] [Description("Answers per optimisation minibatch.")]
    public int? MiniBatch { get; init; }
    [CommandOption("--max-tokens")] [Description("Longest answer, in tokens.")]
    public int? MaxNewTokens { get; init; }
    [CommandOption("--temperature")] [Description("The student's sampling temperature.")]
    public double? Temperature { get; init; }

    protected override TrainingConfig StageDefaults => DistillRun.Defaults;
    public override IEnumerable<object> Defaults => [.. base.Defaults, new DistillConfig()];
    public override ValidationResult Validate() =>
        BatchSize is not null ? ValidationResult.Error("--batch-size: distillation's optimisation batch is --minibatch.")
        : NameProblem() is { } problem ? ValidationResult.Error(problem)
        : base.Validate();

    string? NameProblem()
    {
        try { Distill(); }
        catch (ArgumentException e) { return e.Message; }
        return null;
    }

    public DistillConfig Distill() => OptionDefaults.Apply(this, new DistillConfig()) with
    {
        Divergence = Divergence switch
        {
            "reverse" => GptSharp.Alignment.Divergence.ReverseKl, "forward" => GptSharp.Alignment.Divergence.ForwardKl, "jsd" => GptSharp.Alignment.Divergence.Jsd,
            _ => throw new ArgumentException($"--divergence {Divergence}: expected reverse, forward or jsd."),
        },
    };
}

/// <summary><c>gptsharp distill</c>: on-policy distillation — the student samples, the teacher grades every token.</summary>
sealed class DistillCommand : Command<DistillSettings>
{
    public override int Execute(CommandContext context, DistillSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var task = RlTasks.Named(s.Task);
        var config = s.Distill().Validate();
        var training = s.Training() with { BatchSize = config.MiniBatch };
        DistillReport report = null!;
        ProgressDisplay.Run("distill", training.Steps, "steps", s.Quiet, (Action<double, string?> progress) =>
        {
            DistillRolloutStats? last = null;
            report = DistillRun.Execute(s.From, s.Teacher, task.Prompts, config, training,
                s.Run(s.RunDir, runtime.Device, m => progress(m.Step, last is null ? null : $"KL {last.ReverseKl:F3}"), cancellation),
                onRollout: r =>
                {
                    last = r;
                    if (s.Quiet) Console.WriteLine($"rollout {r.Iteration}: KL(student ‖ teacher) {r.ReverseKl:F4}, length {r.MeanResponseLength:F1}");
                });
            return report;
        });
        double first = report.Rollouts.Take(3).Average(r => r.ReverseKl), final = report.Rollouts.TakeLast(3).Average(r => r.ReverseKl);
        AnsiConsole.MarkupLine($"Distillation: {report.Rollouts.Count} rollouts, KL(student ‖ teacher) per token {first:F4} → {final:F4} (first/last 3). " +
            $"Student in {Markup.Escape(Path.Combine(s.RunDir, RlRun.PolicyFolder))}.");
        return 0;
    }
}
