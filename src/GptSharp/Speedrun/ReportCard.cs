using GptSharp.Data;
using GptSharp.Evaluation;
using GptSharp.Runs;
using GptSharp.Runtime;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using ScottPlot;

namespace GptSharp.Speedrun;

/// <summary>
/// The speedrun's report card: <c>report.md</c> with PNG plots — every stage's loss curve, k-shot accuracy against k
/// per task (the GPT-3 picture), PPO's reward, KL and response length per rollout, the verifiable-task score of each
/// model — a table of every metric with the command that reproduces it, wall time per stage, machine and versions.
/// </summary>
public static class ReportCard
{
    public const string FileName = "report.md";

    /// <summary>Writes <c>report.md</c> and its plots into <paramref name="runDirectory"/>; returns the report's path.</summary>
    public static string Write(string runDirectory)
    {
        if (!Directory.Exists(runDirectory)) throw new DirectoryNotFoundException($"No run folder '{runDirectory}'.");
        var plan = SpeedrunPlan.Load(runDirectory);
        var pretrained = File.Exists(Path.Combine(plan.Data, ShardSummary.MetaFile)) ? ShardSummary.Load(plan.Data).Corpora.ToHashSet() : [];
        var md = new StringBuilder();
        md.AppendLine("# GptSharp report card").AppendLine();
        md.AppendLine($"Run folder `{Path.GetFullPath(runDirectory)}`, written {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC.").AppendLine();
        md.AppendLine($"Machine: {SystemReport.CpuModel()}, {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}; " +
                      $".NET {Environment.Version}, TorchSharp {SystemReport.TorchSharpVersion}, libtorch {SystemReport.LibTorchVersion}.").AppendLine();

        // Stages: wall time and outputs, with the command that reproduces each (RUN = this folder).
        md.AppendLine("## Stages").AppendLine().AppendLine("| stage | seconds | metrics | command |").AppendLine("|---|---|---|---|");
        double total = 0;
        foreach (var (stage, _, command, _) in plan.Stages)
        {
            string marker = Path.Combine(runDirectory, stage, "done.json");
            if (!File.Exists(marker)) continue;
            var done = JsonNode.Parse(File.ReadAllText(marker))!;
            double seconds = done["seconds"]?.GetValue<double>() ?? 0;
            total += seconds;
            md.AppendLine($"| {stage} | {seconds:F0} | {Metrics(done["outputs"])} | `{command}` |");
        }
        md.AppendLine($"| **total** | **{total:F0}** | | `gptsharp speedrun --run-dir RUN` |").AppendLine();

        // Loss curves of every training stage (each run keeps its own loss.png).
        md.AppendLine("## Loss curves").AppendLine();
        foreach (string stage in new[] { "pretrain", "sft", "reward", "ppo", "grpo", "dpo", "sft-tools", "grpo-tools" })
        {
            string dir = Path.Combine(runDirectory, stage);
            if (!File.Exists(Path.Combine(dir, MetricsLog.FileName))) continue;
            LossPlot.Write(dir, $"{stage} loss");
            md.AppendLine($"![{stage} loss]({stage}/{LossPlot.FileName})").AppendLine();
        }

        string ppoLog = Path.Combine(runDirectory, "ppo", Alignment.PpoRun.RolloutFile);
        if (File.Exists(ppoLog))
        {
            var rows = File.ReadLines(ppoLog).Select(l => JsonNode.Parse(l)!).ToList();
            double[] x = [.. rows.Select(r => (double)r["iteration"]!.GetValue<int>())];
            md.AppendLine("## PPO").AppendLine();
            // One plot per quantity: reward, KL and length have unrelated scales.
            foreach (var (field, label, file) in new[] { ("meanScore", "mean reward", "ppo-reward.png"), ("meanKl", "KL to the reference (nats per response)", "ppo-kl.png"),
                         ("meanResponseLength", "response length (tokens)", "ppo-length.png") })
            {
                var plot = new Plot();
                plot.Add.ScatterLine(x, [.. rows.Select(r => r[field]!.GetValue<double>())]);
                plot.Title($"PPO rollouts: {label}");
                plot.XLabel("rollout");
                plot.YLabel(label);
                Save(plot, runDirectory, file, height: 300);
                md.AppendLine($"![PPO {label}]({file})").AppendLine();
            }
            if (rows.All(r => r["meanGold"] is not null)) OverOptimisation(rows, runDirectory, md);
            HeldOutGold(Path.Combine(runDirectory, "ppo", Alignment.RlRun.PolicyFolder), "PPO", md);
        }

        GrpoSection(runDirectory, "grpo", "GRPO", "reward (graded verse check)", md);
        GrpoSection(runDirectory, "grpo-tools", "GRPO with the calculator", "exact answers (arithmetic)", md);

        string scoreMarker = Path.Combine(runDirectory, "score", "done.json");
        if (File.Exists(scoreMarker))
        {
            var outputs = JsonNode.Parse(File.ReadAllText(scoreMarker))!["outputs"]!.AsObject();
            // The form shares: "form" since the verse task, "shares" before it, the object itself before distinct poems were counted.
            var shareNode = outputs["form"]?.AsObject() ?? outputs["shares"]?.AsObject() ?? outputs;
            var shares = shareNode.Select(kv => (kv.Key, kv.Value!.GetValue<double>())).ToList();
            var distinct = outputs["distinct"]?.AsObject();
            var plot = new Plot();
            var bars = plot.Add.Bars(shares.Select(s => 100 * s.Item2).ToArray());
            plot.Axes.Bottom.SetTicks([.. Enumerable.Range(0, shares.Count).Select(i => (double)i)], [.. shares.Select(s => s.Key)]);
            plot.Axes.Margins(bottom: 0);
            plot.Title("Verifiable task: regular poems (%)");
            plot.YLabel("% of sampled poems with a regular form");
            Save(plot, runDirectory, "form-score.png");
            md.AppendLine("## Verifiable task").AppendLine().AppendLine("| model | regular poems | distinct poems |").AppendLine("|---|---|---|");
            foreach (var (model, share) in shares)
                md.AppendLine($"| {model} | {Percent(share)} | {(distinct?[model] is JsonNode d ? Percent(d.GetValue<double>()) : "")} |");
            md.AppendLine().AppendLine("![form score](form-score.png)").AppendLine();
            if (outputs["rules"]?.AsObject() is { } rules) VerseSection(runDirectory, rules, outputs, md);
            if (outputs["arithmetic"]?.AsObject() is { } arithmetic)
            {
                md.AppendLine("## Arithmetic with and without the calculator").AppendLine()
                  .AppendLine($"Exact answers to {RlTasks.ScoreProblems} held-out multi-digit + − × problems, greedy.").AppendLine()
                  .AppendLine("| model | no tool | with calculator | answers that called it |").AppendLine("|---|---|---|---|");
                foreach (var (model, node) in arithmetic)
                    md.AppendLine($"| {model} | {Percent(node!["withoutTool"]!.GetValue<double>())} | {Percent(node["withTool"]!.GetValue<double>())} | {Percent(node["toolCalls"]!.GetValue<double>())} |");
                md.AppendLine();
            }
        }

        var evals = new[] { ("base", "pretrain"), ("sft", "sft"), ("ppo", Path.Combine("ppo", Alignment.RlRun.PolicyFolder)) }
            .Select(m => (m.Item1, Path: Path.Combine(runDirectory, m.Item2, EvalRun.FileName))).Where(m => File.Exists(m.Path))
            .Select(m => (Model: m.Item1, Report: JsonSerializer.Deserialize<EvalReport>(File.ReadAllText(m.Path), Checkpoint.Json)!)).ToList();
        if (evals.Count > 0)
        {
            md.AppendLine("## Zero- and few-shot evaluation").AppendLine();
            md.AppendLine("Multiple choice: accuracy by summed log-likelihood of each choice (per-token normalised in brackets), chance beside; " +
                          "generative tasks: the share of greedy answers that are right, with 0 shots as their baseline.").AppendLine();
            md.AppendLine($"In-context tasks ({string.Join(", ", BuiltInTasks.InContext)}): the answer is given only by the examples in the prompt, so " +
                          "a rise with k over 0 shots is in-context learning (the label tasks are at chance at 0 shots by construction; form-steer's " +
                          "0-shot prompt is the same for every query, so there the model writes whatever form it favours). The other tasks ask for what pretraining " +
                          "stored (a poem's next line, author or form, a speech's sentence, spam): at this model size they stay near chance at every k; " +
                          "GPT-3's few-shot gains on such tasks came with models of billions of parameters.").AppendLine();
            foreach (var (model, report) in evals)
            {
                var shots = report.Tasks.Select(t => t.Shots).Distinct().Order().ToList();
                md.AppendLine($"**{model}**").AppendLine().AppendLine($"| task | chance | {string.Join(" | ", shots.Select(k => $"{k}-shot"))} |")
                  .AppendLine($"|---|---|{string.Concat(shots.Select(_ => "---|"))}");
                foreach (var task in report.Tasks.GroupBy(t => t.Task))
                    md.AppendLine($"| {task.Key} | {(task.First().Chance > 0 ? $"{100 * task.First().Chance:F0}%" : "—")} | {string.Join(" | ", task.OrderBy(t => t.Shots).Select(t => $"{Percent(t.Accuracy)} ({Percent(t.NormalizedAccuracy)})"))} |");
                md.AppendLine();
                var plot = new Plot();
                foreach (var task in report.Tasks.GroupBy(t => t.Task))
                {
                    var line = plot.Add.ScatterLine(task.Select(t => (double)t.Shots).ToArray(), task.Select(t => 100 * t.Accuracy).ToArray());
                    line.LegendText = task.Key;
                    line.MarkerSize = 6;
                }
                foreach (double chance in report.Tasks.Select(t => t.Chance).Where(c => c > 0).Distinct().Order())
                {
                    var line = plot.Add.HorizontalLine(100 * chance);
                    line.LinePattern = LinePattern.Dashed;
                    line.LineWidth = 1;
                    line.Color = Colors.Gray;
                    line.LegendText = $"chance ({Math.Round(1 / chance)} choices)";
                }
                plot.Axes.Bottom.SetTicks([.. shots.Select(k => (double)k)], [.. shots.Select(k => k.ToString())]);
                plot.Title($"{model}: accuracy against in-context examples");
                plot.XLabel("examples in the prompt (k)");
                plot.YLabel("accuracy (%)");
                plot.ShowLegend(Edge.Right);
                Save(plot, runDirectory, $"kshot-{model}.png");
                md.AppendLine($"![{model} k-shot](kshot-{model}.png)").AppendLine();
                if (report.Corpora.Count > 0)
                {
                    // A corpus the base never saw reads as a bug at 10^8 perplexity unless the page says so.
                    md.AppendLine(string.Join("; ", report.Corpora.Select(c => $"{c.Corpus} {c.BitsPerByte:F3} bits/byte{(pretrained.Contains(c.Corpus) ? " (pretrained on)" : " (never seen)")}")));
                    md.AppendLine().AppendLine($"Pretrained on: {(pretrained.Count > 0 ? string.Join(", ", pretrained) : "unknown (no data/meta.json)")}; the other corpora measure how far the model is from text it never saw.").AppendLine();
                }
            }
        }
        string path = Path.Combine(runDirectory, FileName);
        AtomicFile.WriteAllText(path, md.ToString());
        return path;
    }

