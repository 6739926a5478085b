namespace GptSharp.Runs;

/// <summary>
/// What keeps a run folder self-contained: its own copy of the tokenizer (a tokenizer folder is ~100 KB) in
/// <c>RUN/tokenizer</c>, and other runs named by paths relative to it, so a moved, renamed or unzipped folder still loads.
/// Older folders that hold absolute paths load as before.
/// </summary>
public static class RunFolder
{
    public const string TokenizerFolder = "tokenizer";

    /// <summary>
    /// Copies the tokenizer at <paramref name="tokenizer"/> (a folder, or a built-in name, which stays a name) into the
    /// run folder and returns the reference its checkpoints keep: <c>tokenizer</c>, or the built-in name.
    /// </summary>
    public static string KeepTokenizer(string runDirectory, string tokenizer)
    {
        if (!Directory.Exists(tokenizer)) return tokenizer;
        string target = Path.Combine(runDirectory, TokenizerFolder);
        if (Path.GetFullPath(tokenizer).TrimEnd(Path.DirectorySeparatorChar) == Path.GetFullPath(target)) return TokenizerFolder;
        Directory.CreateDirectory(target);
        foreach (string file in Directory.GetFiles(tokenizer))
            File.Copy(file, Path.Combine(target, Path.GetFileName(file)), overwrite: true);
        return TokenizerFolder;
    }

    /// <summary>A stored tokenizer reference made usable: a path relative to the run folder becomes a full path; an
    /// absolute path (older runs) or a built-in name is returned as it is.</summary>
    public static string ResolveTokenizer(string runDirectory, string reference)
    {
        if (reference.Length == 0 || Path.IsPathRooted(reference)) return reference;
        string inRun = Path.Combine(runDirectory, reference);
        return Directory.Exists(inRun) ? Path.GetFullPath(inRun) : reference;
    }

    /// <summary>How <paramref name="runDirectory"/>'s <c>config.json</c> names another run or folder: relative to it.</summary>
    public static string Reference(string runDirectory, string other) =>
        Path.GetRelativePath(Path.GetFullPath(runDirectory), Path.GetFullPath(other));
}
