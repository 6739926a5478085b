namespace GptSharp.Tests;

/// <summary>The checkout the tests run from (the folder holding GptSharp.slnx) and the configuration they were built in.</summary>
static class Repository
{
    public static string Root { get; } = FindRoot();

    /// <summary>Debug or Release: the tests run from tests/GptSharp.Tests/bin/&lt;Configuration&gt;/net10.0.</summary>
    public static string Configuration => new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;

    static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "GptSharp.slnx"))) dir = dir.Parent;
        return dir?.FullName ?? throw new DirectoryNotFoundException($"No GptSharp.slnx above {AppContext.BaseDirectory}.");
    }
}
