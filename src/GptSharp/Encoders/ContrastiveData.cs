using GptSharp.Data;

namespace GptSharp.Encoders;

/// <summary>
/// A text and the text its vector should sit nearest. Pairs of one <paramref name="Group"/> (≥ 0; a label) are alike, so
/// in a batch they are not counted as each other's negatives; −1: no group.
/// </summary>
public sealed record TextPair(string Query, string Positive, int Group = -1);

/// <summary>
/// Pairs for contrastive training, split into train and held-out; <paramref name="Labeled"/> when they were drawn from
/// labelled texts (then what the vectors are worth is nearest-neighbour accuracy on that split, not pair recall).
/// </summary>
public sealed record ContrastiveData(IReadOnlyList<TextPair> Train, IReadOnlyList<TextPair> HeldOut, LabeledData? Labeled = null)
{
    /// <summary>
    /// JSON lines with <c>text</c> (the query), <c>positive</c> and an optional <c>group</c>; a fixed
    /// <paramref name="heldOutFraction"/> of lines (per seed) is held out. A missing field names file and line.
    /// </summary>
    public static ContrastiveData Load(string path, long seed, double heldOutFraction = 0.1)
    {
        var groups = new Dictionary<string, int>();
        var pairs = Corpus.Read(path).Select(d =>
        {
            string positive = d.Field("positive") is { Length: > 0 } p ? p
                : throw new InvalidDataException($"{path}:{d.Line}: field 'positive' is missing or empty (each line pairs 'text' with the 'positive' text it should sit nearest).");
            int group = d.Field("group") is { } name ? groups.TryGetValue(name, out int id) ? id : groups[name] = groups.Count : -1;
            return new TextPair(d.Text, positive, group);
        }).ToList();
        return Split(pairs, Path.GetFileName(path), seed, heldOutFraction);
    }

    /// <summary>
    /// Each document of a corpus with at least two lines: its first line (a poem's opening, a title) → the rest. Documents
    /// are held out as <see cref="BertPretrainRun.Examples"/> holds them out for the same seed and share, so a held-out
    /// poem was seen in neither pretraining nor this.
    /// </summary>
    public static ContrastiveData FirstLines(string corpus, long seed, double heldOutFraction = 0.01)
    {
        var pairs = Corpus.Read(corpus).Select(d => d.Text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            .Select(lines => lines.Length >= 2 ? new TextPair(lines[0], string.Join("\n", lines[1..])) : null).ToList();
        string name = Path.GetFileName(corpus);
        var (train, heldOut) = (new List<TextPair>(), new List<TextPair>());
        for (int i = 0; i < pairs.Count; i++)
            if (pairs[i] is { } pair) (ShardBuilder.IsValidation(seed, name, i, heldOutFraction) ? heldOut : train).Add(pair);
        return Checked(new ContrastiveData(train, heldOut), corpus);
    }

    /// <summary>
    /// Each text paired with another text of its label (drawn per seed), grouped by label: supervised contrastive pairs, on
    /// the labelled data's own train and held-out split.
    /// </summary>
    public static ContrastiveData SameLabel(LabeledData data, long seed)
    {
        var random = new Random((int)(seed & 0x7fffffff));
        List<TextPair> Pairs(IReadOnlyList<LabeledText> texts)
        {
            var byLabel = texts.GroupBy(t => t.Label).ToDictionary(g => g.Key, g => g.ToList());
            return [.. texts.Where(t => byLabel[t.Label].Count > 1).Select(t =>
            {
                var others = byLabel[t.Label];
                LabeledText other;
                do other = others[random.Next(others.Count)]; while (ReferenceEquals(other, t));
                return new TextPair(t.Text, other.Text, t.Label);
            })];
        }
        return Checked(new ContrastiveData(Pairs(data.Train), Pairs(data.HeldOut), data), "the labelled data");
    }

    static ContrastiveData Split(List<TextPair> pairs, string name, long seed, double heldOutFraction)
    {
        var (train, heldOut) = (new List<TextPair>(), new List<TextPair>());
        for (int i = 0; i < pairs.Count; i++) (ShardBuilder.IsValidation(seed, name, i, heldOutFraction) ? heldOut : train).Add(pairs[i]);
        return Checked(new ContrastiveData(train, heldOut), name);
    }

    static ContrastiveData Checked(ContrastiveData data, string source) =>
        data.Train.Count >= 2 && data.HeldOut.Count >= 2 ? data
        : throw new InvalidDataException($"{source}: {data.Train.Count} train and {data.HeldOut.Count} held-out pairs; contrastive training needs at least two of each.");
}
