using GptSharp.Runtime;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace GptSharp.Evaluation;

/// <summary>
/// One evaluation item: a context and either answer choices with the index of the right one (multiple choice, scored
/// by log-likelihood) or an expected text (generative, scored by exact match after normalisation).
/// </summary>
/// <param name="Group">When set, few-shot examples for this item come only from pool items of the same group.</param>
public sealed record EvalItem(string Context, IReadOnlyList<string>? Choices = null, int Answer = -1, string? Expected = null, string? Group = null)
{
    [JsonIgnore] public bool IsMultipleChoice => Choices is { Count: > 0 };

    /// <summary>Generative items: whether an answer is right, where exact match to <see cref="Expected"/> is not the test.</summary>
    [JsonIgnore] public Func<string, bool>? Accepts { get; init; }

    /// <summary>The right continuation of the context: the right choice, or the expected text.</summary>
    [JsonIgnore] public string Target => IsMultipleChoice ? Choices![Answer] : Expected!;
}

/// <summary>A task: held-out query items and a disjoint pool the few-shot examples are drawn from.</summary>
public sealed record EvalTask(string Name, string Description, IReadOnlyList<EvalItem> Items, IReadOnlyList<EvalItem> ShotPool, string Separator = "\n\n")
{
    /// <summary>Accuracy of guessing: the mean of 1 / choices over the items (0 for generative tasks).</summary>
    public double Chance => Items.Count == 0 ? 0 : Items.Average(i => i.IsMultipleChoice ? 1.0 / i.Choices!.Count : 0);

    /// <summary>
    /// Reads a user task from JSON lines: <c>{"split": "test"|"shot", "context": "...", "choices": [...], "answer": 0}</c>
    /// or, generative, <c>{"split": ..., "context": "...", "answer": "text"}</c>. Errors name file and line.
    /// </summary>
    public static EvalTask Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"No task file at '{path}'.", path);
        var items = new List<EvalItem>();
        var shots = new List<EvalItem>();
        int lineNumber = 0;
        foreach (string line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            string Where() => $"{path}:{lineNumber}";
            JsonElement root;
            try { root = JsonDocument.Parse(line).RootElement; }
            catch (JsonException e) { throw new InvalidDataException($"{Where()}: malformed JSON: {e.Message}", e); }
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{Where()}: expected a JSON object.");
            string context = root.TryGetProperty("context", out var c) && c.ValueKind == JsonValueKind.String ? JsonText.Read(c, $"{Where()}: field 'context'") : "";
            if (context.Length == 0) throw new InvalidDataException($"{Where()}: field 'context' is missing or empty.");
            if (!root.TryGetProperty("answer", out var answer)) throw new InvalidDataException($"{Where()}: field 'answer' is missing.");
            EvalItem item;
            if (root.TryGetProperty("choices", out var choices))
            {
                if (choices.ValueKind != JsonValueKind.Array || choices.GetArrayLength() < 2
                    || choices.EnumerateArray().Any(x => x.ValueKind != JsonValueKind.String || JsonText.Read(x, $"{Where()}: field 'choices'").Length == 0))
                    throw new InvalidDataException($"{Where()}: field 'choices' must be an array of at least two non-empty strings.");
                var list = choices.EnumerateArray().Select(x => x.GetString()!).ToList();
                if (answer.ValueKind != JsonValueKind.Number || !answer.TryGetInt32(out int index) || index < 0 || index >= list.Count)
                    throw new InvalidDataException($"{Where()}: field 'answer' must be the index of the right choice, 0 to {list.Count - 1}.");
                item = new EvalItem(context, list, index);
            }
            else
            {
                if (answer.ValueKind != JsonValueKind.String || JsonText.Read(answer, $"{Where()}: field 'answer'").Length == 0)
                    throw new InvalidDataException($"{Where()}: without 'choices', field 'answer' must be the expected text.");
                item = new EvalItem(context, Expected: answer.GetString());
            }
            string split = root.TryGetProperty("split", out var s) && s.ValueKind == JsonValueKind.String ? JsonText.Read(s, $"{Where()}: field 'split'") : "test";
            (split switch
            {
                "test" => items,
                "shot" => shots,
                _ => throw new InvalidDataException($"{Where()}: field 'split' must be 'test' or 'shot', not '{split}'."),
            }).Add(item);
        }
        if (items.Count == 0) throw new InvalidDataException($"{path}: no test items.");
        return new EvalTask(Path.GetFileNameWithoutExtension(path), $"user task {path}", items, shots);
    }
}
