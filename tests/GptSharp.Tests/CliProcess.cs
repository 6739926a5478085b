using System.Diagnostics;

namespace GptSharp.Tests;

/// <summary>The built `gptsharp` command run as a separate process, as a user runs it.</summary>
static class CliProcess
{
    /// <summary>The CLI assembly built beside the tests by the same solution build
    /// (tests run from tests/GptSharp.Tests/bin/&lt;Configuration&gt;/net10.0).</summary>
    public static string Dll
    {
        get
        {
            string cli = Path.Combine(Repository.Root, "src", "GptSharp.Cli", "bin", Repository.Configuration, "net10.0", "GptSharp.Cli.dll");
            Assert.True(File.Exists(cli), $"{cli} is missing: build the solution (dotnet test GptSharp.slnx builds it).");
            return cli;
        }
    }

    /// <summary>Runs <paramref name="file"/> and returns its exit code with stdout and stderr together.</summary>
    public static (int Code, string Output) Run(string file, params string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        Assert.True(process.WaitForExit(600_000), $"{file} did not finish in 10 minutes");
        return (process.ExitCode, stdout + stderr.Result);
    }

    /// <summary>Runs `gptsharp ARGS` through `dotnet`.</summary>
    public static (int Code, string Output) Cli(params string[] args) => Run("dotnet", [Dll, .. args]);
}
