using System.Diagnostics;
using System.Text.Encodings.Web;
using System.Text.Json;
using GptSharp.Alignment;
using GptSharp.Data;
using GptSharp.Evaluation;
using GptSharp.Inference;
using GptSharp.Interop;
using GptSharp.Runs;
using GptSharp.Runtime;
using GptSharp.Tokenization;
using GptSharp.Training;

namespace GptSharp.Speedrun;

/// <summary>How the main job shows itself while it runs: progress of long work, and lines and tables for the reader.
/// The command line draws progress bars; a test or a bench may print plain lines or nothing.</summary>
public interface IStageDisplay
{
    /// <summary>Runs <paramref name="work"/>, which reports units done; a NaN <paramref name="total"/> is unknown.</summary>
    T Progress<T>(string label, double total, string unit, Func<Action<double>, T> work);
    void Line(string text);
    void Table(IReadOnlyList<string> header, IReadOnlyList<IReadOnlyList<string>> rows);
}

/// <summary>What a stage gets besides its own settings: the plan (folders, settings), the device, the display.</summary>
public sealed record StageContext(SpeedrunPlan Plan, string Device, IStageDisplay Display);

/// <summary>One stage of the main job: its name, its folder, the command that reproduces it alone (RUN stands for the
/// speedrun's folder), and what it does, returning the figures its <c>done.json</c> keeps.</summary>
public sealed record SpeedrunStage(string Name, string Folder, string Command, Func<StageContext, object> Run);

/// <summary>
/// The main job, read top to bottom as <see cref="SpeedrunPlan.Stages"/> lists it: tokenizer → token shards →
/// pretraining → SFT → feedback on the SFT model's answers → reward model → PPO → GRPO → DPO → tool SFT → tool GRPO →
/// scores → zero/few-shot evaluation → export. Each stage writes <c>done.json</c> when it finishes and is skipped on a
/// rerun; a killed training stage resumes from its checkpoint.
/// </summary>
public static class MainJob
{
    public const string DoneFile = "done.json";

    /// <summary>Runs the stages from <paramref name="fromStage"/> (its folder and those after it discarded first; null:
    /// after the last finished one) through <paramref name="stopAfter"/> (null: all). True when every stage has run.</summary>
    public static bool Run(SpeedrunPlan plan, string device, IStageDisplay display, string? fromStage = null, string? stopAfter = null)
    {
        var stages = plan.Stages;
        int Index(string option, string name) => stages.Select(s => s.Name).ToList().IndexOf(name) is >= 0 and var i ? i
            : plan.ToolStages.Any(s => s.Name == name) ? throw new ArgumentException($"{option} {name}: the tool stages run only with --with-tools.")
            : throw new ArgumentException($"{option} {name}: unknown stage; stages are {string.Join(", ", stages.Select(s => s.Name))}.");
        int last = stopAfter is null ? stages.Count - 1 : Index("--stop-after", stopAfter);
        if (fromStage is not null)
            foreach (var stage in stages.Skip(Index("--from-stage", fromStage)))
            {
                // A rerun starts the stage afresh: a finished checkpoint left in its folder would otherwise be resumed as done.
                string folder = plan.Folder(stage.Folder);
                if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            }
        plan.Save();
        var context = new StageContext(plan, device, display);
        foreach (var stage in stages.Take(last + 1))
        {
            string marker = Path.Combine(plan.Folder(stage.Folder), DoneFile);
            if (File.Exists(marker)) display.Line($"{stage.Name}: done earlier ({marker}), skipped");
            else
            {
                var watch = Stopwatch.StartNew();
                object outputs = stage.Run(context);
                var record = new { stage = stage.Name, finishedUtc = DateTime.UtcNow, seconds = Math.Round(watch.Elapsed.TotalSeconds, 2), outputs };
                AtomicFile.WriteAllText(marker, JsonSerializer.Serialize(record, new JsonSerializerOptions { WriteIndented = true }));
                display.Line($"{stage.Name}: done in {watch.Elapsed.TotalSeconds:F1} s");
            }
            if (stage.Name == "pretrain") PretrainSamples(plan, display);
        }
        return last == stages.Count - 1;
    }

    static readonly string[] SamplePrompts = ["床前明月光", "白日依山盡", "春眠不覺曉"];
    static readonly string[] SampleQuestions = ["《靜夜思》的作者是誰？", "寫一首詩，題為《春曉》。", "請接下句：白日依山盡，"];

