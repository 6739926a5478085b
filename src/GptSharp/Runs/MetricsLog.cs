using GptSharp.Runtime;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace GptSharp.Runs;

/// <summary>
/// Appends one JSON object per line to <c>metrics.jsonl</c>, flushed at once so a crash loses nothing logged.
/// On resume, lines beyond the checkpoint's step are dropped, so the file always matches the weights.
/// </summary>
public sealed class MetricsLog
{
    public const string FileName = "metrics.jsonl";
    static readonly JsonSerializerOptions Options = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };
    readonly string _path;

    public MetricsLog(string runDirectory, int resumeFromStep)
    {
        Directory.CreateDirectory(runDirectory);
        _path = Path.Combine(runDirectory, FileName);
        if (!File.Exists(_path)) return;
        var kept = File.ReadLines(_path).Where(line => line.Length > 0 && StepOf(line) is int step && step <= resumeFromStep).ToList();
        AtomicFile.WriteAllText(_path, kept.Count == 0 ? "" : string.Join('\n', kept) + "\n");
    }

    public string FilePath => _path;

    public void Append(object record)
    {
        using var stream = new FileStream(_path, FileMode.Append, FileAccess.Write, FileShare.Read);
        using var writer = new StreamWriter(stream);
        writer.Write(JsonSerializer.Serialize(record, record.GetType(), Options));
        writer.Write('\n');
    }

    /// <summary>Every record of a run's metrics file.</summary>
    public static IEnumerable<JsonObject> Read(string path) =>
        File.ReadLines(path).Where(l => l.Length > 0).Select(l => JsonNode.Parse(l)!.AsObject());

    static int? StepOf(string line)
    {
        try
        {
            return JsonNode.Parse(line)?["step"]?.GetValue<int>();
        }
        catch (JsonException)
        {
            return null; // a line cut by a crash
        }
    }
}