    /// <summary>The verse task: each rule's rate and strict per model (table and grouped bars), then two poems per model
    /// with their verdicts, from <c>score/answers.jsonl</c>.</summary>
    static void VerseSection(string runDirectory, JsonObject rules, JsonObject outputs, StringBuilder md)
    {
        var models = rules.Select(kv => kv.Key).ToList();
        var names = rules[models[0]]!.AsObject().Select(kv => kv.Key).ToList();
        double Rate(string model, string rule) => rules[model]![rule]!.GetValue<double>();
        md.AppendLine("## Regulated verse").AppendLine()
          .AppendLine("Each rule's share of the held-out answers (the instruction rules' share of the prompts that asked them), and strict: form, a level-tone rhyme, the prompt's instruction and the tonal rules most Tang poems of the shape keep.").AppendLine()
          .AppendLine($"| model | {string.Join(" | ", names)} | strict |").AppendLine($"|---|{string.Concat(names.Select(_ => "---|"))}---|");
        foreach (string model in models)
        {
            string key = model.StartsWith("sft best-of", StringComparison.Ordinal) ? "bestOf" : model;
            string strict = outputs[key] is JsonNode value ? Percent(value.GetValue<double>()) : "";
            md.AppendLine($"| {model} | {string.Join(" | ", names.Select(r => Percent(Rate(model, r))))} | {strict} |");
        }
        var plot = new Plot();
        double width = 0.8 / models.Count;
        for (int m = 0; m < models.Count; m++)
        {
            var bars = plot.Add.Bars([.. names.Select((_, r) => r + (m - (models.Count - 1) / 2.0) * width)], [.. names.Select(r => 100 * Rate(models[m], r))]);
            foreach (var bar in bars.Bars) bar.Size = width;
            bars.LegendText = models[m];
        }
        plot.Axes.Bottom.SetTicks([.. Enumerable.Range(0, names.Count).Select(i => (double)i)], [.. names]);
        plot.Axes.Bottom.TickLabelStyle.Rotation = 30;
        plot.Axes.Bottom.TickLabelStyle.Alignment = ScottPlot.Alignment.MiddleLeft;
        plot.Axes.Bottom.MinimumSize = 90;   // room for the slanted rule names
        plot.Axes.Margins(bottom: 0);
        plot.Title("Regulated verse: each rule by model (%)");
        plot.YLabel("% of held-out answers that keep the rule");
        plot.ShowLegend(Edge.Right);
        Save(plot, runDirectory, "verse-rules.png");
        md.AppendLine().AppendLine("![verse rules](verse-rules.png)").AppendLine();
        string answersPath = Path.Combine(runDirectory, "score", "answers.jsonl");
        if (!File.Exists(answersPath)) return;
        md.AppendLine("Poems with their verdicts (the first two held-out prompts, each model):").AppendLine();
        foreach (var group in File.ReadLines(answersPath).Select(l => JsonNode.Parse(l)!).GroupBy(a => a["model"]!.GetValue<string>()))
            foreach (var answer in group.Take(2))
            {
                var failed = answer["rules"]!.AsObject().Where(kv => kv.Value is JsonValue v && !v.GetValue<bool>()).Select(kv => kv.Key).ToList();
                md.AppendLine($"- **{group.Key}** — {answer["prompt"]!.GetValue<string>()} → {answer["answer"]!.GetValue<string>().Replace("\n", " / ")} — " +
                              $"strict {(answer["strict"]!.GetValue<bool>() ? "pass" : "fail")}{(failed.Count > 0 ? $"; fails {string.Join(", ", failed)}" : "")}");
            }
        md.AppendLine();
    }