    /// <summary>A few continuations of the pretrained model (temperature 0.8, top-k 50).</summary>
    public static void PretrainSamples(SpeedrunPlan plan, IStageDisplay display)
    {
        var (model, state) = Checkpoint.LoadModel(plan.Pretrain);
        using var _ = model;
        var tokenizer = GptTokenizer.Load(state.Tokenizer);
        display.Line("Samples from the pretrained model (temperature 0.8, top-k 50):");
        using var decoder = TokenDecoder.Create(model);
        var samples = decoder.Generate([.. SamplePrompts.Select(p => (int[])[tokenizer.BosId, .. tokenizer.Encode(p)])],
            new SamplingOptions(Temperature: 0.8, TopK: 50, MaxNewTokens: 48, StopTokens: [tokenizer.BosId, tokenizer.EosId]));
        for (int i = 0; i < SamplePrompts.Length; i++)
            display.Line(SamplePrompts[i] + tokenizer.Decode(samples[i].Tokens.Where(t => !tokenizer.IsSpecial(t))));
    }

    /// <summary>A few chats with the RLHF (PPO) model (temperature 0.7).</summary>
    public static void SampleChats(SpeedrunPlan plan, IStageDisplay display)
    {
        var (model, state) = Checkpoint.LoadModel(plan.Policy);
        using var _ = model;
        var tokenizer = GptTokenizer.Load(state.Tokenizer);
        var template = new ChatTemplate(tokenizer);
        display.Line("Chats with the RLHF (PPO) model (temperature 0.7):");
        using var decoder = TokenDecoder.Create(model);
        var answers = decoder.Generate([.. SampleQuestions.Select(q => template.RenderPrompt([new ChatMessage(ChatRoles.User, q)]))],
            new SamplingOptions(Temperature: 0.7, TopK: 50, MaxNewTokens: 64, StopTokens: [tokenizer.EndId, tokenizer.BosId]));
        for (int i = 0; i < SampleQuestions.Length; i++)
        {
            display.Line($"user: {SampleQuestions[i]}");
            display.Line($"assistant: {tokenizer.Decode(answers[i].Tokens.Where(t => !tokenizer.IsSpecial(t)))}");
        }
    }

    // ---- The stages, in order ----

    /// <summary>Chinese poetry and English prose, so one vocabulary serves every later stage.</summary>
    public static object Tokenizer(StageContext c)
    {
        var texts = SpeedrunPlan.TokenizerCorpora.SelectMany(Corpus.Read).Select(d => d.Text).ToList();
        var options = c.Plan.TokenizerTraining;
        var result = c.Display.Progress("tokenizer", options.VocabSize - 256 - SpecialTokens.All.Count, "merges",
            report => BpeTrainer.Train(texts, options, (done, _) => { if (done % 64 == 0) report(done); }));
        var spec = GptTokenizer.Save(result, "speedrun", c.Plan.Tokenizer);
        return new { spec.VocabSize, result.MergeCount, inputMegabytes = result.InputBytes / 1e6, seconds = result.Elapsed.TotalSeconds };
    }

    public static object Data(StageContext c)
    {
        var tokenizer = GptTokenizer.Load(c.Plan.Tokenizer);
        return c.Display.Progress("data", double.NaN, "docs",
            report => ShardBuilder.Build(tokenizer, Path.GetFullPath(c.Plan.Tokenizer), c.Plan.Shards, c.Plan.Data, n => report(n)));
    }

    /// <summary>Next-token prediction on the Tang poems; a killed stage resumes from its last checkpoint.</summary>
    public static object Pretrain(StageContext c)
    {
        var plan = c.Plan;
        var config = plan.Model(ShardSummary.Load(plan.Data).VocabSize);
        var training = plan.PretrainTraining;
        var result = c.Display.Progress("pretrain", training.Steps, "steps", report =>
            PretrainRun.Execute(config, training, plan.Data, AlignmentStages.Run(plan.Pretrain, c.Device, m => report(m.Step)),
                onStart: (_, start, _) => report(start)));
        return new { plan.Options.Preset, result.StepsDone, result.FinalLoss, result.FinalValLoss, result.Seconds };
    }

    public static object Sft(StageContext c)
    {
        var plan = c.Plan;
        var data = BuiltInDatasets.Build();
        var training = plan.SftTraining;
        var report = c.Display.Progress("sft", training.Steps, "steps", progress =>
            SftRun.Execute(plan.Pretrain, data.TrainChats, data.HeldOutChats, training, AlignmentStages.Run(plan.Sft, c.Device, m => progress(m.Step)),
                onStart: (_, start) => progress(start)));
        return new { report.TrainConversations, report.HeldOutConversations, report.Training.FinalLoss, report.Training.FinalValLoss, report.Training.Seconds };
    }

    /// <summary>InstructGPT's loop: the SFT model answers each training title K times and a labeler (the verse task's
    /// reward) ranks the answers; every pair ranked apart is a comparison the reward model and DPO learn from.</summary>
    public static object Feedback(StageContext c)
    {
        var report = c.Display.Progress("feedback", c.Plan.Options.FeedbackPrompts, "prompts", progress => AlignmentStages.Feedback(c.Plan, n => progress(n)));
        c.Display.Line($"feedback: {report.Pairs:N0} comparisons from {report.Prompts:N0} titles × {c.Plan.FeedbackSettings.AnswersPerPrompt} answers ({report.Ties:N0} titles all alike)");
        return report;
    }

