using GptSharp.Data;
using GptSharp.Models;
using GptSharp.Speedrun;
using GptSharp.Training;
using ScottPlot;

namespace GptSharp.Bench;

/// <summary>
/// Pretraining recipes at the same wall-clock budget: the budget is what the earlier speedrun recipe (AdamW, 1,500
/// steps of <c>tiny</c>) takes on this machine, and every other recipe gets as many steps as fit in it (its step time
/// measured first), so its learning-rate schedule ends when the time does — except the speedrun's own recipe, which
/// runs its fixed steps so that the table says what the speedrun gets. Each recipe runs once per seed, recipes
/// interleaved within a seed; the table gives the median validation loss over seeds, and a PNG plots each recipe's
/// training loss (first seed) against wall-clock seconds. Usage: bench -- recipe DATA_DIR [seeds] [budget-seconds, 0: the earlier recipe's] [out.png]
/// (DATA_DIR: the speedrun's <c>RUN/data</c>).
/// </summary>
static class RecipeBench
{
    /// <param name="Steps">A recipe defined by its steps (the earlier and the current speedrun's) runs those; the others get the budget's worth.</param>
    /// <param name="Model">A change to the preset's shape or layout; null: the preset as it is.</param>
    sealed record Recipe(string Name, string Preset, Func<TrainingConfig, TrainingConfig> Training, int? Steps = null, Func<GptConfig, GptConfig>? Model = null)
    {
        public GptConfig Config(int vocab) => Model is null ? GptConfig.Preset(Preset, vocab) : Model(GptConfig.Preset(Preset, vocab));
    }

    static readonly Recipe[] Recipes =
    [
        new("AdamW, cosine: the earlier speedrun (tiny, 1,500 steps)", "tiny", t => t, Steps: EarlierSteps),
        new("Muon, cosine", "tiny", t => t with { Optimizer = OptimizerKind.Muon }),
        new("Muon, tiny-llama (rotary, RMSNorm, SwiGLU, untied head), cosine", "tiny-llama", t => t with { Optimizer = OptimizerKind.Muon }),
        new($"Muon, {Speedrun.Options.Preset}, AdamW lr {Speedrun.PretrainTraining.LearningRate}, {100 * Speedrun.PretrainTraining.WarmdownRatio:F0}% linear warmdown " +
            $"to {Speedrun.PretrainTraining.MinLrRatio} × lr: the speedrun now ({Speedrun.Options.PretrainSteps:N0} steps)", Speedrun.Options.Preset,
            SpeedrunTraining, Speedrun.Options.PretrainSteps),
        // One change each to the speedrun's recipe, at the budget's steps.
        new("the speedrun's recipe, 6 layers (deeper, fewer steps)", Speedrun.Options.Preset, SpeedrunTraining, Model: c => c with { Layers = 6 }),
        new("the speedrun's recipe, batch 8 (half the tokens a step, more steps)", Speedrun.Options.Preset, t => SpeedrunTraining(t) with { BatchSize = 8 }),
        new("the speedrun's recipe + QK-norm", Speedrun.Options.Preset, SpeedrunTraining, Model: c => c with { QkNorm = true }),
        new("the speedrun's recipe, ReLU² MLP instead of SwiGLU (same parameters)", Speedrun.Options.Preset, SpeedrunTraining,
            Model: c => c with { Activation = ActivationKind.ReluSquared }),
    ];

    /// <summary>The speedrun's pretraining settings with the bench's logging.</summary>
    static TrainingConfig SpeedrunTraining(TrainingConfig t) =>
        Speedrun.PretrainTraining with { EvalEvery = t.EvalEvery, CheckpointEvery = t.CheckpointEvery, LogEvery = t.LogEvery };

    /// <summary>The speedrun's plan, whose pretraining recipe is the last row.</summary>
    static SpeedrunPlan Speedrun => new("unused");

    const int EarlierSteps = 1500;

