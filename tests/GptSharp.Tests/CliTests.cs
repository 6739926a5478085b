using System.ComponentModel;
using System.Reflection;
using System.Text.Json;
using GptSharp.Cli;
using GptSharp.Speedrun;
using Spectre.Console.Cli;

namespace GptSharp.Tests;

/// <summary>The command line as a user meets it: every option explained with its default, defaults read from the
/// library, and the report card's commands reproducing the speedrun's stages.</summary>
public class CliTests
{
    static IEnumerable<Type> SettingsTypes => typeof(CommonSettings).Assembly.GetTypes()
        .Where(t => typeof(CommandSettings).IsAssignableFrom(t) && !t.IsAbstract);

    [Fact]
    public void EveryOptionHasADescriptionAndADefaultInHelp()
    {
        var problems = new List<string>();
        foreach (var type in SettingsTypes)
            foreach (var property in type.GetProperties())
            {
                if (property.GetCustomAttribute<CommandOptionAttribute>() is not { } option) continue;
                string name = $"{type.Name} {string.Join('|', option.LongNames)}";
                string? description = property.GetCustomAttribute<DescriptionAttribute>()?.Description;
                if (string.IsNullOrWhiteSpace(description)) { problems.Add($"{name}: no description"); continue; }
                if (description.Contains('\n')) problems.Add($"{name}: description is more than one line");
                bool flag = property.PropertyType == typeof(bool);
                bool hasDefault = flag || OptionDefaults.Of(type, property) is not null || description.Contains("default", StringComparison.OrdinalIgnoreCase);
                if (!hasDefault) problems.Add($"{name}: no default shown (give an initial value, a library default, or say in the description what happens when unset)");
            }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void TrainingDefaultsComeFromTheLibraryStage()
    {
        // sft's defaults are SftRun's; a given option replaces exactly its field.
        var settings = new GptSharp.Cli.Commands.SftSettings { LearningRate = 0.5, Zero1 = true };
        var training = settings.Training();
        Assert.Equal(Alignment.SftRun.Defaults with { LearningRate = 0.5, ShardOptimizerState = true }, training);
        var ppo = new GptSharp.Cli.Commands.PpoSettings();
        Assert.Equal(new Alignment.PpoConfig().Rollout.MaxNewTokens, OptionDefaults.Of(typeof(GptSharp.Cli.Commands.PpoSettings),
            typeof(GptSharp.Cli.Commands.PpoSettings).GetProperty(nameof(Alignment.RolloutSettings.MaxNewTokens))!));
        Assert.Equal(Alignment.PpoRun.Defaults, ppo.Training());
    }

    [Fact]
    public void SpeedrunSeedReachesThePlan()
    {
        // A nullable option onto a nullable property of the plan: --seed was once dropped here, and every "independent" base was the default one.
        var options = OptionDefaults.Apply(new GptSharp.Cli.Commands.SpeedrunSettings { Seed = 2, SftSteps = 7 }, new Speedrun.SpeedrunOptions());
        Assert.Equal(2L, options.Seed);
        Assert.Equal(7, options.SftSteps);
        var plan = new Speedrun.SpeedrunPlan("runs/x", options);
        Assert.Equal(2L, plan.PretrainTraining.Seed);
        Assert.Equal(2L, plan.SftTraining.Seed);
        Assert.NotEqual(new Speedrun.SpeedrunPlan("runs/x").PretrainTraining.Seed, plan.PretrainTraining.Seed);
    }

    [Fact]
    public void RolloutOptionsReachTheRolloutSettingsPpoAndGrpoShare()
    {
        var grpo = new GptSharp.Cli.Commands.GrpoSettings { Temperature = 0.5, MaxNewTokens = 20, Engine = "torch", GroupSize = 4 }.Grpo();
        Assert.Equal(new Alignment.RolloutSettings { Temperature = 0.5, MaxNewTokens = 20, Engine = "torch" }, grpo.Rollout);
        Assert.Equal(4, grpo.GroupSize);
        var ppo = OptionDefaults.Apply(new GptSharp.Cli.Commands.PpoSettings { MaxNewTokens = 12 }, new Alignment.PpoConfig());
        Assert.Equal(12, ppo.Rollout.MaxNewTokens);
        Assert.Equal(new Alignment.PpoConfig().Rollout.Temperature, ppo.Rollout.Temperature);   // untouched options keep PPO's own default
        Assert.Equal(0.7, OptionDefaults.Of(typeof(GptSharp.Cli.Commands.PpoSettings), typeof(GptSharp.Cli.Commands.PpoSettings).GetProperty("Temperature")!));
    }

    [Fact]
    public void TheCalculatorStagesJoinTheMainJobOnlyWithTools()
    {
        using var dir = new TempDirectory();
        var plain = new SpeedrunPlan(dir.File("plain"));
        Assert.DoesNotContain(plain.Stages, s => s.Name is "sft-tools" or "grpo-tools");
        Assert.DoesNotContain("arithmetic-score", plain.Stages.Single(s => s.Name == "score").Command);
        var error = Assert.Throws<ArgumentException>(() => MainJob.Run(plain, "cpu", new SilentDisplay(), fromStage: "sft-tools"));
        Assert.Contains("--with-tools", error.Message);
        Assert.False(Directory.Exists(plain.RunDirectory));   // refused before any stage ran or any folder was written

        var names = new SpeedrunPlan(dir.File("tools"), new SpeedrunOptions { WithTools = true }).Stages.Select(s => s.Name).ToList();
        Assert.Equal(names.IndexOf("dpo") + 1, names.IndexOf("sft-tools"));
        Assert.Equal(names.IndexOf("sft-tools") + 1, names.IndexOf("grpo-tools"));
        Assert.Equal(names.IndexOf("grpo-tools") + 1, names.IndexOf("score"));
    }

    sealed class SilentDisplay : IStageDisplay
    {
        public T Progress<T>(string label, double total, string unit, Func<Action<double>, T> work) => work(_ => { });
        public void Line(string text) { }
        public void Table(IReadOnlyList<string> header, IReadOnlyList<IReadOnlyList<string>> rows) { }
    }

    [Fact]
    public void ReportedCommandsReproduceTheSpeedrunStagesConfigs()
    {
        using var dir = new TempDirectory();
        string run = dir.File("speedrun");
        var speedrun = Cli("speedrun", "--run-dir", run, "--vocab-size", "400", "--pretrain-steps", "3", "--sft-steps", "2", "--reward-steps", "2",
            "--feedback-prompts", "40", "--ppo-steps", "4", "--grpo-steps", "2", "--dpo-steps", "2", "--with-tools", "--tool-sft-steps", "2", "--tool-grpo-steps", "2", "--stop-after", "grpo-tools", "--threads", "1", "--quiet");
        Assert.True(speedrun.Code == 0, speedrun.Output);
        string report = File.ReadAllText(Path.Combine(run, ReportCard.FileName));
        var plan = SpeedrunPlan.Load(run);
        Assert.Equal(3, plan.Options.PretrainSteps);
        foreach (string stage in new[] { "pretrain", "sft", "feedback", "reward", "ppo", "grpo", "dpo", "sft-tools", "grpo-tools" })
        {
            string command = plan.Stages.Single(s => s.Name == stage).Command;
            Assert.Contains($"`{command}`", report);
            // The same command into a sibling folder: relative references make the two config.json files comparable.
            string again = command.Replace($"--run-dir RUN/{stage}", $"--run-dir RUN/{stage}-again").Replace($"--out RUN/{stage}/", $"--out RUN/{stage}-again/").Replace("RUN", run);
            string[] args = [.. again.Split(' ').Skip(1), "--threads", "1", "--quiet"];
            var result = Cli(args);
            Assert.True(result.Code == 0, $"{again}\n{result.Output}");
            string output = stage == "feedback" ? "pairs.jsonl" : "config.json"; // feedback is data, not a run: the same comparisons
            Assert.Equal(File.ReadAllText(Path.Combine(run, stage, output)), File.ReadAllText(Path.Combine(run, $"{stage}-again", output)));
        }
    }

    static (int Code, string Output) Cli(params string[] args) => CliProcess.Cli(args);
}
