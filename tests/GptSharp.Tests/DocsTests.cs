using System.Text.RegularExpressions;
using GptSharp.Cli;

namespace GptSharp.Tests;

/// <summary>The docs stay true: the generated command-line reference matches the commands, every repository path they
/// cite exists, and the README stays a front door.</summary>
public class DocsTests
{
    static readonly string Root = Repository.Root;

    static IEnumerable<string> Pages() =>
        [Path.Combine(Root, "README.md"), .. Directory.GetFiles(Path.Combine(Root, "docs"), "*.md").Order(StringComparer.Ordinal)];

    [Fact]
    public void TheCommandLineReferenceIsGeneratedFromTheCommandsAsTheyAre()
    {
        string expected = CliReference.Markdown();
        string path = Path.Combine(Root, CliReference.DocsPath);
        string actual = File.Exists(path) ? File.ReadAllText(path) : "";
        Assert.True(expected == actual,
            $"{CliReference.DocsPath} is stale: run `dotnet run --project src/GptSharp.Cli -- cli-reference --out {CliReference.DocsPath}`.");
        Assert.Contains("## gptsharp sft\n", expected);
        Assert.Contains("--lora-rank", expected);
    }

    /// <summary>A library folder or file name the docs cite as a path relative to <c>src/GptSharp</c> (e.g. <c>Alignment/Verse.cs</c>).</summary>
    static readonly string[] Bases = ["", "src/GptSharp", "src/GptSharp.Cli", "tests/GptSharp.Tests", "bench/GptSharp.Bench"];
    static readonly HashSet<string> RepositoryTops = ["src", "tests", "bench", "data", "docs", "scripts", ".ci",
        "Runtime", "Tokenization", "Data", "Models", "Runs", "Training", "Inference", "Alignment", "Encoders", "Evaluation", "Serving", "Interop", "Speedrun", "Commands", "Fuzzing"];

    [Fact]
    public void EveryRepositoryPathTheDocsCiteExists()
    {
        var sourceNames = new[] { "src", "tests", "bench" }.SelectMany(d => Directory.GetFiles(Path.Combine(Root, d), "*.cs", SearchOption.AllDirectories))
            .Select(Path.GetFileName).ToHashSet(StringComparer.Ordinal);
        var missing = new List<string>();
        int cited = 0;
        foreach (string page in Pages())
        {
            string[] lines = File.ReadAllLines(page);
            for (int i = 0; i < lines.Length; i++)
                foreach (Match span in Regex.Matches(lines[i], "`([^`\\s]+)`"))
                {
                    string token = span.Groups[1].Value.TrimEnd('.', ',', ':', ')');
                    bool exists;
                    if (Regex.IsMatch(token, @"^[\w.\-]+(/[\w.\-]+)*/?$") && token.Contains('/') && RepositoryTops.Contains(token.Split('/')[0]))
                        exists = Bases.Any(b => File.Exists(Path.Combine(Root, b, token)) || Directory.Exists(Path.Combine(Root, b, token)));
                    else if (Regex.IsMatch(token, @"^\w+\.cs$")) exists = sourceNames.Contains(token);
                    else continue;
                    cited++;
                    if (!exists) missing.Add($"{Path.GetRelativePath(Root, page)}:{i + 1}: {token}");
                }
        }
        Assert.True(cited > 50, $"only {cited} paths found: the pattern no longer matches how the docs cite files");
        Assert.True(missing.Count == 0, "Cited paths that do not exist:\n" + string.Join("\n", missing));
    }

    [Fact]
    public void TheReadmeIsAFrontDoorThatLinksEveryDocsPage()
    {
        string[] readme = File.ReadAllLines(Path.Combine(Root, "README.md"));
        Assert.True(readme.Length <= 250, $"README.md has {readme.Length} lines; reference text belongs in docs/, figures in docs/results.md");
        string text = string.Join('\n', readme);
        foreach (string page in Directory.GetFiles(Path.Combine(Root, "docs"), "*.md"))
            Assert.Contains($"docs/{Path.GetFileName(page)}", text);
    }
}