    /// <summary>Gao et al.'s picture: as the policy drifts from the reference (KL), the proxy reward keeps rising while
    /// the gold score rises, then stalls or falls. Running means over 5 rollouts, against the running mean of KL.</summary>
    static void OverOptimisation(List<JsonNode> rows, string runDirectory, StringBuilder md)
    {
        double[] kl = RunningMean([.. rows.Select(r => r["meanKl"]!.GetValue<double>())], 5);
        double[] gold = RunningMean([.. rows.Select(r => 100 * r["meanGold"]!.GetValue<double>())], 5);
        double[] proxy = RunningMean([.. rows.Select(r => r["meanScore"]!.GetValue<double>())], 5);
        var plot = new Plot();
        var goldLine = plot.Add.ScatterLine(kl, gold);
        goldLine.LegendText = "gold: the task's strict check (%, left)";
        goldLine.MarkerSize = 5;
        var proxyLine = plot.Add.ScatterLine(kl, proxy);
        proxyLine.LegendText = "proxy: reward-model score (right)";
        proxyLine.MarkerSize = 5;
        proxyLine.Axes.YAxis = plot.Axes.Right;
        plot.Axes.Right.Label.Text = "reward-model score";
        plot.Title("PPO: gold score and proxy reward against KL");
        plot.XLabel("KL to the SFT model (nats per response, running mean)");
        plot.YLabel("rollout answers passing the gold check (%)");
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        Save(plot, runDirectory, "ppo-gold-vs-kl.png");
        md.AppendLine("Over-optimisation: the proxy (the reward model) against the gold (the task's strict check) as the policy moves away from SFT.").AppendLine()
          .AppendLine("![PPO gold and proxy against KL](ppo-gold-vs-kl.png)").AppendLine();
    }

