using System.Diagnostics;
using System.Reflection;
using GptSharp.Cli;
using Spectre.Console.Cli;

namespace GptSharp.Tests;

/// <summary>Mistakes on the command line: every one is one line naming the option, on every command.</summary>
public class CommandLineTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    static readonly string[][] Commands =
    [
        ["speedrun"], ["doctor"], ["tokenizer", "train"], ["tokenizer", "encode"], ["tokenizer", "decode"], ["data", "prepare"], ["pretrain"],
        ["generate"], ["sft"], ["reward"], ["feedback", "collect"], ["feedback", "sample"], ["feedback", "label"], ["feedback", "agreement"],
        ["ppo"], ["grpo"], ["distill"], ["dpo"], ["serve"], ["chat"], ["eval"], ["report"], ["bert", "pretrain"], ["bert", "fill-mask"], ["bert", "finetune"], ["bert", "contrastive"],
        ["bert", "classify"], ["form-score"], ["arithmetic-score"], ["verse", "check", "白日依山盡"], ["verse", "rates"], ["export", "hf"], ["export", "gguf"], ["import", "hf"], ["plot"],
        ["cli-reference"],
    ];

    [Fact]
    public void EveryCommandIsListedHereAndItsSettingsAreFoundFromItsName()
    {
        int commands = typeof(CommonSettings).Assembly.GetTypes().Count(t => !t.IsAbstract && typeof(ICommand).IsAssignableFrom(t));
        Assert.Equal(typeof(GptSharp.Cli.Commands.VerseCheckSettings), CommandLineCheck.SettingsOf(["verse", "check", "白日依山盡", "--prompt", "x"]));
        Assert.Equal(commands, Commands.Length);
        // The value checks read a command's own options (eval's --items is a number, feedback label's a file).
        foreach (var command in Commands) Assert.NotNull(CommandLineCheck.SettingsOf([.. command, "--quiet"]));
        Assert.Contains("--items '1.5': expected a whole number", Assert.Throws<CommandLineException>(() => CommandLineCheck.Prepare(["eval", "--items", "1.5"])).Message);
        // feedback label's file of items is --data now; the old --items (a file there) is taken as it and not checked as a number.
        Assert.Equal(["feedback", "label", "--data", "a.jsonl"], CommandLineCheck.Prepare(["feedback", "label", "--items", "a.jsonl"]));
    }

    [Fact]
    public void EveryCommandRefusesAnUnknownOptionByNameWithTheNearestKnownOne()
    {
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        Parallel.ForEach(Commands, new ParallelOptions { MaxDegreeOfParallelism = 4 }, command =>
        {
            var (code, output) = CliProcess.Cli([.. command, "--quiet", "--threds", "1", "--bogus-option"]);
            string line = output.ReplaceLineEndings(" ");
            if (code != 1 || !line.Contains("Unknown option --threds") || !line.Contains("did you mean --threads?"))
                failures.Add($"{string.Join(' ', command)}: exit {code}: {output}");
        });
        Assert.True(failures.IsEmpty, string.Join("\n", failures));
    }

    [Fact]
    public void AWrongTypedValueOfEveryOptionNamesTheOptionAndWhatItTakes()
    {
        var problems = new List<string>();
        foreach (var settings in typeof(CommonSettings).Assembly.GetTypes().Where(t => typeof(CommandSettings).IsAssignableFrom(t) && !t.IsAbstract))
            foreach (var property in settings.GetProperties())
            {
                if (property.GetCustomAttribute<CommandOptionAttribute>() is not { } option) continue;
                var type = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
                string? wrong = type == typeof(int) || type == typeof(long) ? "1.5" : type == typeof(double) ? "abc" : type.IsEnum ? "no-such-value" : null;
                if (wrong is null) continue;
                string name = "--" + option.LongNames[0];
                try
                {
                    CommandLineCheck.Check(settings, name, wrong);
                    problems.Add($"{settings.Name} {name} {wrong}: accepted");
                }
                catch (CommandLineException e)
                {
                    if (!e.Message.StartsWith($"{name} '{wrong}': expected ", StringComparison.Ordinal)) problems.Add($"{settings.Name} {name}: {e.Message}");
                }
            }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
        Assert.Equal(["generate", "--prompt=-(1)", "--seed=-3"], CommandLineCheck.Prepare(["generate", "--prompt", "-(1)", "--seed", "-3"]));
        Assert.Contains("nan", Assert.Throws<CommandLineException>(() => CommandLineCheck.Prepare(["generate", "--temperature", "nan"])).Message);
        Assert.Equal("--max-tokens", CommandLineCheck.Nearest("--max-token", ["--max-tokens", "--temperature"]));
        Assert.Null(CommandLineCheck.Nearest("--zzzzzz", ["--max-tokens", "--temperature"]));
    }

    [Theory]
    [InlineData("--steps 'abc': expected a whole number", "pretrain", "--steps", "abc")]
    [InlineData("--norm 'banana': expected one of layernorm, rmsnorm", "pretrain", "--norm", "banana")]
    [InlineData("--seed '1.5': expected a whole number", "generate", "--seed", "1.5")]
    [InlineData("--temperature 'x': expected a number", "generate", "--temperature", "x")]
    [InlineData("--max-tokens 0: expected at least 1 token", "generate", "--max-tokens", "0")]
    [InlineData("--temperature -1: expected 0 (greedy) or more", "generate", "--temperature", "-1")]
    [InlineData("--max-queue 'many': expected a whole number", "serve", "--max-queue", "many")]
    [InlineData("--prompt needs a value", "generate", "--prompt")]
    [InlineData("--advantage ppo: expected grpo, rloo or reinforce++", "grpo", "--advantage", "ppo")]
    [InlineData("--loss gpo: expected grpo, dr_grpo, dapo, gspo or cispo", "grpo", "--loss", "gpo")]
    [InlineData("--scale-rewards all: expected group, batch or none", "grpo", "--scale-rewards", "all")]
    [InlineData("--divergence kl: expected reverse, forward or jsd", "distill", "--divergence", "kl")]
    [InlineData("--task verse-rime: expected form, verse or verse-rhyme", "form-score", "--task", "verse-rime")]
    [InlineData("--tools calculator: the task 'calculator-steps' acts in the environment 'calculator-steps', which offers its own tools", "grpo", "--task", "calculator-steps", "--tools", "calculator")]
    public void AnOptionsValueIsCheckedBeforeAnythingRuns(string message, params string[] args)
    {
        var (code, output) = CliProcess.Cli(args);
        Assert.Equal(1, code);
        Assert.Contains(message, System.Text.RegularExpressions.Regex.Replace(output, @"\s+", " "));
        Assert.DoesNotContain("Nullable", output);
        Assert.DoesNotContain("(Parameter", output);
    }

    [Fact]
    public void APromptThatBeginsWithADashIsAPromptAndATypoedOptionNeverRunsAtDefaults()
    {
        using var dir = new TempDirectory();
        string run = dir.File("run");
        fixture.SaveInitialRun(run, context: 32);
        var (code, output) = CliProcess.Cli("generate", "--run-dir", run, "--prompt", "-(1)", "--max-tokens", "2", "--temperature", "0", "--quiet");
        Assert.True(code == 0, output);
        Assert.StartsWith("-(1)", output);
        (code, output) = CliProcess.Cli("generate", "--run-dir", run, "--max-token", "3", "--temprature", "0");
        Assert.Equal(1, code);
        Assert.Contains("did you mean --max-tokens?", output.ReplaceLineEndings(" "));
    }

    [Fact]
    public async Task ACheckpointFileThatIsAPipeIsRefusedByNameInsteadOfWaitingForever()
    {
        using var dir = new TempDirectory();
        string run = dir.File("run");
        fixture.SaveInitialRun(run, context: 32);
        string weights = Path.Combine(run, "checkpoint", "model.safetensors");
        File.Delete(weights);
        using (var mkfifo = Process.Start("mkfifo", [weights])) mkfifo.WaitForExit();
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string arg in new[] { CliProcess.Dll, "generate", "--run-dir", run, "--max-tokens", "2" }) start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var output = Task.WhenAll(process.StandardOutput.ReadToEndAsync(), process.StandardError.ReadToEndAsync());
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        bool exited = true;
        try { await process.WaitForExitAsync(limit.Token); }
        catch (OperationCanceledException) { exited = false; process.Kill(entireProcessTree: true); }
        Assert.True(exited, "generate waited on the pipe");
        string[] texts = await output;
        Assert.Equal(1, process.ExitCode);
        // The console wraps long lines, a long path even within a word: compare without white space.
        Assert.Contains("model.safetensors:empty,ornotaregularfile", System.Text.RegularExpressions.Regex.Replace(texts[0] + texts[1], @"\s+", ""));
    }
}
