using GptSharp.Runs;
using GptSharp.Runtime;
using GptSharp.Tokenization;
using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using GptSharp.Alignment;
using GptSharp.Data;
using GptSharp.Evaluation;
using GptSharp.Models;
using TorchSharp;

namespace GptSharp.Fuzzing;

/// <summary>
/// Corrupts the files GptSharp reads — safetensors weights, a checkpoint's <c>model.json</c> and <c>state.json</c>,
/// chat, preference and eval JSON lines, token shards — by truncation, bit flips, bytes that are not UTF-8, lone
/// surrogates and JSON of the wrong shape, and loads each. Invariant: it loads, or fails with one line naming the file
/// (an <see cref="InvalidDataException"/> or <see cref="FileNotFoundException"/>); never another exception, never a hang.
/// </summary>
public static class FileFuzzer
{
    sealed record Target(string Name, string File, Action<string> Load, bool Json, bool Lines);

    public static FuzzReport Run(string directory, int cases, int seed)
    {
        var random = new Random(seed);
        var originals = Path.Combine(directory, "originals");
        var targets = Build(originals);
        var outcomes = new Dictionary<string, int>();
        var violations = new List<string>();
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < cases; i++)
        {
            var target = targets[random.Next(targets.Count)];
            string work = Path.Combine(directory, $"case-{i}");
            CopyFolder(originals, work);
            string file = Path.Combine(work, target.File);
            string how = Corrupt(random, file, target);
            string outcome;
            var load = Task.Run(() => target.Load(work));
            try
            {
                if (!load.Wait(TimeSpan.FromSeconds(20))) { violations.Add($"{target.Name} ({how}): no answer within 20 s"); break; }
                outcome = "loaded";
            }
            catch (AggregateException wrapped) when (wrapped.InnerException is { } e)
            {
                outcome = e.GetType().Name;
                bool expectedType = e is InvalidDataException or FileNotFoundException;
                if (!expectedType) violations.Add($"{target.Name} ({how}): {e.GetType().Name}: {e.Message}");
                else if (!e.Message.Contains(work)) violations.Add($"{target.Name} ({how}): the error does not name the file: {e.Message}");
                else if (e.Message.Contains('\n')) violations.Add($"{target.Name} ({how}): the error is not one line: {e.Message}");
            }
            string key = $"{target.Name} {outcome}";
            outcomes[key] = outcomes.GetValueOrDefault(key) + 1;
            Directory.Delete(work, true);
        }
        return new FuzzReport(cases, outcomes, violations, watch.Elapsed.TotalSeconds);
    }

    static List<Target> Build(string folder)
    {
        Directory.CreateDirectory(folder);
        torch.manual_seed(0);
        using (var model = new Gpt(GptConfig.Gpt2(64, 16, layers: 1, heads: 2, width: 16)))
            Checkpoint.Save(Path.Combine(folder, "run"), model, null, new TrainingState(3, "0:5", "", "tokenizer"));
        IReadOnlyList<ChatMessage> Chat(string q, string a) => [new(ChatRoles.System, "你是詩人。"), new(ChatRoles.User, q), new(ChatRoles.Assistant, a)];
        ChatData.WriteConversations(Path.Combine(folder, "chat.jsonl"), [Chat("《靜夜思》的作者是誰？", "李白。"), Chat("春眠", "不覺曉。")]);
        ChatData.WritePreferences(Path.Combine(folder, "pairs.jsonl"),
            [new PreferencePair([new(ChatRoles.User, "寫一首詩")], "床前明月光，疑是地上霜。", "光光光光"), new PreferencePair([new(ChatRoles.User, "春")], "春眠不覺曉。", "曉")]);
        File.WriteAllText(Path.Combine(folder, "task.jsonl"),
            """
            {"split": "test", "context": "床前明月", "choices": ["光", "霜"], "answer": 0}
            {"split": "shot", "context": "春眠不覺", "answer": "曉"}
            {"context": "疑是地上", "choices": ["霜", "月", "光"], "answer": 0}
            """);
        TokenShard.Write(Path.Combine(folder, "train.bin"), 300, [new ReadOnlyMemory<int>([.. Enumerable.Range(0, 200)])]);

        string Checkpointed(string work, string name) => Path.Combine(work, "run", Checkpoint.Folder, name);
        return
        [
            new("safetensors", "run/checkpoint/model.safetensors", work =>
            {
                var (tensors, _) = SafeTensors.Load(Checkpointed(work, "model.safetensors"));
                foreach (var t in tensors.Values) t.Dispose();
            }, Json: false, Lines: false),
            new("checkpoint", "run/checkpoint/model.safetensors", work => LoadRun(work), Json: false, Lines: false),
            new("model.json", "run/checkpoint/model.json", work => LoadRun(work), Json: true, Lines: false),
            new("state.json", "run/checkpoint/state.json", work => LoadRun(work), Json: true, Lines: false),
            new("chat", "chat.jsonl", work => ChatData.ReadConversations(Path.Combine(work, "chat.jsonl")).ToList(), Json: true, Lines: true),
            new("pairs", "pairs.jsonl", work => ChatData.ReadPreferences(Path.Combine(work, "pairs.jsonl")).ToList(), Json: true, Lines: true),
            new("eval", "task.jsonl", work => EvalTask.Load(Path.Combine(work, "task.jsonl")), Json: true, Lines: true),
            new("shard", "train.bin", work =>
            {
                using var shard = new MappedTokenShard(Path.Combine(work, "train.bin"));
                Span<long> tokens = stackalloc long[(int)Math.Min(shard.Count, 16)];
                shard.CopyTo(0, tokens);
            }, Json: false, Lines: false),
        ];
    }

    static void LoadRun(string work)
    {
        string run = Path.Combine(work, "run");
        var (model, _) = Checkpoint.LoadModel(run);
        model.Dispose();
        Checkpoint.StartingPoint(run, resume: true);
    }

    /// <summary>Damages the file in one of several ways; returns how, for the report.</summary>
    static string Corrupt(Random random, string file, Target target)
    {
        byte[] bytes = File.ReadAllBytes(file);
        int kind = random.Next(target.Json ? 6 : 3);
        switch (kind)
        {
            case 0:
                int length = random.Next(bytes.Length);
                File.WriteAllBytes(file, bytes[..length]);
                return $"truncated to {length} bytes";
            case 1:
                int flips = 1 + random.Next(8);
                // Weights are mostly data, where a flipped bit is just another number (or a NaN, which must be refused);
                // aim most flips at the first bytes, where the header is.
                for (int i = 0; i < flips; i++) bytes[random.Next(random.Next(2) == 0 ? Math.Min(bytes.Length, 400) : bytes.Length)] ^= (byte)(1 << random.Next(8));
                File.WriteAllBytes(file, bytes);
                return $"{flips} bits flipped";
            case 2:
                int at = random.Next(bytes.Length);
                File.WriteAllBytes(file, [.. bytes[..at], 0xFF, 0xC3, 0x28, .. bytes[at..]]);
                return $"invalid UTF-8 at {at}";
            case 3:
                // Inside a string value: valid JSON, but not valid text.
                string text = Encoding.UTF8.GetString(bytes);
                var values = System.Text.RegularExpressions.Regex.Matches(text, "\":\\s*\"");
                if (values.Count == 0) { File.WriteAllText(file, "\"\\ud800\""); return "a lone surrogate"; }
                var hit = values[random.Next(values.Count)];
                File.WriteAllText(file, text[..(hit.Index + hit.Length)] + "\\ud800" + text[(hit.Index + hit.Length)..]);
                return "a lone surrogate";
            default:
                return Reshape(random, file, target);
        }
    }

    /// <summary>Replaces one JSON value (of one line, for JSON lines) with a value of another shape.</summary>
    static string Reshape(Random random, string file, Target target)
    {
        string[] lines = target.Lines ? File.ReadAllLines(file) : [File.ReadAllText(file)];
        int which = random.Next(lines.Length);
        var root = JsonNode.Parse(lines[which])!;
        var nodes = new List<JsonNode>();
        void Walk(JsonNode? node)
        {
            if (node is null) return;
            nodes.Add(node);
            if (node is JsonObject o) foreach (var (_, child) in o) Walk(child);
            if (node is JsonArray a) foreach (var child in a) Walk(child);
        }
        Walk(root);
        var victim = nodes[random.Next(nodes.Count)];
        JsonNode? replacement = random.Next(9) switch
        {
            0 => 12345, 1 => -7, 2 => "text", 3 => true, 4 => null, 5 => new JsonArray(1, 2), 6 => new JsonObject { ["x"] = 1 }, 7 => 1e300, _ => "",
        };
        string path = victim.GetPath();
        if (victim.Parent is JsonObject parent) parent[victim.GetPropertyName()] = replacement;
        else if (victim.Parent is JsonArray array) array[victim.GetElementIndex()] = replacement;
        else root = replacement ?? JsonValue.Create(0);
        lines[which] = root?.ToJsonString() ?? "null";
        File.WriteAllText(file, string.Join('\n', lines));
        return $"{path} reshaped to {lines[which][..Math.Min(80, lines[which].Length)]}";
    }

    static void CopyFolder(string from, string to)
    {
        foreach (string dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories)) Directory.CreateDirectory(dir.Replace(from, to));
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from, "*", SearchOption.AllDirectories)) File.Copy(file, file.Replace(from, to));
    }
}
