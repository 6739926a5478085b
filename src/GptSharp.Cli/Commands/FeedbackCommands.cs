using System.ComponentModel;
using GptSharp.Alignment;
using GptSharp.Evaluation;
using GptSharp.Runs;
using GptSharp.Runtime;
using GptSharp.Tokenization;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class FeedbackCollectSettings : CommonSettings, ILibraryDefaults
{
    [CommandOption("-r|--run-dir")] [Description("The policy whose answers are compared (usually the SFT run).")]
    public string RunDir { get; init; } = "runs/sft";
    [CommandOption("--task")] [Description("Prompts and labeler: `form` (graded form check), `verse` (titles with instructions, the graded verse check), `builtin` (every built-in task with its check) or a JSONL file of {\"prompt\", \"answer\"}.")]
    public string Task { get; init; } = "form";
    [CommandOption("--out")] [Description("Preference JSONL to write (continued where it stopped when its progress record is beside it).")]
    public string Out { get; init; } = "runs/feedback.jsonl";
    [CommandOption("--prompts")] [Description("How many of the task's prompts to ask (0: all).")]
    public int Prompts { get; init; } = 1000;
    [CommandOption("-k|--answers")] [Description("Answers sampled per prompt (K); every pair ranked apart is a comparison.")]
    public int? AnswersPerPrompt { get; init; }
    [CommandOption("--temperature")] [Description("Sampling temperature of the answers.")]
    public double? Temperature { get; init; }
    [CommandOption("--max-tokens")] [Description("Longest answer, in tokens.")]
    public int? MaxNewTokens { get; init; }
    [CommandOption("--noise")] [Description("Probability that a comparison is flipped: simulated disagreeing labelers.")]
    public double? LabelNoise { get; init; }
    [CommandOption("--seed")] [Description("Seeds the prompt order and the samples.")]
    public long? Seed { get; init; }

    public IEnumerable<object> Defaults => [new FeedbackOptions()];
}

/// <summary><c>gptsharp feedback collect</c>: comparisons of a policy's own answers, ranked by a program labeler.</summary>
sealed class FeedbackCollectCommand : Command<FeedbackCollectSettings>
{
    public override int Execute(CommandContext context, FeedbackCollectSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        var options = OptionDefaults.Apply(s, new FeedbackOptions()).Validate();
        var task = RlTasks.Named(s.Task);
        var prompts = Feedback.ChoosePrompts(task.Prompts, s.Prompts, options.Seed);
        var (policy, state) = Checkpoint.LoadModel(s.RunDir);
        using var _ = policy;
        var tokenizer = GptTokenizer.Load(state.Tokenizer);
        var report = ProgressDisplay.Run("feedback", prompts.Count, "prompts", s.Quiet, progress =>
            Feedback.Collect(policy, tokenizer, prompts, task.Labeler, options, s.Out, Path.GetFullPath(s.RunDir), n => progress(n)));
        AnsiConsole.MarkupLine($"{(report.Resumed ? "Continued: " : "")}{report.Pairs:N0} comparisons from {report.Prompts:N0} prompts × {options.AnswersPerPrompt} answers " +
            $"(mean label {report.MeanScore:F3}; {report.Ties:N0} prompts all alike; {report.Flipped:N0} flipped by noise) in {Markup.Escape(s.Out)}.");
        return 0;
    }
}

sealed class FeedbackAgreementSettings : CommonSettings
{
    [CommandOption("--reward-model")] [Description("The reward-model run to check.")]
    public string Reward { get; init; } = "runs/reward";
    [CommandOption("-r|--run-dir")] [Description("The policy whose fresh answers are compared.")]
    public string RunDir { get; init; } = "runs/sft";
    [CommandOption("--prompts")] [Description("Held-out titles to sample answers for (the form task's selection titles).")]
    public int Prompts { get; init; } = 128;
    [CommandOption("-k|--answers")] [Description("Answers per prompt.")]
    public int Answers { get; init; } = 4;
}

/// <summary><c>gptsharp feedback agreement</c>: how often a reward model orders fresh answers as the form program does.</summary>
sealed class FeedbackAgreementCommand : Command<FeedbackAgreementSettings>
{
    public override int Execute(CommandContext context, FeedbackAgreementSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        var (policy, state) = Checkpoint.LoadModel(s.RunDir);
        using var _ = policy;
        using var reward = RewardModel.Load(s.Reward);
        reward.eval();
        var tokenizer = GptTokenizer.Load(state.Tokenizer);
        var (pairs, agreement) = Feedback.Agreement(policy, tokenizer, FormScore.SelectionPrompts(s.Prompts), Rewards.FromModel(reward, tokenizer), Rewards.Form, s.Answers);
        AnsiConsole.MarkupLine($"The reward model agrees with the form program on [bold]{100 * agreement:F1}%[/] of {pairs:N0} pairs of fresh answers the program ranks apart.");
        return 0;
    }
}