    public static object Reward(StageContext c)
    {
        var report = c.Display.Progress("reward", c.Plan.RewardTraining.Steps, "steps", progress =>
            AlignmentStages.Reward(c.Plan, c.Device, onStart: start => progress(start), onStep: m => progress(m.Step)));
        var training = report.Training;
        c.Display.Line($"reward model: held-out accuracy {100 * training.HeldOutAccuracy:F1}% over {training.HeldOutPairs:N0} comparisons; " +
                       $"agrees with the labeler (the graded verse check) on {100 * report.GoldAgreement:F1}% of {report.GoldPairs:N0} fresh pairs");
        return new { training.TrainPairs, training.HeldOutPairs, training.HeldOutAccuracy, training.HeldOutLoss, report.GoldAgreement, report.GoldPairs, training.Training.Seconds };
    }

    public static object Ppo(StageContext c)
    {
        var report = c.Display.Progress("ppo", c.Plan.PpoTraining.Steps, "steps", progress => AlignmentStages.Ppo(c.Plan, c.Device, onStep: m => progress(m.Step)));
        var rollouts = report.Rollouts;
        double first = rollouts.Take(3).Average(r => r.MeanScore), final = rollouts.TakeLast(3).Average(r => r.MeanScore);
        c.Display.Line($"ppo: mean reward {first:F2} → {final:F2} over {rollouts.Count} rollouts, final KL {rollouts[^1].MeanKl:F2}; " +
                       $"kept step {report.Kept?.Step} (held-out gold {report.Kept?.Score:P1})");
        return new { rollouts = rollouts.Count, firstReward = first, lastReward = final, finalKl = rollouts[^1].MeanKl, keptStep = report.Kept?.Step,
            keptGold = report.Kept?.Score, report.Training.Seconds };
    }

    public static object Grpo(StageContext c) =>
        GrpoStage(c, "grpo", c.Plan.GrpoTraining.Steps, onStep => AlignmentStages.Grpo(c.Plan, c.Device, onStep));

    public static object Dpo(StageContext c)
    {
        var report = c.Display.Progress("dpo", c.Plan.DpoTraining.Steps, "steps", progress =>
            AlignmentStages.Dpo(c.Plan, c.Device, onStart: start => progress(start), onStep: m => progress(m.Step)));
        c.Display.Line($"dpo: held-out loss {report.HeldOutLoss:F3}, chosen preferred on {100 * report.HeldOutPreferenceAccuracy:F1}% of held-out pairs");
        return new { report.TrainPairs, report.HeldOutPairs, report.HeldOutLoss, report.HeldOutPreferenceAccuracy, report.Training.Seconds };
    }

    /// <summary>Tool use is a skill of its own: arithmetic conversations that call the calculator (and some that answer without it).</summary>
    public static object ToolSft(StageContext c)
    {
        var report = c.Display.Progress("sft-tools", c.Plan.ToolSftTraining.Steps, "steps", progress =>
            AlignmentStages.ToolSft(c.Plan, c.Device, onStep: m => progress(m.Step)));
        c.Display.Line($"sft-tools: held-out loss {report.Training.FinalValLoss:F3} on assistant tokens of {report.HeldOutConversations} held-out conversations");
        return new { report.TrainConversations, report.HeldOutConversations, report.Training.FinalLoss, report.Training.FinalValLoss, report.Training.Seconds };
    }

    public static object ToolGrpo(StageContext c) =>
        GrpoStage(c, "grpo-tools", c.Plan.ToolGrpoTraining.Steps, onStep => AlignmentStages.ToolGrpo(c.Plan, c.Device, onStep));

    static object GrpoStage(StageContext c, string stage, int steps, Func<Action<StepMetrics>, GrpoReport> run)
    {
        var report = c.Display.Progress(stage, steps, "steps", progress => run(m => progress(m.Step)));
        var rollouts = report.Rollouts;
        double first = rollouts.Take(3).Average(r => r.MeanReward), final = rollouts.TakeLast(3).Average(r => r.MeanReward);
        c.Display.Line($"{stage}: mean reward {first:F2} → {final:F2} over {rollouts.Count} rollouts; kept step {report.Kept?.Step} (held-out gold {report.Kept?.Score:P1})");
        return new { rollouts = rollouts.Count, firstReward = first, lastReward = final, keptStep = report.Kept?.Step, keptGold = report.Kept?.Score, report.Training.Seconds };
    }

