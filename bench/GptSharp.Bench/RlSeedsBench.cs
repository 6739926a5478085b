using GptSharp.Training;
using System.Diagnostics;
using GptSharp.Runs;
using GptSharp.Speedrun;

namespace GptSharp.Bench;

/// <summary>
/// How far RL results move from seed to seed: from one speedrun's SFT model, the alignment stages (on-policy feedback,
/// reward model, PPO, GRPO, DPO, verse scores with best-of-N) run again under several seeds, seed by seed (so each
/// method meets the same machine state), and the strict verse score and the form share of each model are printed per
/// seed with mean and range. With <c>--pretrain</c> each seed first pretrains and fine-tunes a base of its own (the
/// source run's tokenizer and shards, every stage seeded), so the range covers independently pretrained bases.
/// Usage: <c>rl-seeds RUN [seeds] [--pretrain]</c> with RUN a speedrun folder whose SFT stage (with --pretrain: data
/// stage) is done (default seeds: 1,2,3).
/// </summary>
static class RlSeedsBench
{
    public static void Run(string[] args)
    {
        string source = args.Length > 1 ? args[1] : "runs/speedrun";
        bool fresh = args.Contains("--pretrain");
        var positional = args.Where(a => !a.StartsWith("--", StringComparison.Ordinal)).ToList();
        long[] seeds = positional.Count > 2 ? [.. positional[2].Split(',').Select(long.Parse)] : [1, 2, 3];
        var basePlan = SpeedrunPlan.Load(source);
        if (!fresh && Checkpoint.Find(basePlan.Sft) is null) throw new DirectoryNotFoundException($"{basePlan.Sft}: no SFT checkpoint; run `gptsharp speedrun --run-dir {source} --stop-after sft` first.");
        if (fresh && !File.Exists(Path.Combine(basePlan.Data, "train.bin"))) throw new DirectoryNotFoundException($"{basePlan.Data}: no token shards; run `gptsharp speedrun --run-dir {source} --stop-after data` first.");
        Console.WriteLine(fresh
            ? $"\n## RL from seeds {string.Join(", ", seeds)}: per seed a base pretrained and fine-tuned afresh, then every stage after it"
            : $"\n## RL from seeds {string.Join(", ", seeds)}: one SFT model ({Path.GetFullPath(basePlan.Sft)}), every stage after it per seed");
        var verse = Alignment.Verse.Embedded();
        var scores = new Dictionary<string, List<double>>();
        var extras = new Dictionary<string, List<double>>();
        string root = Path.Combine(Path.GetTempPath(), "gptsharp-rl-seeds-" + Guid.NewGuid().ToString("N")[..8]);
        foreach (long seed in seeds)
        {
            var plan = new SpeedrunPlan(Path.Combine(root, $"seed-{seed}"), fresh ? basePlan.Options with { Seed = seed } : basePlan.Options with { AlignmentSeed = seed });
            var watch = Stopwatch.StartNew();
            if (fresh)
            {
                Link(basePlan.Tokenizer, plan.Tokenizer);
                Link(basePlan.Data, plan.Data);
                var pretrained = Training.PretrainRun.Execute(plan.Model(Data.ShardSummary.Load(plan.Data).VocabSize), plan.PretrainTraining, plan.Data, new RunOptions(plan.Pretrain) { Resume = false, Device = "cpu" });
                var data = Alignment.BuiltInDatasets.Build();
                Alignment.SftRun.Execute(plan.Pretrain, data.TrainChats, data.HeldOutChats, plan.SftTraining, new RunOptions(plan.Sft) { Resume = false, Device = "cpu" });
                Add(extras, "pretrain validation loss", pretrained.FinalValLoss ?? double.NaN);
            }
            else
            {
                Link(basePlan.Pretrain, plan.Pretrain);
                Link(basePlan.Sft, plan.Sft);
            }
            var feedback = AlignmentStages.Feedback(plan);
            var reward = AlignmentStages.Reward(plan, "cpu");
            var ppo = AlignmentStages.Ppo(plan, "cpu");
            var grpo = AlignmentStages.Grpo(plan, "cpu");
            AlignmentStages.Dpo(plan, "cpu");
            Add(extras, "comparisons", feedback.Pairs);
            Add(extras, "reward held-out accuracy", reward.Training.HeldOutAccuracy);
            Add(extras, "reward agreement with the program", reward.GoldAgreement);
            Add(extras, "ppo final KL", ppo.Rollouts[^1].MeanKl);
            Add(extras, "ppo kept step", ppo.Kept?.Step ?? 0);
            Add(extras, "grpo kept step", grpo.Kept?.Step ?? 0);
            foreach (var (name, folder, bestOf) in AlignmentStages.ScoredModels(plan).Where(m => m.Name != "base"))
            {
                var score = AlignmentStages.Score(plan, verse, folder, bestOf);
                Add(scores, $"{name} strict", score.Strict);
                Add(scores, $"{name} form", score.Form);
            }
            Console.WriteLine($"seed {seed}: {string.Join(", ", scores.Select(s => $"{s.Key} {100 * s.Value[^1]:F1}%"))} ({watch.Elapsed.TotalSeconds:F0} s)");
        }
        Console.WriteLine($"\n| model | {string.Join(" | ", seeds.Select(s => $"seed {s}"))} | mean | range |");
        Console.WriteLine($"|---|{string.Concat(seeds.Select(_ => "---|"))}---|---|");
        foreach (var (name, values) in scores)
            Console.WriteLine($"| {name} | {string.Join(" | ", values.Select(v => $"{100 * v:F1}%"))} | {100 * values.Average():F1}% | {100 * values.Min():F1}–{100 * values.Max():F1}% |");
        foreach (var (name, values) in extras)
            Console.WriteLine($"| {name} | {string.Join(" | ", values.Select(v => $"{v:G4}"))} | {values.Average():G4} | {values.Min():G4}–{values.Max():G4} |");
        Console.WriteLine($"(verse score: {basePlan.Options.ScorePrompts} held-out prompts, one poem each at temperature 0.7; strict and the share of regular form; runs in {root})");
    }

    static void Add(Dictionary<string, List<double>> table, string key, double value)
    {
        if (!table.TryGetValue(key, out var list)) table[key] = list = [];
        list.Add(value);
    }

    /// <summary>The stage folders every seed starts from, shared read-only.</summary>
    static void Link(string from, string to)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(to)!);
        Directory.CreateSymbolicLink(to, Path.GetFullPath(from));
    }
}