    /// <summary>The held-out gold checks an RL run made to choose its policy, and which it kept.</summary>
    /// <summary>A GRPO run's reward per step (and its running mean), then the held-out checks that chose its policy.</summary>
    static void GrpoSection(string runDirectory, string stage, string title, string rewardLabel, StringBuilder md)
    {
        string log = Path.Combine(runDirectory, stage, Alignment.GrpoRun.RolloutFile);
        if (!File.Exists(log)) return;
        var rows = File.ReadLines(log).Select(l => JsonNode.Parse(l)!).ToList();
        if (rows.Count == 0) return;
        var plot = new Plot();
        double[] steps = [.. rows.Select(r => (double)r["step"]!.GetValue<int>())];
        double[] rewards = [.. rows.Select(r => r["meanReward"]!.GetValue<double>())];
        plot.Add.ScatterLine(steps, rewards).LegendText = "mean reward of the rollout";
        var smooth = plot.Add.ScatterLine(steps, RunningMean(rewards, 5));
        smooth.LegendText = "running mean (5 rollouts)";
        smooth.LineWidth = 3;
        plot.Title($"{title}: reward per step");
        plot.XLabel("step");
        plot.YLabel(rewardLabel);
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        Save(plot, runDirectory, $"{stage}.png");
        md.AppendLine($"## {title}").AppendLine().AppendLine($"![{title} reward per step]({stage}.png)").AppendLine();
        HeldOutGold(Path.Combine(runDirectory, stage, Alignment.RlRun.PolicyFolder), title, md);
    }

