using System.Diagnostics;

namespace GptSharp.Tests;

/// <summary>
/// tests/js: the npm packages some tests use (pinned in package.json and package-lock.json), installed with
/// <c>npm ci</c> the first time a test needs them. Needs Node.js and npm (Debian's nodejs and npm; .ci/run installs them).
/// </summary>
static class NodePackages
{
    static readonly object Gate = new();

    /// <summary>The tests/js folder, its packages installed.</summary>
    public static string Folder
    {
        get
        {
            string folder = Path.Combine(Repository.Root, "tests", "js");
            lock (Gate)
            {
                using var manifest = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "package.json")));
                bool installed = manifest.RootElement.GetProperty("dependencies").EnumerateObject()
                    .All(dependency => File.Exists(Path.Combine(folder, "node_modules", dependency.Name, "package.json")));
                if (!installed)
                {
                    var (code, log) = Run("npm", folder, "ci", "--no-audit", "--no-fund");
                    Assert.True(code == 0, $"npm ci in {folder} failed (Node.js and npm are needed: apt-get install nodejs npm, as .ci/run does):\n{log}");
                }
            }
            return folder;
        }
    }

    /// <summary>Runs a program in <paramref name="directory"/>; its exit code and stdout with stderr.</summary>
    public static (int Code, string Output) Run(string file, string directory, params string[] args) => RunWithInput(file, directory, null, args);

    /// <summary>As <see cref="Run(string, string, string[])"/>, with <paramref name="input"/> written to its standard input.</summary>
    public static (int Code, string Output) RunWithInput(string file, string directory, string? input, params string[] args)
    {
        var start = new ProcessStartInfo(file) { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = input is not null };
        foreach (string a in args) start.ArgumentList.Add(a);
        Process process;
        try { process = Process.Start(start)!; }
        catch (System.ComponentModel.Win32Exception e) { return (-1, $"cannot run '{file}': {e.Message}"); }
        using (process)
        {
            if (input is not null)
            {
                process.StandardInput.Write(input);
                process.StandardInput.Close();
            }
            var stderr = process.StandardError.ReadToEndAsync();
            string stdout = process.StandardOutput.ReadToEnd();
            Assert.True(process.WaitForExit(300_000), $"{file} {string.Join(' ', args)} did not finish in 5 minutes");
            return (process.ExitCode, stdout + stderr.Result);
        }
    }
}
