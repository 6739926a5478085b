namespace GptSharp.Runtime;

/// <summary>
/// Guards reads of files that must hold data: a named pipe, socket or device at a checkpoint's path would make a read
/// wait forever (a pipe with no writer) or never end (a device). These report a length of 0, as does an empty file, and
/// every file the project reads whole has at least a header, so a length of 0 is refused by name before any open.
/// </summary>
public static class RegularFile
{
    /// <summary>Throws <see cref="InvalidDataException"/> naming <paramref name="path"/> when it is empty or not a regular file.</summary>
    public static void Require(string path, string expected)
    {
        if (Directory.Exists(path)) throw new InvalidDataException($"{path}: a folder, not a file ({expected} expected).");
        if (new FileInfo(path).Length == 0)
            throw new InvalidDataException($"{path}: empty, or not a regular file (a named pipe, socket or device); {expected} expected.");
    }

    /// <summary>Whether <paramref name="path"/> is a regular file with data in it.</summary>
    public static bool HasData(string path) => File.Exists(path) && new FileInfo(path).Length > 0;
}