    static void HeldOutGold(string policyFolder, string name, StringBuilder md)
    {
        string path = Path.Combine(policyFolder, Alignment.BestPolicy.SelectionFile);
        if (!File.Exists(path)) return;
        var selection = JsonNode.Parse(File.ReadAllText(path))!;
        var history = selection["History"]!.AsArray().Select(h => $"{h!["Step"]}: {Percent(h["Score"]!.GetValue<double>())}");
        md.AppendLine($"{name} held-out gold by step ({string.Join(", ", history)}); kept the policy of step {selection["Step"]}.").AppendLine();
    }

    static double[] RunningMean(double[] values, int window) =>
        [.. values.Select((_, i) => values.Skip(Math.Max(0, i - window + 1)).Take(Math.Min(window, i + 1)).Average())];

    static string Percent(double share) => $"{100 * share:F1}%";

    static string Metrics(JsonNode? outputs) => outputs is JsonObject o
        ? string.Join(", ", o.Where(kv => kv.Value is JsonValue).Select(kv => $"{kv.Key} {Format(kv.Value!)}"))
        : "";

    static string Format(JsonNode value) => value.GetValueKind() == JsonValueKind.Number
        ? (value.GetValue<double>() is var d && Math.Abs(d) >= 100 ? d.ToString("N0") : d.ToString("G4"))
        : value.ToString();

    static void Save(Plot plot, string directory, string name, int height = 500) =>
        AtomicFile.WriteAllBytes(Path.Combine(directory, name), plot.GetImageBytes(900, height, ImageFormat.Png));
}
