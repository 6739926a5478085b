using System.Text;
using GptSharp.Alignment;
using GptSharp.Serving;

namespace GptSharp.Fuzzing;

/// <summary>
/// Drives the labeling page's session through random judgments and undos, and "crashes" it at random: the log cut at
/// any byte (kill -9 mid-write), the comparisons file left behind the log with temporary files beside it (kill -9
/// between the two writes), a trailing newline lost, a line damaged. After every restart the invariant is: either the
/// start refuses with one line naming the log file and line, or the comparisons file equals exactly what the surviving
/// log implies (replayed by an independent reference here), and no temporary file is left.
/// </summary>
public static class LabelingFuzzer
{
    public static async Task<FuzzReport> Run(string folder, int rounds, int seed)
    {
        var random = new Random(seed);
        var outcomes = new Dictionary<string, int>();
        var violations = new List<string>();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        Directory.CreateDirectory(folder);
        var items = Enumerable.Range(0, 12).Select(i => new LabelItem($"i{i}", $"prompt {i}", [.. Enumerable.Range(0, 2 + i % 3).Select(a => $"answer {i}.{a}")])).ToList();
        for (int round = 0; round < rounds; round++)
        {
            string log = Path.Combine(folder, $"r{round}.judgments.jsonl"), pairs = Path.Combine(folder, $"r{round}.pairs.jsonl");
            var session = new LabelingSession(items, log);
            await using (new LabelingServer(session, pairs)) { }
            for (int step = random.Next(1, 30); step > 0; step--) Act(random, session, items);
            string outcome = Crash(random, log, pairs);
            outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
            try
            {
                var reopened = new LabelingSession(items, log);
                await using (new LabelingServer(reopened, pairs)) { }
                if (Expected(items, log) is not { } expected) violations.Add($"round {round} ({outcome}): the log was accepted, but the reference finds it invalid");
                else if (!File.ReadAllText(pairs).Equals(expected, StringComparison.Ordinal))
                    violations.Add($"round {round} ({outcome}): the comparisons file differs from what the log implies");
                if (Directory.EnumerateFiles(folder, $".r{round}.pairs.jsonl.*.tmp").Any()) violations.Add($"round {round} ({outcome}): temporary files left");
                if (!File.ReadAllText(log).EndsWith('\n') && new FileInfo(log).Length > 0) violations.Add($"round {round} ({outcome}): the log does not end with a newline");
            }
            catch (InvalidDataException e)
            {
                outcomes["refused"] = outcomes.GetValueOrDefault("refused") + 1;
                if (!e.Message.StartsWith(log + ":", StringComparison.Ordinal) || e.Message.Contains('\n'))
                    violations.Add($"round {round} ({outcome}): the refusal does not name file:line in one line: {e.Message}");
                if (Expected(items, log) is not null) violations.Add($"round {round} ({outcome}): a valid log was refused: {e.Message}");
            }
            catch (Exception e)
            {
                violations.Add($"round {round} ({outcome}): {e.GetType().Name}: {e.Message}");
            }
            if (violations.Count > 20) break;
        }
        return new FuzzReport(rounds, outcomes, violations, watch.Elapsed.TotalSeconds);
    }

    static void Act(Random random, LabelingSession session, List<LabelItem> items)
    {
        if (random.Next(5) == 0) { session.Undo(); return; }
        var item = session.Next;
        if (item is null) { session.Undo(); return; }
        string choice = random.Next(6) switch { 0 => "tie", 1 => "bad", _ => random.Next(item.Answers.Count).ToString() };
        session.Judge(item.Id, choice);
    }

