using GptSharp.Evaluation;
using GptSharp.Training;
using GptSharp.Alignment;
using GptSharp.Runs;
using GptSharp.Speedrun;
using GptSharp.Tokenization;

namespace GptSharp.Bench;

/// <summary>
/// Over-optimising a learned reward (Gao et al. 2022): from one speedrun's SFT model and reward model, PPO runs long at
/// a few KL targets (the adaptive controller's), logging per rollout the proxy (the reward model's score), the gold (the
/// strict verse check) and the KL to the SFT model; every 5 rollouts the policy's held-out strict share is measured and
/// the best kept, as the speedrun's PPO does. Prints gold and proxy in KL bins per target, where gold peaked, and what
/// the selection kept against the last policy. Usage: <c>overopt RUN [steps] [targets]</c> (default 600 steps, targets
/// 1,4,16).
/// </summary>
static class OverOptimisationBench
{
    public static void Run(string[] args)
    {
        string source = args.Length > 1 ? args[1] : "runs/speedrun";
        int steps = args.Length > 2 ? int.Parse(args[2]) : 600;
        double[] targets = args.Length > 3 ? [.. args[3].Split(',').Select(double.Parse)] : [1, 4, 16];
        var plan = SpeedrunPlan.Load(source);
        if (Checkpoint.Find(plan.Reward) is null) throw new DirectoryNotFoundException($"{plan.Reward}: no reward model; run `gptsharp speedrun --run-dir {source} --stop-after reward` first.");
        var task = RlTasks.Verse();
        var tokenizer = GptTokenizer.Load(Checkpoint.ReadState(plan.Sft).Tokenizer);
        string root = Path.Combine(Path.GetTempPath(), "gptsharp-overopt-" + Guid.NewGuid().ToString("N")[..8]);
        Console.WriteLine($"\n## Over-optimisation: PPO against the reward model of {Path.GetFullPath(plan.Reward)}, {steps} steps, KL targets {string.Join(", ", targets)}");
        foreach (double target in targets)
        {
            var settings = plan.PpoSettings with { KlTarget = target };
            var training = plan.PpoTraining with { Steps = steps };
            string folder = Path.Combine(root, $"target-{target}");
            var report = PpoRun.Execute(plan.Sft, plan.Reward, task.Prompts, settings, training, new RunOptions(folder) { Device = "cpu" }, gold: task.Gold, selection: new PolicySelection(p => task.HeldOutGold!(p, tokenizer)));
            var rollouts = report.Rollouts;
            Console.WriteLine($"\n### KL target {target}: {rollouts.Count} rollouts");
            Console.WriteLine("| KL bin (nats) | rollouts | proxy (reward model) | gold (strict, rollout answers) |");
            Console.WriteLine("|---|---|---|---|");
            double maxKl = rollouts.Max(r => r.MeanKl);
            double[] edges = [0, 0.25, 0.5, 1, 2, 4, 8, 16, 32, double.PositiveInfinity];
            for (int e = 0; e + 1 < edges.Length && edges[e] <= maxKl; e++)
            {
                var bin = rollouts.Where(r => r.MeanKl >= edges[e] && r.MeanKl < edges[e + 1]).ToList();
                if (bin.Count == 0) continue;
                Console.WriteLine($"| {edges[e]:G3}–{edges[e + 1]:G3} | {bin.Count} | {bin.Average(r => r.MeanScore):F3} | {100 * bin.Average(r => r.MeanGold ?? 0):F1}% |");
            }
            var smoothed = rollouts.Select((r, i) => (Rollout: r, Gold: rollouts.Skip(Math.Max(0, i - 4)).Take(Math.Min(5, i + 1)).Average(x => x.MeanGold ?? 0))).ToList();
            var peak = smoothed.MaxBy(s => s.Gold);
            Console.WriteLine($"gold peaked at rollout {peak.Rollout.Iteration} (running mean of 5: {100 * peak.Gold:F1}%, KL {peak.Rollout.MeanKl:F2}); " +
                              $"last rollouts: gold {100 * smoothed[^1].Gold:F1}%, KL {rollouts[^1].MeanKl:F2}, proxy {rollouts[^1].MeanScore:F3}");
            var checks = report.GoldChecks;
            if (checks.Count > 0)
                Console.WriteLine($"held-out strict checks: {string.Join(", ", checks.Select(c => $"step {c.Step} {100 * c.Score:F1}%"))}; " +
                                  $"kept step {report.Kept?.Step} ({100 * report.Kept?.Score:F1}%) against the last check's {100 * checks[^1].Score:F1}%");
        }
        Console.WriteLine($"(runs in {root})");
    }
}
