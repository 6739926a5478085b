using GptSharp.Runs;
using GptSharp.Runtime;
using System.ComponentModel;
using System.Text.Json;
using GptSharp.Alignment;
using GptSharp.Data;
using GptSharp.Evaluation;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Training;
using GptSharp.Interop;
using GptSharp.Tokenization;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class SpeedrunSettings : CommonSettings
{
    [CommandOption("-r|--run-dir")]
    [Description("Folder for every stage's output.")]
    public string RunDir { get; init; } = "runs/speedrun";

    [CommandOption("--vocab-size")]
    public int VocabSize { get; init; } = 8192;

    [CommandOption("--preset")]
    [Description("Model preset for pretraining (tiny on a laptop; small or gpt2-124m with time or a GPU).")]
    public string Preset { get; init; } = "tiny";

    [CommandOption("--pretrain-steps")]
    public int PretrainSteps { get; init; } = 1500;

    [CommandOption("--sft-steps")]
    public int SftSteps { get; init; } = 400;

    [CommandOption("--reward-steps")]
    public int RewardSteps { get; init; } = 800;

    [CommandOption("--ppo-steps")]
    public int PpoSteps { get; init; } = 200;

    [CommandOption("--dpo-steps")]
    public int DpoSteps { get; init; } = 200;

    [CommandOption("--score-prompts")]
    [Description("Held-out titles for the verifiable form score of the base, SFT, PPO and DPO models.")]
    public int ScorePrompts { get; init; } = 200;

    [CommandOption("--eval-items")]
    [Description("Held-out items per evaluation task.")]
    public int EvalItems { get; init; } = 100;

    [CommandOption("--device")]
    public string Device { get; init; } = "cpu";

    [CommandOption("--from")]
    [Description("Rerun from this stage on (tokenizer, data, pretrain, sft, reward, ppo, dpo, score, eval, export), discarding its done-marker and those after it.")]
    public string? From { get; init; }
}

/// <summary>
/// <c>gptsharp speedrun</c>: the main job, stage by stage on the embedded data. Each stage writes <c>done.json</c> into
/// its folder when it finishes; a rerun skips finished stages.
/// </summary>
sealed class SpeedrunCommand : Command<SpeedrunSettings>
{
    static readonly string[] Stages = ["tokenizer", "data", "pretrain", "sft", "reward", "ppo", "dpo", "score", "eval", "export"];
    static readonly string[] SampleQuestions = ["《靜夜思》的作者是誰？", "寫一首詩，題為《春曉》。", "請接下句：白日依山盡，"];
    static readonly string[] SamplePrompts = ["床前明月光", "白日依山盡", "春眠不覺曉"];