sealed class FeedbackSampleSettings : CommonSettings, ILibraryDefaults
{
    [CommandOption("-r|--run-dir")] [Description("The policy whose answers people will compare (usually the SFT run).")]
    public string RunDir { get; init; } = "runs/sft";
    [CommandOption("--task")] [Description("Where the prompts come from: `form`, `verse`, `builtin` or a JSONL file of {\"prompt\", \"answer\"}.")]
    public string Task { get; init; } = "form";
    [CommandOption("--out")] [Description("Label items to write: one {\"id\", \"prompt\", \"answers\"} per line.")]
    public string Out { get; init; } = "runs/label-items.jsonl";
    [CommandOption("--prompts")] [Description("How many of the task's prompts to ask (0: all).")]
    public int Prompts { get; init; } = 100;
    [CommandOption("-k|--answers")] [Description("Answers sampled per prompt (K); a prompt whose answers are all the same is left out.")]
    public int? AnswersPerPrompt { get; init; }
    [CommandOption("--temperature")] [Description("Sampling temperature of the answers.")]
    public double? Temperature { get; init; }
    [CommandOption("--max-tokens")] [Description("Longest answer, in tokens.")]
    public int? MaxNewTokens { get; init; }
    [CommandOption("--seed")] [Description("Seeds the prompt order and the samples.")]
    public long? Seed { get; init; }

    public IEnumerable<object> Defaults => [new FeedbackOptions()];
}

/// <summary><c>gptsharp feedback sample</c>: answers for people to judge on the labeling page.</summary>
sealed class FeedbackSampleCommand : Command<FeedbackSampleSettings>
{
    public override int Execute(CommandContext context, FeedbackSampleSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        var options = OptionDefaults.Apply(s, new FeedbackOptions()).Validate();
        var prompts = Feedback.ChoosePrompts(RlTasks.Named(s.Task).Prompts, s.Prompts, options.Seed);
        var (policy, state) = Checkpoint.LoadModel(s.RunDir);
        using var _ = policy;
        int items = Feedback.SampleForLabeling(policy, GptTokenizer.Load(state.Tokenizer), prompts, options, s.Out);
        AnsiConsole.MarkupLine($"{items:N0} items ({options.AnswersPerPrompt} answers to each of {prompts.Count:N0} prompts, those with two or more different answers) in {Markup.Escape(s.Out)}. " +
                               $"Judge them with: gptsharp feedback label --data {Markup.Escape(s.Out)}");
        return 0;
    }
}

sealed class FeedbackLabelSettings : CommonSettings
{
    [CommandOption("--data")] [Description("Label items (from `feedback sample`, or your own {\"prompt\", \"answers\"} lines).")]
    public string Items { get; init; } = "runs/label-items.jsonl";
    [CommandOption("--judgments")] [Description("The append-only judgment log (default: ITEMS.judgments.jsonl); reopening it continues where it stopped.")]
    public string? Judgments { get; init; }
    [CommandOption("--out")] [Description("Preference JSONL rewritten after every judgment (default: ITEMS.pairs.jsonl), for `reward` and `dpo`.")]
    public string? Out { get; init; }
    [CommandOption("--port")] [Description("Port on 127.0.0.1.")]
    public int Port { get; init; } = 8010;
}

/// <summary><c>gptsharp feedback label</c>: the labeling page, for people to rank a policy's answers.</summary>
sealed class FeedbackLabelCommand : AsyncCommand<FeedbackLabelSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, FeedbackLabelSettings s, CancellationToken cancellation)
    {
        string stem = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(s.Items))!, Path.GetFileNameWithoutExtension(s.Items));
        var session = new LabelingSession(LabelingSession.ReadItems(s.Items), s.Judgments ?? stem + ".judgments.jsonl");
        await using var server = new GptSharp.Serving.LabelingServer(session, s.Out ?? stem + ".pairs.jsonl", s.Port);
        await server.StartAsync(cancellation);
        AnsiConsole.MarkupLine($"Labeling {session.Total:N0} items ({session.Done:N0} judged) at [link]{Markup.Escape(server.Address)}[/]; " +
                               $"comparisons in {Markup.Escape(s.Out ?? stem + ".pairs.jsonl")}. Ctrl+C stops; nothing judged is lost.");
        await server.WaitForShutdownAsync(cancellation);
        return 0;
    }
}
