using GptSharp.Runs;
using GptSharp.Runtime;
using System.ComponentModel;
using System.Text.Json;
using GptSharp.Alignment;
using GptSharp.Data;
using GptSharp.Evaluation;
using GptSharp.Speedrun;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Training;
using GptSharp.Interop;
using GptSharp.Tokenization;
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
    [CommandOption("--grpo-steps")] [Description("GRPO steps (2 per rollout of 8 titles × 8 answers).")]
    public int? GrpoSteps { get; init; }
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
    [CommandOption("--from")] [Description("Rerun from this stage on (tokenizer, data, pretrain, sft, feedback, reward, ppo, grpo, dpo, sft-tools, grpo-tools, score, eval, export), discarding its folder and those of the stages after it (default: resume after the last finished stage).")]
    public string? From { get; init; }
    [CommandOption("--stop-after")] [Description("Stop after this stage (same names as --from; default: run every stage).")]
    public string? StopAfter { get; init; }

    public IEnumerable<object> Defaults => [new SpeedrunOptions()];
}

/// <summary>
/// <c>gptsharp speedrun</c>: the main job, stage by stage on the embedded data, as <see cref="SpeedrunPlan"/> lays it
/// out. Each stage writes <c>done.json</c> into its folder when it finishes; a rerun skips finished stages.
/// </summary>
sealed class SpeedrunCommand : Command<SpeedrunSettings>
{
    static readonly System.Text.Json.JsonSerializerOptions AnswersJson = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    static readonly string[] SampleQuestions = ["《靜夜思》的作者是誰？", "寫一首詩，題為《春曉》。", "請接下句：白日依山盡，"];
    static readonly string[] SamplePrompts = ["床前明月光", "白日依山盡", "春眠不覺曉"];