    static readonly JsonSerializerOptions AnswersJson = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The verifiable task: every rule of regulated verse and strict over fixed held-out prompts (titles with
    /// their instructions), the same seeds for every model, each answer with its verdicts in <c>score/answers.jsonl</c>;
    /// then, with the tool stages, arithmetic with and without the calculator for every chat model.</summary>
    public static object Score(StageContext c)
    {
        var plan = c.Plan;
        var verse = Verse.Embedded();
        var rules = Enum.GetValues<VerseRule>();
        var rows = new List<IReadOnlyList<string>>();
        var shares = new Dictionary<string, double>();
        var distinct = new Dictionary<string, double>();
        var strict = new Dictionary<string, double>();
        var ruleRates = new Dictionary<string, Dictionary<string, double>>();
        var answers = new List<string>();
        foreach (var (name, folder, bestOf) in AlignmentStages.ScoredModels(plan))
        {
            var score = c.Display.Progress($"score {name}", double.NaN, "", _ => AlignmentStages.Score(plan, verse, folder, bestOf));
            shares[name] = score.Form;
            strict[name] = score.Strict;
            distinct[name] = score.Distinct / (double)score.Prompts;
            ruleRates[name] = rules.ToDictionary(r => r.ToString(), r => Math.Round(score.RuleRates[r], 4));
            rows.Add([name, .. rules.Select(r => $"{score.RuleRates[r]:P1}"), $"{score.Strict:P1}", $"{score.Distinct}/{score.Prompts}"]);
            answers.AddRange(score.Answers.Select(a => JsonSerializer.Serialize(new
            {
                model = name, prompt = a.Prompt, answer = a.Poem, strict = a.Verdict.Strict, graded = Math.Round(a.Verdict.Graded, 4),
                rules = a.Verdict.Rules.ToDictionary(r => r.Rule.ToString(), r => r.Passed), unknown = a.Verdict.Unknown,
            }, AnswersJson)));
        }
        c.Display.Table(["model", .. rules.Select(r => r.ToString()), "strict", "distinct"], rows);
        AtomicFile.WriteAllText(Path.Combine(plan.Folder("score"), "answers.jsonl"), string.Join("\n", answers) + "\n");

        Dictionary<string, object>? arithmetic = null;
        if (plan.Options.WithTools)
        {
            arithmetic = [];
            var arithmeticRows = new List<IReadOnlyList<string>>();
            foreach (var (name, folder) in AlignmentStages.ArithmeticModels(plan))
            {
                var (without, with) = c.Display.Progress($"arithmetic {name}", double.NaN, "", _ => AlignmentStages.MeasureArithmetic(folder));
                arithmetic[name] = new { withoutTool = without.Accuracy, withTool = with.Accuracy, toolCalls = with.ToolCalls / (double)with.Problems };
                arithmeticRows.Add([name, $"{without.Correct}/{without.Problems}", $"{with.Correct}/{with.Problems}", $"{with.ToolCalls}/{with.Problems}"]);
            }
            c.Display.Table(["model", "arithmetic, no tool", "with calculator", "answers that called it"], arithmeticRows);
        }
        string best = $"sft best-of-{plan.Options.BestOf}";
        return new
        {
            task = "verse", @base = strict["base"], sft = strict["sft"], bestOf = strict[best], ppo = strict["ppo"], grpo = strict["grpo"], dpo = strict["dpo"],
            form = shares, rules = ruleRates, distinct, arithmetic,
        };
    }

    /// <summary>GPT-2/GPT-3: the same tasks zero- and few-shot, for the base and RLHF models alike.</summary>
    public static object Eval(StageContext c)
    {
        var results = new Dictionary<string, object>();
        foreach (var (name, dir) in new[] { ("base", c.Plan.Pretrain), ("ppo", c.Plan.Policy) })
        {
            var report = c.Display.Progress($"eval {name}", BuiltInTasks.Names.Count * 4, "scores", progress =>
            {
                int done = 0;
                return EvalRun.Execute(dir, BuiltInTasks.Names, [0, 1, 2, 4], Corpus.EmbeddedNames, c.Plan.Options.EvalItems, onScore: _ => progress(++done));
            });
            foreach (var score in report.Tasks.Where(t => t.Shots is 0 or 4)) results[$"{name} {score.Task} {score.Shots}-shot"] = Math.Round(score.Accuracy, 3);
        }
        return results;
    }

    /// <summary>The RLHF model for other runtimes: one GGUF file (llama.cpp, LLamaSharp, Ollama) and a transformers folder.</summary>
    public static object Export(StageContext c)
    {
        string gguf = Path.Combine(c.Plan.Export, "chat.gguf");
        Gguf.Export(c.Plan.Policy, gguf, GgmlType.F16);
        HuggingFace.Export(c.Plan.Policy, Path.Combine(c.Plan.Export, "hf"));
        return new { ggufMegabytes = Math.Round(new FileInfo(gguf).Length / 1e6, 1) };
    }
}
