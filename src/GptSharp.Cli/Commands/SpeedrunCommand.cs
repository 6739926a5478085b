using GptSharp.Runtime;
using System.ComponentModel;
using GptSharp.Speedrun;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class SpeedrunSettings : CommonSettings, ILibraryDefaults
{
    [CommandOption("-r|--run-dir")] [Description("Folder for every stage's output.")]
    public string RunDir { get; init; } = "runs/speedrun";
    [CommandOption("--vocab-size")] [Description("Tokenizer vocabulary (BPE merges + bytes + special tokens).")]
    public int? VocabSize { get; init; }
    [CommandOption("--preset")] [Description("Model preset for pretraining (tiny on a laptop; small or gpt2-124m with time or a GPU).")]
    public string? Preset { get; init; }
    [CommandOption("--pretrain-steps")] [Description("Pretraining steps.")]
    public int? PretrainSteps { get; init; }
    [CommandOption("--sft-steps")] [Description("Supervised fine-tuning steps.")]
    public int? SftSteps { get; init; }
    [CommandOption("--feedback-prompts")] [Description("Training titles the SFT model answers K times for on-policy comparisons.")]
    public int? FeedbackPrompts { get; init; }
    [CommandOption("--reward-steps")] [Description("Reward-model steps.")]
    public int? RewardSteps { get; init; }
    [CommandOption("--ppo-steps")] [Description("PPO steps (4 per rollout of 16 prompts).")]
    public int? PpoSteps { get; init; }
    [CommandOption("--grpo-steps")] [Description("GRPO steps (4 per rollout of 8 titles × 8 answers: two passes over two minibatches).")]
    public int? GrpoSteps { get; init; }
    [CommandOption("--with-tools")] [Description("Also teach the calculator: the sft-tools and grpo-tools stages, and arithmetic with and without it in the score (about 100 s more on 2 cores).")]
    public bool WithTools { get; init; }
    [CommandOption("--tool-sft-steps")] [Description("Steps that teach the SFT model to call the calculator (arithmetic conversations).")]
    public int? ToolSftSteps { get; init; }
    [CommandOption("--tool-grpo-steps")] [Description("GRPO steps on arithmetic with the calculator.")]
    public int? ToolGrpoSteps { get; init; }
    [CommandOption("--dpo-steps")] [Description("DPO steps.")]
    public int? DpoSteps { get; init; }
    [CommandOption("--best-of")] [Description("N of the best-of-N baseline in the form score (N poems per title, the reward model keeps one).")]
    public int? BestOf { get; init; }
    [CommandOption("--score-prompts")] [Description("Held-out titles for the verifiable form score of the base, SFT, best-of-N, PPO, GRPO and DPO models.")]
    public int? ScorePrompts { get; init; }
    [CommandOption("--eval-items")] [Description("Held-out items per evaluation task.")]
    public int? EvalItems { get; init; }
    [CommandOption("--seed")] [Description("Seed of every stage, pretraining included: an independently pretrained base and alignment from it (default: each stage's own).")]
    public long? Seed { get; init; }
    [CommandOption("--device")] [Description("cpu, cuda, cuda:N or auto.")]
    public string Device { get; init; } = "cpu";
    [CommandOption("--from-stage")] [Description("Rerun from this stage on (tokenizer, data, pretrain, sft, feedback, reward, ppo, grpo, dpo, sft-tools and grpo-tools with --with-tools, score, eval, export), discarding its folder and those of the stages after it (default: resume after the last finished stage).")]
    public string? From { get; init; }
    [CommandOption("--stop-after")] [Description("Stop after this stage (same names as --from-stage; default: run every stage).")]
    public string? StopAfter { get; init; }

    public IEnumerable<object> Defaults => [new SpeedrunOptions()];
}

/// <summary>
/// <c>gptsharp speedrun</c>: the main job as <see cref="SpeedrunPlan.Stages"/> lists it (<see cref="MainJob"/>), with
/// progress bars; then the report card and a few chats with the aligned model.
/// </summary>
sealed class SpeedrunCommand : Command<SpeedrunSettings>
{
    public override int Execute(CommandContext context, SpeedrunSettings settings, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(settings.Threads, settings.Device);
        var plan = new SpeedrunPlan(settings.RunDir, OptionDefaults.Apply(settings, new SpeedrunOptions()));
        var display = new ConsoleStageDisplay(settings.Quiet);
        bool finished = MainJob.Run(plan, runtime.Device, display, settings.From, settings.StopAfter);
        AnsiConsole.MarkupLine($"Report card: {Markup.Escape(ReportCard.Write(settings.RunDir))}");
        if (!finished)
        {
            AnsiConsole.MarkupLine($"[green]speedrun stopped after {Markup.Escape(settings.StopAfter!)}[/]: {Markup.Escape(Path.GetFullPath(settings.RunDir))}");
            return 0;
        }
        MainJob.SampleChats(plan, display);
        AnsiConsole.MarkupLine($"[green]speedrun finished[/]: {Markup.Escape(Path.GetFullPath(settings.RunDir))}");
        return 0;
    }
}

/// <summary>The main job's display on the terminal: progress bars (or plain lines with --quiet), Spectre tables.</summary>
sealed class ConsoleStageDisplay(bool quiet) : IStageDisplay
{
    public T Progress<T>(string label, double total, string unit, Func<Action<double>, T> work) => ProgressDisplay.Run(label, total, unit, quiet, work);

    public void Line(string text) => AnsiConsole.WriteLine(text);

    public void Table(IReadOnlyList<string> header, IReadOnlyList<IReadOnlyList<string>> rows)
    {
        var table = new Table().AddColumns([.. header]);
        foreach (var row in rows) table.AddRow([.. row.Select(Markup.Escape)]);
        AnsiConsole.Write(table);
    }
}