    public static void Run(string[] args)
    {
        if (args.Length < 2) throw new ArgumentException("usage: recipe DATA_DIR [seeds] [budget-seconds] [out.png]");
        string data = args[1];
        int seeds = args.Length > 2 ? int.Parse(args[2]) : 2;
        string plotPath = args.Length > 4 ? args[4] : "recipe.png";
        int vocab = ShardSummary.Load(data).VocabSize;
        string root = Path.Combine(Path.GetTempPath(), "gptsharp-recipe-" + Guid.NewGuid().ToString("N"));
        // Pretraining defaults with the speedrun's warmup; each recipe adds its optimiser, schedule and steps.
        var baseline = PretrainRun.Defaults with { WarmupSteps = 100, EvalEvery = 1_000_000, CheckpointEvery = 1_000_000, LogEvery = 1_000_000 };
        try
        {
            // Two calibration rounds, recipes interleaved, the faster of each recipe's two: a round slowed by the machine
            // would otherwise cost that recipe steps.
            var stepSeconds = Recipes.ToDictionary(r => r.Name, _ => double.MaxValue);
            for (int round = 0; round < 2; round++)
                foreach (var recipe in Recipes)
                    stepSeconds[recipe.Name] = Math.Min(stepSeconds[recipe.Name], StepSeconds(recipe, baseline, data, vocab, Path.Combine(root, "calibrate")));
            double budget = args.Length > 3 && double.Parse(args[3]) > 0 ? double.Parse(args[3]) : EarlierSteps * stepSeconds[Recipes[0].Name];
            Console.WriteLine($"\n## Pretraining recipes at {budget:F0} s each (the earlier recipe's {EarlierSteps} steps), {seeds} seed(s)");
            var results = Recipes.ToDictionary(r => r.Name, _ => new List<(double Val, int Steps, double Seconds, List<(double T, double Loss)> Curve)>());
            for (int seed = 0; seed < seeds; seed++)
                foreach (var recipe in seed % 2 == 0 ? Recipes : Recipes.Reverse())
                {
                    int steps = recipe.Steps ?? Math.Max(10, (int)(budget / stepSeconds[recipe.Name]));
                    var training = recipe.Training(baseline) with { Steps = steps, Seed = 1337 + seed, TimeLimitSeconds = budget * 1.1 };
                    var curve = new List<(double, double)>();
                    string run = Path.Combine(root, $"{seed}-{Array.IndexOf(Recipes, recipe)}");
                    var result = PretrainRun.Execute(recipe.Config(vocab), training, data, new RunOptions(run) { Resume = false, OnStep = m => curve.Add((m.ElapsedSeconds, m.Loss)) });
                    results[recipe.Name].Add((result.FinalValLoss ?? double.NaN, result.StepsDone, result.Seconds, curve));
                    Console.WriteLine($"  seed {seed}: {recipe.Name}: {result.StepsDone} steps in {result.Seconds:F0} s, validation loss {result.FinalValLoss:F3}");
                    Directory.Delete(run, true);
                }
            Console.WriteLine("\n| recipe | s/step | steps | seconds | validation loss (median) | per seed |");
            Console.WriteLine("|---|---|---|---|---|---|");
            foreach (var recipe in Recipes)
            {
                var runs = results[recipe.Name];
                Console.WriteLine($"| {recipe.Name} | {stepSeconds[recipe.Name]:F3} | {runs[0].Steps:N0} | {Stats.Median(runs.Select(r => r.Seconds)):F0} | " +
                                  $"{Stats.Median(runs.Select(r => r.Val)):F3} | {string.Join(" / ", runs.Select(r => r.Val.ToString("F3")))} |");
            }
            Plot(results.ToDictionary(kv => kv.Key, kv => kv.Value[0].Curve), plotPath);
            Console.WriteLine($"\nTraining loss against wall-clock time: {Path.GetFullPath(plotPath)}");
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, true);
        }
    }

    /// <summary>Seconds per step of a recipe, from steps 20–100 of a short run (the first steps warm up; 30 steps proved
    /// too few on this machine, whose speed wanders by ±20%).</summary>
    static double StepSeconds(Recipe recipe, TrainingConfig baseline, string data, int vocab, string run)
    {
        var elapsed = new Dictionary<int, double>();
        PretrainRun.Execute(recipe.Config(vocab), recipe.Training(baseline) with { Steps = 100 }, data, new RunOptions(run) { Resume = false, OnStep = m => elapsed[m.Step] = m.ElapsedSeconds });
        Directory.Delete(run, true);
        return (elapsed[100] - elapsed[20]) / 80;
    }

    /// <summary>Each recipe's training loss (smoothed over ~50 steps) against seconds, legend where no curve runs.</summary>
    static void Plot(Dictionary<string, List<(double T, double Loss)>> curves, string path)
    {
        var plot = new Plot();
        foreach (var (name, curve) in curves)
        {
            double smoothed = curve[0].Loss;
            var ys = curve.Select(p => smoothed = 0.98 * smoothed + 0.02 * p.Loss).ToArray();
            var line = plot.Add.ScatterLine(curve.Select(p => p.T).ToArray(), ys);
            line.LegendText = name;
        }
        plot.Title("Pretraining recipes at the same wall-clock budget (tiny, Tang poems)");
        plot.XLabel("wall-clock seconds");
        plot.YLabel("training loss (nats/token, smoothed)");
        plot.Axes.SetLimitsY(4.5, 8);
        // Upper right: after the first minute every curve is below 6.3, so the legend covers no data there; a panel below
        // the plot did not grow to hold eight long names.
        plot.Legend.Alignment = ScottPlot.Alignment.UpperRight;
        plot.ShowLegend();
        ScottPlot.Image image = plot.GetImage(1000, 650);
        image.SavePng(path);
    }
}