    /// <summary>Leaves the files as a crash (or a careless edit) would; returns what it did.</summary>
    static string Crash(Random random, string log, string pairs)
    {
        byte[] bytes = File.ReadAllBytes(log);
        string folder = Path.GetDirectoryName(log)!;
        switch (random.Next(6))
        {
            case 0:   // killed mid-write: the log cut at any byte
                File.WriteAllBytes(log, bytes[..random.Next(bytes.Length + 1)]);
                return "cut";
            case 1:   // killed between the log and the comparisons: a stale comparisons file and a dead writer's temporary file
                File.WriteAllText(pairs, "");
                File.WriteAllText(Path.Combine(folder, $".{Path.GetFileName(pairs)}.{DeadPid()}.{Guid.NewGuid():N}.tmp"), "{\"half\":");
                return "stale";
            case 2 when bytes.Length > 0:   // the last newline never reached the disk
                File.WriteAllBytes(log, bytes[..^1]);
                return "no-newline";
            case 3:   // a line edited by hand into something else
                var lines = Encoding.UTF8.GetString(bytes).Split('\n').ToList();
                string[] damage = ["{\"item\":\"i0\",\"choice\":\"99\"}", "{\"item\":\"i1\",\"choice\":\"-7\"}", "{\"item\":\"i2\",\"choice\":\"banana\"}",
                    "[1]", "5", "{\"undo\":5}", "{\"item\":\"nope\",\"choice\":\"0\"}", "{\"choice\":\"0\"}", "{\"item\":\"i3\",\"choice\":0}", "null", "\"text\""];
                lines.Insert(random.Next(lines.Count), damage[random.Next(damage.Length)]);
                File.WriteAllText(log, string.Join('\n', lines));
                return "damaged";
            case 4 when bytes.Length > 0:   // a judgment repeated: the same item judged twice
                var whole = Encoding.UTF8.GetString(bytes).Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.Contains("\"choice\"")).ToList();
                if (whole.Count == 0) return "clean";
                File.AppendAllText(log, whole[random.Next(whole.Count)] + "\n");
                return "repeated";
            default:
                return "clean";
        }
    }

    static int DeadPid()
    {
        // A pid that is surely not running: far above the kernel's default pid_max.
        return 4_000_000 + Random.Shared.Next(100_000);
    }

    /// <summary>The comparisons file a log implies, or null when the log is invalid: an independent replay of the format.</summary>
    static string? Expected(List<LabelItem> items, string log)
    {
        var byId = items.ToDictionary(i => i.Id);
        var judged = new List<(string Item, string Choice)>();
        string text = File.ReadAllText(log);
        foreach (string raw in text.Split('\n'))
        {
            if (raw.Trim().Length == 0) continue;
            System.Text.Json.Nodes.JsonNode? node;
            try { node = System.Text.Json.Nodes.JsonNode.Parse(raw); }
            catch (System.Text.Json.JsonException) { return null; }
            if (node is not System.Text.Json.Nodes.JsonObject entry) return null;
            if (entry.ContainsKey("undo"))
            {
                if (entry["undo"] is not System.Text.Json.Nodes.JsonValue v || !v.TryGetValue(out string? id) || judged.Count == 0 || judged[^1].Item != id) return null;
                judged.RemoveAt(judged.Count - 1);
                continue;
            }
            if (entry["item"] is not System.Text.Json.Nodes.JsonValue iv || !iv.TryGetValue(out string? item) || !byId.ContainsKey(item)) return null;
            if (entry["choice"] is not System.Text.Json.Nodes.JsonValue cv || !cv.TryGetValue(out string? choice)) return null;
            bool valid = choice is "tie" or "bad" || Enumerable.Range(0, byId[item].Answers.Count).Any(k => k.ToString() == choice);
            if (!valid || judged.Any(j => j.Item == item)) return null;
            judged.Add((item, choice));
        }
        var pairs = new List<PreferencePair>();
        foreach (var (itemId, choice) in judged)
        {
            if (!int.TryParse(choice, out int best)) continue;
            var item = byId[itemId];
            for (int other = 0; other < item.Answers.Count; other++)
                if (other != best)
                    pairs.Add(new PreferencePair([new Tokenization.ChatMessage(Tokenization.ChatRoles.User, item.Prompt)], item.Answers[best], item.Answers[other], $"item-{itemId}"));
        }
        string reference = Path.Combine(Path.GetDirectoryName(log)!, "reference.jsonl");
        ChatData.WritePreferences(reference, pairs);
        return File.ReadAllText(reference);
    }
}
