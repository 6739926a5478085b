using System.Text.Json;

namespace GptSharp.Alignment;

/// <summary>One thing to judge: a prompt and two or more answers to it.</summary>
public sealed record LabelItem(string Id, string Prompt, IReadOnlyList<string> Answers);

/// <summary>
/// A person's judgments over a list of items, kept as an append-only log (one JSON object per line, flushed to disk
/// before the call returns): <c>{"item":ID,"choice":"2"}</c> picks the best answer (0-based), <c>"tie"</c> says none is
/// better, <c>"bad"</c> that all are bad; <c>{"undo":ID}</c> withdraws the latest judgment. A crash loses nothing that
/// was acknowledged; half a line left by a crash mid-write is cut off when the log is opened again.
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
        if (!_byId.TryGetValue(itemId, out var item)) throw new ArgumentException($"No item '{itemId}'.", nameof(itemId));
        bool valid = choice is "tie" or "bad" || int.TryParse(choice, out int index) && index >= 0 && index < item.Answers.Count;
        if (!valid) throw new ArgumentException($"Choice '{choice}' for item '{itemId}': expected 0–{item.Answers.Count - 1}, tie or bad.", nameof(choice));
        lock (_lock)
        {
            if (_judgments.Any(j => j.Item == itemId)) throw new InvalidOperationException($"Item '{itemId}' is judged already; undo first.");
            Append(JsonSerializer.Serialize(new { item = itemId, choice }));
            _judgments.Add((itemId, choice));
        }
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
        int complete = text.LastIndexOf('\n') + 1;
        if (complete < text.Length) File.WriteAllText(_log, text[..complete]); // half a line: the crash came mid-write
        int number = 0;
        foreach (string line in text[..complete].Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            number++;
            JsonElement entry;
            try { entry = JsonDocument.Parse(line).RootElement; }
            catch (JsonException e) { throw new InvalidDataException($"{_log}:{number}: invalid JSON: {e.Message}", e); }
            if (entry.TryGetProperty("undo", out var undone))
            {
                if (_judgments.Count == 0 || _judgments[^1].Item != undone.GetString())
                    throw new InvalidDataException($"{_log}:{number}: undoes item '{undone}', which is not the latest judgment.");
                _judgments.RemoveAt(_judgments.Count - 1);
                continue;
            }
            string itemId = entry.TryGetProperty("item", out var i) && i.ValueKind == JsonValueKind.String ? i.GetString()!
                : throw new InvalidDataException($"{_log}:{number}: expected a string field \"item\" (or \"undo\").");
            string choice = entry.TryGetProperty("choice", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString()!
                : throw new InvalidDataException($"{_log}:{number}: expected a string field \"choice\".");
            if (!_byId.ContainsKey(itemId)) throw new InvalidDataException($"{_log}:{number}: item '{itemId}' is not in the item list: were these judgments made on another file?");
            _judgments.Add((itemId, choice));
        }
    }

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
