using System.Diagnostics;
using GptSharp.Alignment;
using GptSharp.Evaluation;
using GptSharp.Runs;
using GptSharp.Speedrun;
using GptSharp.Tokenization;
using GptSharp.Training;
using static TorchSharp.torch;

namespace GptSharp.Bench;

/// <summary>
/// <c>rl-algorithms RUN [steps] [seeds] [variants]</c>: the main job's verse task, GRPO from the speedrun RUN's SFT model
/// under each advantage estimator and loss — DAPO's loss with two passes (the speedrun's), GRPO's, Dr. GRPO's, GSPO,
/// CISPO, RLOO and REINFORCE++ advantages (with DAPO's loss), and DAPO with dynamic sampling — at the same number of
/// optimiser steps (each rollout 8 titles × 8 poems; dynamic sampling samples more when groups are uniform), each seed
/// in turn so every variant meets the same machine state. Per run: the strict verse score and the regular-form share of
/// the kept policy (the held-out prompts, one poem each at 0.7), KL(policy ‖ SFT) per token on 64 fresh poems, and wall
/// time. Default: the speedrun's 1,000 steps, seeds 1,2,3, every variant (or those whose names begin with one of a comma-separated list).
/// </summary>
static class RlAlgorithmsBench
{
    static readonly (string Name, Func<GrpoConfig, GrpoConfig> Change)[] Variants =
    [
        ("dapo with 2 epochs (speedrun)", c => c),
        ("grpo loss", c => c with { Loss = GrpoLoss.Grpo }),
        ("dr_grpo loss", c => c with { Loss = GrpoLoss.DrGrpo }),
        ("gspo loss", c => c with { Loss = GrpoLoss.Gspo }),
        ("cispo loss", c => c with { Loss = GrpoLoss.Cispo }),
        ("rloo advantages", c => c with { Advantage = AdvantageEstimator.Rloo }),
        ("reinforce++ advantages", c => c with { Advantage = AdvantageEstimator.ReinforcePlusPlus }),
        ("dapo + dynamic sampling", c => c with { DynamicSampling = true }),
    ];

    public static void Run(string[] args)
    {
        string source = args.Length > 1 ? args[1] : "runs/speedrun";
        var plan = SpeedrunPlan.Load(source);
        int steps = args.Length > 2 ? int.Parse(args[2]) : plan.GrpoTraining.Steps;
        long[] seeds = args.Length > 3 ? [.. args[3].Split(',').Select(long.Parse)] : [1, 2, 3];
        var variants = args.Length > 4 ? [.. Variants.Where(v => args[4].Split(',').Any(n => v.Name.StartsWith(n, StringComparison.Ordinal)))] : Variants;
        if (Checkpoint.Find(plan.Sft) is null) throw new DirectoryNotFoundException($"{plan.Sft}: no SFT checkpoint; run `gptsharp speedrun --run-dir {source} --stop-after sft` first.");
        var verse = Verse.Embedded();
        var task = RlTasks.Named("verse");
        var tokenizer = GptTokenizer.Load(Checkpoint.ReadState(plan.Sft).Tokenizer);
        string root = Path.Combine(Path.GetTempPath(), "gptsharp-rl-algorithms-" + Guid.NewGuid().ToString("N")[..8]);
        var results = variants.ToDictionary(v => v.Name, _ => new List<(double Strict, double Form, double Kl, double Seconds)>());
        Console.WriteLine($"\n## RL algorithms on the verse task: {steps} steps from {Path.GetFullPath(plan.Sft)}, seeds {string.Join(", ", seeds)}");
        foreach (long seed in seeds)
            foreach (var (name, change) in variants)
            {
                string folder = Path.Combine(root, $"{seed}-{results.Keys.ToList().IndexOf(name)}");
                var config = change(plan.GrpoSettings);
                var training = plan.GrpoTraining with { Steps = steps, Seed = seed, CheckpointEvery = config.StepsPerRollout * plan.GrpoSelectEvery };
                var watch = Stopwatch.StartNew();
                GrpoRun.Execute(plan.Sft, task.Prompts, task.Program, config, training, new RunOptions(folder) { Device = "cpu" },
                    selection: new PolicySelection(p => task.HeldOutGold!(p, tokenizer), plan.GrpoSelectEvery), rewardDescription: task.Name, environment: task.Environment);
                double seconds = watch.Elapsed.TotalSeconds;
                string policy = Path.Combine(folder, RlRun.PolicyFolder);
                var score = AlignmentStages.Score(plan, verse, policy);
                double kl = KlToSft(policy, plan.Sft, tokenizer, task.Prompts);
                results[name].Add((score.Strict, score.Form, kl, seconds));
                Console.WriteLine($"seed {seed}, {name}: strict {100 * score.Strict:F1}%, form {100 * score.Form:F1}%, KL {kl:F3}, {seconds:F0} s");
            }
        Console.WriteLine("\n| variant | strict (per seed) | strict range | form range | KL to SFT per token | seconds |");
        Console.WriteLine("|---|---|---|---|---|---|");
        foreach (var (name, runs) in results)
            Console.WriteLine($"| {name} | {string.Join(", ", runs.Select(r => $"{100 * r.Strict:F1}%"))} | {100 * runs.Min(r => r.Strict):F1}–{100 * runs.Max(r => r.Strict):F1}% | " +
                              $"{100 * runs.Min(r => r.Form):F1}–{100 * runs.Max(r => r.Form):F1}% | {runs.Min(r => r.Kl):F3}–{runs.Max(r => r.Kl):F3} | {Stats.Median(runs.Select(r => r.Seconds)):F0} |");
        Console.WriteLine($"(runs in {root})");
    }

    /// <summary>KL(policy ‖ SFT) per answer token, from 64 poems the policy samples at temperature 1 (the k1 estimator).</summary>
    static double KlToSft(string policyFolder, string sftFolder, GptTokenizer tokenizer, IReadOnlyList<string> prompts)
    {
        var (policy, _) = Checkpoint.LoadModel(policyFolder);
        var (sft, _) = Checkpoint.LoadModel(sftFolder);
        using (policy)
        using (sft)
        {
            policy.eval();
            sft.eval();
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            using var rollout = Rollout.Sample(policy, tokenizer, [.. prompts.Take(64)], 1.0, 64, seed: 11);
            var mine = PpoExperience.ResponseLogProbabilities(policy, rollout.Sequences, rollout.Positions, rollout.Tokens);
            var theirs = PpoExperience.ResponseLogProbabilities(sft, rollout.Sequences, rollout.Positions, rollout.Tokens);
            return ((mine - theirs) * rollout.Mask).sum().item<float>() / Math.Max(1, rollout.Mask.sum().item<float>());
        }
    }
}