    public override int Execute(CommandContext context, SpeedrunSettings settings, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(settings.Threads, settings.Device);
        if (settings.From is not null)
        {
            int from = Array.IndexOf(Stages, settings.From);
            if (from < 0) throw new ArgumentException($"--from {settings.From}: unknown stage; stages are {string.Join(", ", Stages)}.");
            foreach (string stage in Stages[from..]) File.Delete(DoneMarker(settings, stage));
        }

        string tokenizerDir = Path.Combine(settings.RunDir, "tokenizer");
        RunStage(settings, "tokenizer", () =>
        {
            // Chinese poetry and English prose, so one vocabulary serves every later stage.
            var texts = new[] { "tang", "songci", "sotu", "brown", "moby-dick" }.SelectMany(Corpus.Read).Select(d => d.Text).ToList();
            var options = new BpeTrainingOptions(settings.VocabSize);
            var result = ProgressDisplay.Run("tokenizer", options.VocabSize - 256 - SpecialTokens.All.Count, "merges", settings.Quiet,
                report => BpeTrainer.Train(texts, options, (done, _) => { if (done % 64 == 0) report(done); }));
            var spec = GptTokenizer.Save(result, "speedrun", tokenizerDir);
            return new { spec.VocabSize, result.MergeCount, inputMegabytes = result.InputBytes / 1e6, seconds = result.Elapsed.TotalSeconds };
        });

        RunStage(settings, "data", () =>
        {
            var tokenizer = GptTokenizer.Load(tokenizerDir);
            var summary = ProgressDisplay.Run("data", double.NaN, "docs", settings.Quiet,
                report => ShardBuilder.Build(tokenizer, Path.GetFullPath(tokenizerDir), new ShardOptions(["tang"]), Path.Combine(settings.RunDir, "data"), n => report(n)));
            return summary;
        });

        string pretrainDir = Path.Combine(settings.RunDir, "pretrain");
        RunStage(settings, "pretrain", () =>
        {
            var data = ShardSummary.Load(Path.Combine(settings.RunDir, "data"));
            var config = GptConfig.Preset(settings.Preset, data.VocabSize);
            var training = new TrainingConfig { Steps = settings.PretrainSteps, WarmupSteps = Math.Min(100, settings.PretrainSteps / 10), EvalEvery = 250, CheckpointEvery = 250 };
            // A killed pretrain stage resumes from its last checkpoint.
            bool resume = Checkpoint.Find(pretrainDir) is not null;
            var result = ProgressDisplay.Run("pretrain", training.Steps, "steps", settings.Quiet, report =>
                PretrainRun.Execute(config, training, Path.Combine(settings.RunDir, "data"), pretrainDir, resume, runtime.Device,
                    onStart: (_, start, _) => report(start), onStep: m => report(m.Step)));
            return new { settings.Preset, result.StepsDone, result.FinalLoss, result.FinalValLoss, result.Seconds };
        });

        var (model, state) = Checkpoint.LoadModel(pretrainDir);
        using (model)
        {
            var tokenizer = GptTokenizer.Load(state.Tokenizer);
            var generator = new TokenDecoder(model);
            AnsiConsole.MarkupLine("[bold]Samples from the pretrained model[/] (temperature 0.8, top-k 50):");
            foreach (string prompt in SamplePrompts)
            {
                var tokens = generator.Generate([[tokenizer.BosId, .. tokenizer.Encode(prompt)]],
                    new SamplingOptions(Temperature: 0.8, TopK: 50, MaxNewTokens: 48, StopTokens: [tokenizer.BosId, tokenizer.EosId]))[0].Tokens;
                AnsiConsole.WriteLine(prompt + tokenizer.Decode(tokens.Where(t => !tokenizer.IsSpecial(t))));
            }
        }

        string sftDir = Path.Combine(settings.RunDir, "sft");
        RunStage(settings, "sft", () =>
        {
            var data = BuiltInDatasets.Build();
            var training = new TrainingConfig { Steps = settings.SftSteps, LearningRate = 1e-3, WarmupSteps = 20, EvalEvery = 100, CheckpointEvery = 100 };
            bool resume = Checkpoint.Find(sftDir) is not null;
            var report = ProgressDisplay.Run("sft", training.Steps, "steps", settings.Quiet, progress =>
                SftRun.Execute(pretrainDir, data.TrainChats, data.HeldOutChats, training, sftDir, resume, runtime.Device,
                    onStart: (_, start) => progress(start), onStep: m => progress(m.Step)));
            return new { report.TrainConversations, report.HeldOutConversations, report.Training.FinalLoss, report.Training.FinalValLoss, report.Training.Seconds };
        });

        string rewardDir = Path.Combine(settings.RunDir, "reward");
        RunStage(settings, "reward", () =>
        {
            var data = BuiltInDatasets.Build();
            var training = new TrainingConfig { Steps = settings.RewardSteps, LearningRate = 1e-3, WarmupSteps = 20, WeightDecay = 0, EvalEvery = 200, CheckpointEvery = 200 };
            bool resume = Checkpoint.Find(rewardDir) is not null;
            var report = ProgressDisplay.Run("reward", training.Steps, "steps", settings.Quiet, progress =>
                RewardRun.Execute(sftDir, data.TrainPairs, data.HeldOutPairs, training, rewardDir, resume, runtime.Device,
                    onStart: start => progress(start), onStep: m => progress(m.Step)));
            AnsiConsole.MarkupLine($"reward model: held-out pairwise accuracy {100 * report.HeldOutAccuracy:F1}% over {report.HeldOutPairs:N0} pairs");
            return new { report.TrainPairs, report.HeldOutPairs, report.HeldOutAccuracy, report.HeldOutLoss, report.Training.Seconds };
        });

        string ppoDir = Path.Combine(settings.RunDir, "ppo");
        RunStage(settings, "ppo", () =>
        {
            // RLHF against the learned reward model, on the built-in poem prompts.
            var prompts = BuiltInDatasets.Build().TrainChats.Select(c => c[0].Content).Where(q => q.StartsWith("寫一首詩", StringComparison.Ordinal)).ToList();
            // A firmer KL leash and a smaller step than the command's defaults: measured, the speedrun's reward model
            // is exploited (KL 14, form score 73% → 28%) at KL 0.05 and lr 2e-5.
            var ppo = new PpoConfig { MaxNewTokens = 64, KlCoefficient = 0.1 };
            var training = new TrainingConfig { Steps = settings.PpoSteps, BatchSize = ppo.MiniBatch, LearningRate = 1e-5, WarmupSteps = 0, MinLrRatio = 1, WeightDecay = 0, EvalEvery = settings.PpoSteps, CheckpointEvery = 48 };
            bool resume = Checkpoint.Find(ppoDir) is not null;
            var report = ProgressDisplay.Run("ppo", training.Steps, "steps", settings.Quiet, progress =>
                PpoRun.Execute(sftDir, rewardDir, prompts, ppo, training, ppoDir, runtime.Device, onStep: m => progress(m.Step), resume: resume));
            var rollouts = report.Rollouts;
            double first = rollouts.Take(3).Average(r => r.MeanScore), last = rollouts.TakeLast(3).Average(r => r.MeanScore);
            AnsiConsole.MarkupLine($"ppo: mean reward {first:F2} → {last:F2} over {rollouts.Count} rollouts, final KL {rollouts[^1].MeanKl:F2}");
            return new { rollouts = rollouts.Count, firstReward = first, lastReward = last, finalKl = rollouts[^1].MeanKl, report.Training.Seconds };
        });

        RunStage(settings, "dpo", () =>
        {
            var data = BuiltInDatasets.Build();
            var training = new TrainingConfig { Steps = settings.DpoSteps, BatchSize = 8, LearningRate = 5e-5, WarmupSteps = 10, WeightDecay = 0, EvalEvery = 100, CheckpointEvery = 100 };
            string dpoDir = Path.Combine(settings.RunDir, "dpo");
            bool resume = Checkpoint.Find(dpoDir) is not null;
            var report = ProgressDisplay.Run("dpo", training.Steps, "steps", settings.Quiet, progress =>
                DpoRun.Execute(sftDir, data.TrainPairs, data.HeldOutPairs, training, dpoDir, resume, beta: 0.5, runtime.Device,
                    onStart: start => progress(start), onStep: m => progress(m.Step)));
            AnsiConsole.MarkupLine($"dpo: held-out loss {report.HeldOutLoss:F3}, chosen preferred on {100 * report.HeldOutPreferenceAccuracy:F1}% of held-out pairs");
            return new { report.TrainPairs, report.HeldOutPairs, report.HeldOutLoss, report.HeldOutPreferenceAccuracy, report.Training.Seconds };
        });

        RunStage(settings, "score", () =>
        {
            // The verifiable task: the share of regular poems over fixed held-out titles, same seeds for every model.
            var prompts = FormScore.Prompts(settings.ScorePrompts);
            var table = new Table().AddColumns("model", "regular poems", "share");
            var shares = new Dictionary<string, double>();
            foreach (var (name, dir) in new[] { ("base", pretrainDir), ("sft", sftDir), ("ppo", Path.Combine(ppoDir, PpoRun.PolicyFolder)), ("dpo", Path.Combine(settings.RunDir, "dpo")) })
            {
                var (policy, policyState) = Checkpoint.LoadModel(dir);
                using (policy)
                {
                    var score = ProgressDisplay.Run($"score {name}", double.NaN, "", settings.Quiet, (Action<double> _) => FormScore.Measure(policy, GptTokenizer.Load(policyState.Tokenizer), prompts));
                    shares[name] = score.Share;
                    table.AddRow(name, $"{score.Regular}/{score.Prompts}", $"{score.Share:P1}");
                }
            }
            AnsiConsole.Write(table);
            return shares;
        });

        RunStage(settings, "eval", () =>
        {
            // GPT-2/GPT-3: the same tasks zero- and few-shot, for the base, SFT and RLHF models alike.
            var results = new Dictionary<string, object>();
            foreach (var (name, dir) in new[] { ("base", pretrainDir), ("sft", sftDir), ("ppo", Path.Combine(ppoDir, PpoRun.PolicyFolder)) })
            {
                var report = ProgressDisplay.Run($"eval {name}", BuiltInTasks.Names.Count * 4, "scores", settings.Quiet, (Action<double> progress) =>
                {
                    int done = 0;
                    return EvalRun.Execute(dir, BuiltInTasks.Names, [0, 1, 2, 4], Corpus.EmbeddedNames, settings.EvalItems, onScore: _ => progress(++done));
                });
                foreach (var score in report.Tasks.Where(t => t.Shots is 0 or 4)) results[$"{name} {score.Task} {score.Shots}-shot"] = Math.Round(score.Accuracy, 3);
            }
            return results;
        });
        RunStage(settings, "export", () =>
        {
            // The RLHF model for other runtimes: one GGUF file (llama.cpp, LLamaSharp, Ollama) and a transformers folder.
            string exportDir = Path.Combine(settings.RunDir, "export"), policy = Path.Combine(ppoDir, PpoRun.PolicyFolder);
            string gguf = Path.Combine(exportDir, "chat.gguf");
            Gguf.Export(policy, gguf, GgmlType.F16);
            HuggingFace.Export(policy, Path.Combine(exportDir, "hf"));
            return new { ggufMegabytes = Math.Round(new FileInfo(gguf).Length / 1e6, 1) };
        });
        AnsiConsole.MarkupLine($"Report card: {Markup.Escape(ReportCard.Write(settings.RunDir))}");

        var (chatModel, chatState) = Checkpoint.LoadModel(Path.Combine(ppoDir, PpoRun.PolicyFolder));
        using (chatModel)
        {
            var tokenizer = GptTokenizer.Load(chatState.Tokenizer);
            var template = new ChatTemplate(tokenizer);
            var generator = new TokenDecoder(chatModel);
            AnsiConsole.MarkupLine("[bold]Chats with the RLHF (PPO) model[/] (temperature 0.7):");
            foreach (string question in SampleQuestions)
            {
                var answer = generator.Generate([template.RenderPrompt([new ChatMessage(ChatRoles.User, question)])],
                    new SamplingOptions(Temperature: 0.7, TopK: 50, MaxNewTokens: 64, StopTokens: [tokenizer.EndId, tokenizer.BosId]))[0].Tokens;
                AnsiConsole.WriteLine($"user: {question}");
                AnsiConsole.WriteLine($"assistant: {tokenizer.Decode(answer.Where(t => !tokenizer.IsSpecial(t)))}");
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
