using GptSharp.Alignment;
using GptSharp.Data;

namespace GptSharp.Evaluation;

/// <summary>
/// Evaluation tasks built from the embedded corpora, deterministically. Query items come only from documents that
/// <c>data prepare</c> holds out (seed 1337, 2%), so a model pretrained on the shards never saw them; few-shot examples
/// come from the other documents.
/// </summary>
public static class BuiltInTasks
{
    public const long DataSeed = 1337;
    public const double DataHeldOut = 0.02;
    public static IReadOnlyList<string> Names { get; } = ["next-line", "author", "form", "sotu-completion", "spam"];

    public static EvalTask Build(string name, int items = 200, long seed = 1) => name switch
    {
        "next-line" => NextLine(items, seed),
        "author" => Author(items, seed),
        "form" => Form(items, seed),
        "sotu-completion" => SotuCompletion(items, seed),
        "spam" => Spam(items, seed),
        _ => throw new ArgumentException($"Unknown task '{name}': built-in tasks are {string.Join(", ", Names)}, or give a .jsonl task file.", nameof(name)),
    };

    sealed record Poem(string Title, string Author, string[] Lines, bool HeldOut);

    static List<Poem> Poems() => [.. Corpus.Read("tang").Select((d, i) => new Poem(d.Field("title") ?? "", d.Field("author") ?? "", d.Text.Split('\n'),
        ShardBuilder.IsValidation(DataSeed, "tang", i, DataHeldOut)))];

    /// <summary>Builds a task from per-split candidates: each becomes an item with its right answer and distractors.</summary>
    static EvalTask Make<T>(string name, string description, List<T> heldOut, List<T> pool, int items, long seed, Func<T, Random, EvalItem?> item)
    {
        var random = new Random((int)(seed & 0x7fffffff));
        random.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(heldOut));
        random.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(pool));
        var queries = heldOut.Select(x => item(x, random)).OfType<EvalItem>().Take(items).ToList();
        var shots = pool.Select(x => item(x, random)).OfType<EvalItem>().Take(64).ToList();
        return new EvalTask(name, description, queries, shots);
    }

    static EvalItem Choose(string context, string right, IEnumerable<string> distractors, Random random)
    {
        var choices = distractors.Where(d => d != right).Distinct().Take(3).Append(right).ToList();
        random.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(choices));
        return new EvalItem(context, choices, choices.IndexOf(right));
    }

    static EvalTask NextLine(int items, long seed)
    {
        var poems = Poems().Where(p => p.Lines.Length >= 2 && p.Lines[0].Length == p.Lines[1].Length && p.Lines[0].Length is 12 or 16).ToList();
        var lines = poems.Where(p => !p.HeldOut).Select(p => p.Lines[1]).ToList();
        return Make("next-line", "poem: the line that follows (4 choices)", poems.Where(p => p.HeldOut).ToList(), poems.Where(p => !p.HeldOut).ToList(), items, seed,
            (p, r) => Choose(p.Lines[0] + "\n", p.Lines[1], Enumerable.Range(0, 40).Select(_ => lines[r.Next(lines.Count)]).Where(l => l.Length == p.Lines[1].Length), r));
    }

    static EvalTask Author(int items, long seed)
    {
        var poems = Poems().Where(p => p.Author.Length > 0 && p.Lines.Length >= 2).ToList();
        // Distractors are frequent poets, so every choice is a plausible name.
        var authors = poems.GroupBy(p => p.Author).OrderByDescending(g => g.Count()).Take(100).Select(g => g.Key).ToList();
        return Make("author", "poem → author (4 choices)", poems.Where(p => p.HeldOut).ToList(), poems.Where(p => !p.HeldOut).ToList(), items, seed,
            (p, r) => Choose($"{string.Join("\n", p.Lines.Take(2))}\n作者：", p.Author, Enumerable.Range(0, 6).Select(_ => authors[r.Next(authors.Count)]), r));
    }

    static EvalTask Form(int items, long seed)
    {
        static string? FormOf(Poem p) => BuiltInDatasets.IsRegularQuatrainOrRegulated(p.Lines)
            ? (p.Lines[0].Length == 12 ? "五言" : "七言") + (p.Lines.Length == 2 ? "絕句" : "律詩")
            : null;
        string[] forms = ["五言絕句", "七言絕句", "五言律詩", "七言律詩"];
        var poems = Poems().Where(p => FormOf(p) is not null).ToList();
        return Make("form", "poem → form: 5 or 7 characters, quatrain or regulated verse (4 choices)", poems.Where(p => p.HeldOut).ToList(), poems.Where(p => !p.HeldOut).ToList(), items, seed,
            (p, r) =>
            {
                var choices = forms.ToList();
                return new EvalItem($"{string.Join("\n", p.Lines)}\n體裁：", choices, choices.IndexOf(FormOf(p)!));
            });
    }

    static EvalTask SotuCompletion(int items, long seed)
    {
        var addresses = Corpus.Read("sotu").Select((d, i) => (Text: d.Text, HeldOut: ShardBuilder.IsValidation(DataSeed, "sotu", i, 0.2))).ToList();
        static IEnumerable<string> Sentences(string text) => text.Split(". ").Select(s => s.Trim()).Where(s => s.Split(' ').Length is >= 12 and <= 30 && !s.Contains('\n'));
        var heldOut = addresses.Where(a => a.HeldOut).SelectMany(a => Sentences(a.Text)).ToList();
        var pool = addresses.Where(a => !a.HeldOut).SelectMany(a => Sentences(a.Text)).ToList();
        var endings = pool.Select(s => string.Join(' ', s.Split(' ')[(s.Split(' ').Length / 2)..])).ToList();
        return Make("sotu-completion", "State of the Union: the end of a sentence (4 choices)", heldOut, pool, items, seed, (s, r) =>
        {
            var words = s.Split(' ');
            int half = words.Length / 2;
            return Choose(string.Join(' ', words[..half]), " " + string.Join(' ', words[half..]) + ".",
                Enumerable.Range(0, 6).Select(_ => " " + endings[r.Next(endings.Count)] + "."), r);
        });
    }

    static EvalTask Spam(int items, long seed)
    {
        var messages = Corpus.Read("spam").Select((d, i) => (Text: d.Text, Label: d.Field("label") ?? "", HeldOut: ShardBuilder.IsValidation(DataSeed, "spam", i, 0.2)))
            .Where(m => m.Label is "spam" or "ham").ToList();
        static string Excerpt(string text) => text.Length <= 200 ? text : text[..200];
        return Make("spam", "email → spam or ham, as a text prompt (2 choices)", messages.Where(m => m.HeldOut).ToList(), messages.Where(m => !m.HeldOut).ToList(), items, seed,
            (m, _) => new EvalItem($"Message: {Excerpt(m.Text)}\nLabel:", [" spam", " ham"], m.Label == "spam" ? 0 : 1));
    }
}
