using System.ComponentModel;
using GptSharp.Alignment;
using GptSharp.Evaluation;
using GptSharp.Runs;
using GptSharp.Runtime;
using GptSharp.Tokenization;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class ArithmeticScoreSettings : CommonSettings
{
    [CommandOption("-r|--run-dir")] [Description("Run folders to compare, comma-separated (e.g. runs/sft,runs/grpo/policy).")]
    public string RunDir { get; init; } = "runs/sft";
    [CommandOption("--problems")] [Description("How many fixed held-out problems to ask (multi-digit + − ×).")]
    public int Problems { get; init; } = RlTasks.ScoreProblems;
    [CommandOption("--two-step")] [Description("Also ask as many two-step problems, (a × b) ± c, in the calculator-steps environment (one operation a call, ans the last result): exact answers, turns, episodes finished.")]
    public bool TwoStep { get; init; }

    public override ValidationResult Validate() =>
        Problems < 1 ? ValidationResult.Error($"--problems {Problems}: ask at least one.") : base.Validate();
}

/// <summary><c>gptsharp arithmetic-score</c>: exact answers on held-out problems, greedy, with the calculator offered and without.</summary>
sealed class ArithmeticScoreCommand : Command<ArithmeticScoreSettings>
{
    public override int Execute(CommandContext context, ArithmeticScoreSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        var problems = Arithmetic.Problems(heldOut: true, s.Problems);
        var table = new Table().AddColumns("run", "without tool", "with calculator", "answers that called it", "example (with calculator)");
        foreach (string run in s.RunDir.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var (model, state) = Checkpoint.LoadModel(run);
            using (model)
            {
                var tokenizer = GptTokenizer.Load(state.Tokenizer);
                var without = ArithmeticScore.Measure(model, tokenizer, problems, withTool: false);
                string with = "-", calls = "-", example = "(the tokenizer has no tool tokens)";
                if (new ChatTemplate(tokenizer).SupportsTools)
                {
                    var report = ArithmeticScore.Measure(model, tokenizer, problems, withTool: true);
                    (with, calls) = ($"{report.Correct}/{report.Problems} ({100 * report.Accuracy:F1}%)", $"{report.ToolCalls}/{report.Problems}");
                    example = $"{report.Samples[0].Question} → {report.Samples[0].Answer}";
                }
                table.AddRow(Markup.Escape(run), $"{without.Correct}/{without.Problems} ({100 * without.Accuracy:F1}%)", with, calls, Markup.Escape(example));
            }
        }
        AnsiConsole.Write(table);
        if (s.TwoStep) TwoStepTable(s);
        return 0;
    }

    static void TwoStepTable(ArithmeticScoreSettings s)
    {
        var problems = ArithmeticStepsEnvironment.Problems(heldOut: true, s.Problems);
        var environment = ArithmeticStepsEnvironment.Factory(problems);
        var table = new Table().AddColumns("run", "two-step problems right", "turns per episode", "finished by the model", "example");
        foreach (string run in s.RunDir.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var (model, state) = Checkpoint.LoadModel(run);
            using (model)
            {
                var tokenizer = GptTokenizer.Load(state.Tokenizer);
                var report = EnvironmentScore.Measure(model, tokenizer, [.. problems.Select(p => p.Question)], environment);
                table.AddRow(Markup.Escape(run), $"{100 * report.MeanReward:F1}%", $"{report.MeanTurns:F2}", $"{100 * report.Finished:F1}%",
                    Markup.Escape($"{report.Samples[0].Prompt} → {report.Samples[0].Transcript}"));
            }
        }
        AnsiConsole.Write(table);
    }
}