    public override int Execute(CommandContext context, SpeedrunSettings settings, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(settings.Threads, settings.Device);
        var plan = new SpeedrunPlan(settings.RunDir, OptionDefaults.Apply(settings, new SpeedrunOptions()));
        string[] stages = [.. plan.Stages.Select(s => s.Name)];
        int Stage(string option, string name) => Array.IndexOf(stages, name) is >= 0 and var i ? i
            : throw new ArgumentException($"{option} {name}: unknown stage; stages are {string.Join(", ", stages)}.");
        int last = settings.StopAfter is null ? stages.Length - 1 : Stage("--stop-after", settings.StopAfter);
        if (settings.From is not null)
            foreach (var stage in plan.Stages.Skip(Stage("--from", settings.From)))
            {
                // A rerun starts the stage afresh: a finished checkpoint left in its folder would otherwise be resumed as done.
                string folder = plan.Folder(stage.Folder);
                if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            }
        plan.Save();
        bool Go(string stage) => Array.IndexOf(stages, stage) <= last;

        RunStage(settings, "tokenizer", () =>
        {
            // Chinese poetry and English prose, so one vocabulary serves every later stage.
            var texts = SpeedrunPlan.TokenizerCorpora.SelectMany(Corpus.Read).Select(d => d.Text).ToList();
            var options = plan.TokenizerTraining;
            var result = ProgressDisplay.Run("tokenizer", options.VocabSize - 256 - SpecialTokens.All.Count, "merges", settings.Quiet,
                report => BpeTrainer.Train(texts, options, (done, _) => { if (done % 64 == 0) report(done); }));
            var spec = GptTokenizer.Save(result, "speedrun", plan.Tokenizer);
            return new { spec.VocabSize, result.MergeCount, inputMegabytes = result.InputBytes / 1e6, seconds = result.Elapsed.TotalSeconds };
        });

        if (Go("data")) RunStage(settings, "data", () =>
        {
            var tokenizer = GptTokenizer.Load(plan.Tokenizer);
            var summary = ProgressDisplay.Run("data", double.NaN, "docs", settings.Quiet,
                report => ShardBuilder.Build(tokenizer, Path.GetFullPath(plan.Tokenizer), plan.Shards, plan.Data, n => report(n)));
            return summary;
        });

        if (Go("pretrain")) RunStage(settings, "pretrain", () =>
        {
            var config = plan.Model(ShardSummary.Load(plan.Data).VocabSize);
            var training = plan.PretrainTraining;
            // A killed pretrain stage resumes from its last checkpoint.
            bool resume = Checkpoint.Find(plan.Pretrain) is not null;
            var result = ProgressDisplay.Run("pretrain", training.Steps, "steps", settings.Quiet, report =>
                PretrainRun.Execute(config, training, plan.Data, plan.Pretrain, resume, runtime.Device,
                    onStart: (_, start, _) => report(start), onStep: m => report(m.Step)));
            return new { plan.Options.Preset, result.StepsDone, result.FinalLoss, result.FinalValLoss, result.Seconds };
        });

        if (Go("pretrain"))
        {
            var (model, state) = Checkpoint.LoadModel(plan.Pretrain);
            using (model)
            {
                var tokenizer = GptTokenizer.Load(state.Tokenizer);
                AnsiConsole.MarkupLine("[bold]Samples from the pretrained model[/] (temperature 0.8, top-k 50):");
                using var decoder = TokenDecoder.Create(model);
                var samples = decoder.Generate([.. SamplePrompts.Select(p => (int[])[tokenizer.BosId, .. tokenizer.Encode(p)])],
                    new SamplingOptions(Temperature: 0.8, TopK: 50, MaxNewTokens: 48, StopTokens: [tokenizer.BosId, tokenizer.EosId]));
                for (int i = 0; i < SamplePrompts.Length; i++)
                    AnsiConsole.WriteLine(SamplePrompts[i] + tokenizer.Decode(samples[i].Tokens.Where(t => !tokenizer.IsSpecial(t))));
            }
        }

        if (Go("sft")) RunStage(settings, "sft", () =>
        {
            var data = BuiltInDatasets.Build();
            var training = plan.SftTraining;
            bool resume = Checkpoint.Find(plan.Sft) is not null;
            var report = ProgressDisplay.Run("sft", training.Steps, "steps", settings.Quiet, progress =>
                SftRun.Execute(plan.Pretrain, data.TrainChats, data.HeldOutChats, training, plan.Sft, resume, runtime.Device,
                    onStart: (_, start) => progress(start), onStep: m => progress(m.Step)));
            return new { report.TrainConversations, report.HeldOutConversations, report.Training.FinalLoss, report.Training.FinalValLoss, report.Training.Seconds };
        });

        if (Go("feedback")) RunStage(settings, "feedback", () =>
        {
            // InstructGPT's loop: the SFT model answers each training title K times and a labeler (here the graded form
            // check) ranks the answers; every pair ranked apart is a comparison the reward model and DPO learn from.
            var report = ProgressDisplay.Run("feedback", plan.Options.FeedbackPrompts, "prompts", settings.Quiet, progress =>
                AlignmentStages.Feedback(plan, n => progress(n)));
            AnsiConsole.MarkupLine($"feedback: {report.Pairs:N0} comparisons from {report.Prompts:N0} titles × {plan.FeedbackSettings.AnswersPerPrompt} answers ({report.Ties:N0} titles all alike)");
            return report;
        });

        if (Go("reward")) RunStage(settings, "reward", () =>
        {
            var report = ProgressDisplay.Run("reward", plan.RewardTraining.Steps, "steps", settings.Quiet, progress =>
                AlignmentStages.Reward(plan, runtime.Device, onStart: start => progress(start), onStep: m => progress(m.Step)));
            var training = report.Training;
            AnsiConsole.MarkupLine($"reward model: held-out accuracy {100 * training.HeldOutAccuracy:F1}% over {training.HeldOutPairs:N0} comparisons; " +
                                   $"agrees with the labeler (the graded verse check) on {100 * report.GoldAgreement:F1}% of {report.GoldPairs:N0} fresh pairs");
            return new { training.TrainPairs, training.HeldOutPairs, training.HeldOutAccuracy, training.HeldOutLoss, report.GoldAgreement, report.GoldPairs, training.Training.Seconds };
        });

        if (Go("ppo")) RunStage(settings, "ppo", () =>
        {
            var report = ProgressDisplay.Run("ppo", plan.PpoTraining.Steps, "steps", settings.Quiet, progress =>
                AlignmentStages.Ppo(plan, runtime.Device, onStep: m => progress(m.Step)));
            var rollouts = report.Rollouts;
            double first = rollouts.Take(3).Average(r => r.MeanScore), final = rollouts.TakeLast(3).Average(r => r.MeanScore);
            AnsiConsole.MarkupLine($"ppo: mean reward {first:F2} → {final:F2} over {rollouts.Count} rollouts, final KL {rollouts[^1].MeanKl:F2}; " +
                                   $"kept step {report.Kept?.Step} (held-out gold {report.Kept?.Score:P1})");
            return new { rollouts = rollouts.Count, firstReward = first, lastReward = final, finalKl = rollouts[^1].MeanKl, keptStep = report.Kept?.Step,
                keptGold = report.Kept?.Score, report.Training.Seconds };
        });

        // A GRPO stage: the run, one line of what it did, the figures done.json keeps.
        object GrpoStage(string stage, int steps, Func<Action<StepMetrics>, GrpoReport> run)
        {
            var report = ProgressDisplay.Run(stage, steps, "steps", settings.Quiet, progress => run(m => progress(m.Step)));
            var rollouts = report.Rollouts;
            double first = rollouts.Take(3).Average(r => r.MeanReward), final = rollouts.TakeLast(3).Average(r => r.MeanReward);
            AnsiConsole.MarkupLine($"{stage}: mean reward {first:F2} → {final:F2} over {rollouts.Count} rollouts; kept step {report.Kept?.Step} (held-out gold {report.Kept?.Score:P1})");
            return new { rollouts = rollouts.Count, firstReward = first, lastReward = final, keptStep = report.Kept?.Step, keptGold = report.Kept?.Score, report.Training.Seconds };
        }

        if (Go("grpo")) RunStage(settings, "grpo", () => GrpoStage("grpo", plan.GrpoTraining.Steps, onStep => AlignmentStages.Grpo(plan, runtime.Device, onStep)));

        if (Go("dpo")) RunStage(settings, "dpo", () =>
        {
            var report = ProgressDisplay.Run("dpo", plan.DpoTraining.Steps, "steps", settings.Quiet, progress =>
                AlignmentStages.Dpo(plan, runtime.Device, onStart: start => progress(start), onStep: m => progress(m.Step)));
            AnsiConsole.MarkupLine($"dpo: held-out loss {report.HeldOutLoss:F3}, chosen preferred on {100 * report.HeldOutPreferenceAccuracy:F1}% of held-out pairs");
            return new { report.TrainPairs, report.HeldOutPairs, report.HeldOutLoss, report.HeldOutPreferenceAccuracy, report.Training.Seconds };
        });

        if (Go("sft-tools")) RunStage(settings, "sft-tools", () =>
        {
            // Tool use is a skill of its own: arithmetic conversations that call the calculator (and some that answer without it).
            var report = ProgressDisplay.Run("sft-tools", plan.ToolSftTraining.Steps, "steps", settings.Quiet, progress =>
                AlignmentStages.ToolSft(plan, runtime.Device, onStep: m => progress(m.Step)));
            AnsiConsole.MarkupLine($"sft-tools: held-out loss {report.Training.FinalValLoss:F3} on assistant tokens of {report.HeldOutConversations} held-out conversations");
            return new { report.TrainConversations, report.HeldOutConversations, report.Training.FinalLoss, report.Training.FinalValLoss, report.Training.Seconds };
        });

        if (Go("grpo-tools")) RunStage(settings, "grpo-tools", () =>
            GrpoStage("grpo-tools", plan.ToolGrpoTraining.Steps, onStep => AlignmentStages.ToolGrpo(plan, runtime.Device, onStep)));

        if (Go("score")) RunStage(settings, "score", () =>
        {
            // The verifiable task: every rule of regulated verse and strict over fixed held-out prompts (titles with
            // their instructions), same seeds for every model; the form share is the first rule.
            var verse = Verse.Embedded();
            var rules = Enum.GetValues<VerseRule>();
            var table = new Table().AddColumn("model");
            foreach (var rule in rules) table.AddColumn(rule.ToString());
            table.AddColumns("strict", "distinct");
            var shares = new Dictionary<string, double>();
            var distinct = new Dictionary<string, double>();
            var strict = new Dictionary<string, double>();
            var ruleRates = new Dictionary<string, Dictionary<string, double>>();
            var answers = new List<string>();
            foreach (var (name, folder, bestOf) in AlignmentStages.ScoredModels(plan))
            {
                var score = ProgressDisplay.Run($"score {name}", double.NaN, "", settings.Quiet, (Action<double> _) => AlignmentStages.Score(plan, verse, folder, bestOf));
                shares[name] = score.Form;
                strict[name] = score.Strict;
                distinct[name] = score.Distinct / (double)score.Prompts;
                ruleRates[name] = rules.ToDictionary(r => r.ToString(), r => Math.Round(score.RuleRates[r], 4));
                table.AddRow([name, .. rules.Select(r => $"{score.RuleRates[r]:P1}"), $"{score.Strict:P1}", $"{score.Distinct}/{score.Prompts}"]);
                answers.AddRange(score.Answers.Select(a => System.Text.Json.JsonSerializer.Serialize(new
                {
                    model = name, prompt = a.Prompt, answer = a.Poem, strict = a.Verdict.Strict, graded = Math.Round(a.Verdict.Graded, 4),
                    rules = a.Verdict.Rules.ToDictionary(r => r.Rule.ToString(), r => r.Passed), unknown = a.Verdict.Unknown,
                }, AnswersJson)));
            }
            AnsiConsole.Write(table);
            GptSharp.Runtime.AtomicFile.WriteAllText(Path.Combine(plan.Folder("score"), "answers.jsonl"), string.Join("\n", answers) + "\n");

            // Arithmetic: exact answers with the calculator offered and without, for every chat model.
            var arithmetic = new Dictionary<string, object>();
            var arithmeticTable = new Table().AddColumns("model", "arithmetic, no tool", "with calculator", "answers that called it");
            foreach (var (name, folder) in AlignmentStages.ArithmeticModels(plan))
            {
                var (without, with) = ProgressDisplay.Run($"arithmetic {name}", double.NaN, "", settings.Quiet, (Action<double> _) => AlignmentStages.ArithmeticScore(folder));
                arithmetic[name] = new { withoutTool = without.Accuracy, withTool = with.Accuracy, toolCalls = with.ToolCalls / (double)with.Problems };
                arithmeticTable.AddRow(name, $"{without.Correct}/{without.Problems}", $"{with.Correct}/{with.Problems}", $"{with.ToolCalls}/{with.Problems}");
            }
            AnsiConsole.Write(arithmeticTable);
            string best = $"sft best-of-{plan.Options.BestOf}";
            return new
            {
                task = "verse", @base = strict["base"], sft = strict["sft"], bestOf = strict[best], ppo = strict["ppo"], grpo = strict["grpo"], dpo = strict["dpo"],
                form = shares, rules = ruleRates, distinct, arithmetic,
            };
        });

        if (Go("eval")) RunStage(settings, "eval", () =>
        {
            // GPT-2/GPT-3: the same tasks zero- and few-shot, for the base and RLHF models alike.
            var results = new Dictionary<string, object>();
            foreach (var (name, dir) in new[] { ("base", plan.Pretrain), ("ppo", plan.Policy) })
            {
                var report = ProgressDisplay.Run($"eval {name}", BuiltInTasks.Names.Count * 4, "scores", settings.Quiet, (Action<double> progress) =>
                {
                    int done = 0;
                    return EvalRun.Execute(dir, BuiltInTasks.Names, [0, 1, 2, 4], Corpus.EmbeddedNames, plan.Options.EvalItems, onScore: _ => progress(++done));
                });
                foreach (var score in report.Tasks.Where(t => t.Shots is 0 or 4)) results[$"{name} {score.Task} {score.Shots}-shot"] = Math.Round(score.Accuracy, 3);
            }
            return results;
        });

        if (Go("export")) RunStage(settings, "export", () =>
        {
            // The RLHF model for other runtimes: one GGUF file (llama.cpp, LLamaSharp, Ollama) and a transformers folder.
            string gguf = Path.Combine(plan.Export, "chat.gguf");
            Gguf.Export(plan.Policy, gguf, GgmlType.F16);
            HuggingFace.Export(plan.Policy, Path.Combine(plan.Export, "hf"));
            return new { ggufMegabytes = Math.Round(new FileInfo(gguf).Length / 1e6, 1) };
        });
        AnsiConsole.MarkupLine($"Report card: {Markup.Escape(ReportCard.Write(settings.RunDir))}");
        if (last < stages.Length - 1)
        {
            AnsiConsole.MarkupLine($"[green]speedrun stopped after {stages[last]}[/]: {Markup.Escape(Path.GetFullPath(settings.RunDir))}");
            return 0;
        }

        var (chatModel, chatState) = Checkpoint.LoadModel(plan.Policy);
        using (chatModel)
        {
            var tokenizer = GptTokenizer.Load(chatState.Tokenizer);
            var template = new ChatTemplate(tokenizer);
            AnsiConsole.MarkupLine("[bold]Chats with the RLHF (PPO) model[/] (temperature 0.7):");
            using var decoder = TokenDecoder.Create(chatModel);
            var answers = decoder.Generate([.. SampleQuestions.Select(q => template.RenderPrompt([new ChatMessage(ChatRoles.User, q)]))],
                new SamplingOptions(Temperature: 0.7, TopK: 50, MaxNewTokens: 64, StopTokens: [tokenizer.EndId, tokenizer.BosId]));
            for (int i = 0; i < SampleQuestions.Length; i++)
            {
                AnsiConsole.WriteLine($"user: {SampleQuestions[i]}");
                AnsiConsole.WriteLine($"assistant: {tokenizer.Decode(answers[i].Tokens.Where(t => !tokenizer.IsSpecial(t)))}");
            }
        }

        AnsiConsole.MarkupLine($"[green]speedrun finished[/]: {Markup.Escape(Path.GetFullPath(settings.RunDir))}");
        return 0;
    }

    static string DoneMarker(SpeedrunSettings settings, string stage) => Path.Combine(settings.RunDir, stage, "done.json");

    static void RunStage<T>(SpeedrunSettings settings, string stage, Func<T> run)
    {
        string marker = DoneMarker(settings, stage);
        if (File.Exists(marker))
        {
            AnsiConsole.MarkupLine($"[grey]{stage}: done earlier ({Markup.Escape(marker)}), skipped[/]");
            return;
        }
        var watch = System.Diagnostics.Stopwatch.StartNew();
        T outputs = run();
        var record = new { stage, finishedUtc = DateTime.UtcNow, seconds = Math.Round(watch.Elapsed.TotalSeconds, 2), outputs };
        AtomicFile.WriteAllText(marker, JsonSerializer.Serialize(record, new JsonSerializerOptions { WriteIndented = true }));
        AnsiConsole.MarkupLine($"{stage}: done in {watch.Elapsed.TotalSeconds:F1} s");
    }
}
