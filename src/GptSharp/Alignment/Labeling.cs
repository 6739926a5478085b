using System.Text.Json;

namespace GptSharp.Alignment;

/// <summary>One thing to judge: a prompt and two or more answers to it.</summary>
public sealed record LabelItem(string Id, string Prompt, IReadOnlyList<string> Answers);

/// <summary>
/// A person's judgments over a list of items, kept as an append-only log (one JSON object per line, flushed to disk
/// before the call returns): <c>{"item":ID,"choice":"2"}</c> picks the best answer (0-based), <c>"tie"</c> says none is
/// better, <c>"bad"</c> that all are bad; <c>{"undo":ID}</c> withdraws the latest judgment. A crash loses nothing that
/// was acknowledged: when the log is opened again, a last line that does not parse (half written when the crash came)
/// is cut off, a complete last line that only lacks its newline is kept and the newline added, and every line is
/// checked as <see cref="Judge"/> checks a new judgment — an error names the file and line.
/// </summary>
public sealed class LabelingSession
{
    readonly IReadOnlyList<LabelItem> _items;
    readonly Dictionary<string, LabelItem> _byId;
    readonly string _log;
    readonly List<(string Item, string Choice)> _judgments = [];
    readonly Lock _lock = new();

    public LabelingSession(IReadOnlyList<LabelItem> items, string judgmentsPath)
    {
        if (items.Count == 0) throw new ArgumentException("Nothing to label: the item list is empty.", nameof(items));
        _items = items;
        _byId = items.ToDictionary(i => i.Id, StringComparer.Ordinal);
        _log = judgmentsPath;
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(judgmentsPath))!);
        if (File.Exists(judgmentsPath)) Replay();
    }

    public int Total => _items.Count;
    public int Done { get { lock (_lock) return _judgments.Count; } }

    /// <summary>The first item not judged yet (null when all are).</summary>
    public LabelItem? Next
    {
        get
        {
            lock (_lock)
            {
                var judged = _judgments.Select(j => j.Item).ToHashSet(StringComparer.Ordinal);
                return _items.FirstOrDefault(i => !judged.Contains(i.Id));
            }
        }
    }

    /// <summary>Records a judgment: an answer's index, <c>tie</c> or <c>bad</c>; on disk when this returns.</summary>
    public void Judge(string itemId, string choice)
    {
        lock (_lock)
        {
            if (Problem(itemId, choice) is { } problem) throw new ArgumentException(problem, nameof(choice));
            if (_judgments.Any(j => j.Item == itemId)) throw new InvalidOperationException($"Item '{itemId}' is judged already; undo first.");
            Append(JsonSerializer.Serialize(new { item = itemId, choice }));
            _judgments.Add((itemId, choice));
        }
    }

    /// <summary>Why a judgment is not one of this item list's, or null.</summary>
    string? Problem(string itemId, string choice)
    {
        if (!_byId.TryGetValue(itemId, out var item)) return $"No item '{itemId}' in the item list.";
        // Digits only: "+1", " 1" or "01" would parse but are not what Judge writes.
        bool valid = choice is "tie" or "bad" || choice.Length is > 0 and < 4 && choice.All(char.IsAsciiDigit) && (choice == "0" || choice[0] != '0')
                     && int.Parse(choice) < item.Answers.Count;
        return valid ? null : $"Choice '{choice}' for item '{itemId}': expected 0–{item.Answers.Count - 1}, tie or bad.";
    }

    /// <summary>Withdraws the latest judgment; returns its item (null when there is none).</summary>
    public LabelItem? Undo()
    {
        lock (_lock)
        {
            if (_judgments.Count == 0) return null;
            string itemId = _judgments[^1].Item;
            Append(JsonSerializer.Serialize(new { undo = itemId }));
            _judgments.RemoveAt(_judgments.Count - 1);
            return _byId[itemId];
        }
    }

    /// <summary>The comparisons the judgments give: the chosen answer over each other answer of its item, the pairs of
    /// one item sharing a group. Ties and "all bad" give none.</summary>
    public List<PreferencePair> Pairs()
    {
        lock (_lock)
        {
            var pairs = new List<PreferencePair>();
            foreach (var (itemId, choice) in _judgments)
            {
                if (!int.TryParse(choice, out int best)) continue;
                var item = _byId[itemId];
                for (int other = 0; other < item.Answers.Count; other++)
                    if (other != best && item.Answers[other] != item.Answers[best])
                        pairs.Add(new PreferencePair([new Tokenization.ChatMessage(Tokenization.ChatRoles.User, item.Prompt)], item.Answers[best], item.Answers[other], $"item-{itemId}"));
            }
            return pairs;
        }
    }

    /// <summary>The judgment of each item so far, in order.</summary>
    public IReadOnlyList<(string Item, string Choice)> Judgments { get { lock (_lock) return [.. _judgments]; } }

    void Append(string line)
    {
        using var stream = new FileStream(_log, FileMode.Append, FileAccess.Write, FileShare.Read);
        var bytes = System.Text.Encoding.UTF8.GetBytes(line + "\n");
        stream.Write(bytes);
        stream.Flush(flushToDisk: true);
    }

    void Replay()
    {
        string text = File.ReadAllText(_log);
        var lines = text.Split('\n').ToList();
        string tail = lines[^1];   // what follows the last newline: "" when the log ends with one
        lines.RemoveAt(lines.Count - 1);
        if (tail.Length > 0)
        {
            if (!Parses(tail)) File.WriteAllText(_log, text[..^tail.Length]);   // half a line: the crash came mid-write
            else
            {
                File.AppendAllText(_log, "\n");   // a whole judgment whose newline the crash kept from the disk
                lines.Add(tail);
            }
        }
        for (int number = 1; number <= lines.Count; number++)
        {
            string line = lines[number - 1];
            if (string.IsNullOrWhiteSpace(line)) continue;
            string where = $"{_log}:{number}";
            var entry = Entry(line) ?? throw new InvalidDataException($"{where}: not a JSON object: {Shorten(line)}");
            if (entry.TryGetProperty("undo", out var undone))
            {
                string undoneId = undone.ValueKind == JsonValueKind.String ? undone.GetString()!
                    : throw new InvalidDataException($"{where}: \"undo\" must be an item id (a string), not {undone.ValueKind.ToString().ToLowerInvariant()}.");
                if (_judgments.Count == 0 || _judgments[^1].Item != undoneId)
                    throw new InvalidDataException($"{where}: undoes item '{undoneId}', which is not the latest judgment.");
                _judgments.RemoveAt(_judgments.Count - 1);
                continue;
            }
            string itemId = entry.TryGetProperty("item", out var i) && i.ValueKind == JsonValueKind.String ? i.GetString()!
                : throw new InvalidDataException($"{where}: expected a string field \"item\" (or \"undo\").");
            string choice = entry.TryGetProperty("choice", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString()!
                : throw new InvalidDataException($"{where}: expected a string field \"choice\".");
            if (!_byId.ContainsKey(itemId)) throw new InvalidDataException($"{where}: item '{itemId}' is not in the item list: were these judgments made on another file?");
            if (Problem(itemId, choice) is { } problem) throw new InvalidDataException($"{where}: {problem}");
            if (_judgments.Any(j => j.Item == itemId)) throw new InvalidDataException($"{where}: item '{itemId}' is judged a second time without an undo between.");
            _judgments.Add((itemId, choice));
        }
    }

    /// <summary>A log line as a JSON object, or null when it is not one.</summary>
    static JsonElement? Entry(string line)
    {
        try
        {
            var root = JsonDocument.Parse(line).RootElement;
            return root.ValueKind == JsonValueKind.Object ? root : null;
        }
        catch (JsonException) { return null; }
    }

    static bool Parses(string line)
    {
        try { using var _ = JsonDocument.Parse(line); return true; }
        catch (JsonException) { return false; }
    }

    static string Shorten(string line) => line.Length <= 80 ? line : line[..80] + "…";

    /// <summary>Items from JSONL: <c>{"id": "...", "prompt": "...", "answers": ["...", "..."]}</c> per line (id optional:
    /// the line number). Errors name the file, line and field.</summary>
    public static List<LabelItem> ReadItems(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such item file (JSONL with \"prompt\" and \"answers\").", path);
        var items = new List<LabelItem>();
        var ids = new HashSet<string>(StringComparer.Ordinal);
        int number = 0;
        foreach (string line in File.ReadLines(path))
        {
            number++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonElement entry;
            try { entry = JsonDocument.Parse(line).RootElement; }
            catch (JsonException e) { throw new InvalidDataException($"{path}:{number}: invalid JSON: {e.Message}", e); }
            string prompt = entry.ValueKind == JsonValueKind.Object && entry.TryGetProperty("prompt", out var p) && p.ValueKind == JsonValueKind.String
                ? p.GetString()! : throw new InvalidDataException($"{path}:{number}: expected a string field \"prompt\".");
            if (!entry.TryGetProperty("answers", out var a) || a.ValueKind != JsonValueKind.Array || a.EnumerateArray().Any(x => x.ValueKind != JsonValueKind.String))
                throw new InvalidDataException($"{path}:{number}: expected \"answers\", an array of strings.");
            var answers = a.EnumerateArray().Select(x => x.GetString()!).ToList();
            if (answers.Count < 2) throw new InvalidDataException($"{path}:{number}: \"answers\" holds {answers.Count}; a comparison needs at least 2.");
            string id = entry.TryGetProperty("id", out var idElement) ? idElement.ToString() : number.ToString();
            if (!ids.Add(id)) throw new InvalidDataException($"{path}:{number}: id '{id}' appears twice.");
            items.Add(new LabelItem(id, prompt, answers));
        }
        if (items.Count == 0) throw new InvalidDataException($"{path}: no items.");
        return items;
    }
}
