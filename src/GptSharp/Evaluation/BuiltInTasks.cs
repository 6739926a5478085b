using GptSharp.Data;
using GptSharp.Tokenization;

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
    public static IReadOnlyList<string> Names { get; } = ["next-line", "author", "form", "sotu-completion", "spam", "label-copy", "label-form", "form-steer"];

    /// <summary>Tasks whose answer is given only by the examples in the prompt, so a rise over 0 shots is in-context
    /// learning and nothing else (the label tasks are at chance at 0 shots by construction).</summary>
    public static IReadOnlyList<string> InContext { get; } = ["label-copy", "label-form", "form-steer"];

    public static EvalTask Build(string name, int items = 200, long seed = 1) => name switch
    {
        "next-line" => NextLine(items, seed),
        "author" => Author(items, seed),
        "form" => Form(items, seed),
        "sotu-completion" => SotuCompletion(items, seed),
        "spam" => Spam(items, seed),
        "label-copy" => LabelCopy(items, seed),
        "label-form" => LabelForm(items, seed),
        "form-steer" => FormSteer(items, seed),
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
        static string? FormOf(Poem p) => PoemForm.IsRegularQuatrainOrRegulated(p.Lines)
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

    static readonly string[] Labels = ["甲", "乙", "丙", "丁"];

    /// <summary>
    /// Six key characters each carry one of four arbitrary labels (甲乙丙丁, fixed by the seed); an item is a
    /// random character, its key and a colon, answered by the key's label. Only an example with the same key tells the
    /// label, so accuracy rises with k as such an example becomes likely (1 − (5/6)^k) and the model copies its label
    /// — the induction pattern of in-context learning. Synthetic: no corpus text, nothing to remember from pretraining.
    /// </summary>
    static EvalTask LabelCopy(int items, long seed)
    {
        string[] keys = ["月", "山", "風", "花", "雲", "水"];
        string[] fillers = ["春", "秋", "夜", "江", "天", "人", "日", "長", "空", "城", "白", "青", "孤", "落", "歸", "遠"];
        var random = new Random((int)(seed & 0x7fffffff));
        var label = keys.ToDictionary(k => k, _ => Labels[random.Next(Labels.Length)]);
        // Queries and examples take their first character from disjoint halves, so no example repeats a query.
        EvalItem Next(int firstFiller)
        {
            string key = keys[random.Next(keys.Length)];
            return new EvalItem($"{fillers[firstFiller + random.Next(fillers.Length / 2)]}{key}：", Labels, Array.IndexOf(Labels, label[key]));
        }
        var queries = Enumerable.Range(0, items).Select(_ => Next(0)).ToList();
        var pool = Enumerable.Range(0, 64).Select(_ => Next(fillers.Length / 2)).ToList();
        return new EvalTask("label-copy", "in context: a key character's arbitrary label, given only by examples (4 choices)", queries, pool, "\n");
    }

    /// <summary>
    /// A poem's first line labelled 甲 when it has five characters a half-line and 乙 when it has seven: a label
    /// mapping defined only by the examples, over a feature the model must read off the line (its length).
    /// </summary>
    static EvalTask LabelForm(int items, long seed)
    {
        var lines = Poems().Where(p => p.Lines.Length >= 1 && p.Lines[0].Length is 12 or 16)
            .Select(p => (Line: p.Lines[0], p.HeldOut)).ToList();
        return Make("label-form", "in context: 甲 for a five-character line, 乙 for a seven-character one, given only by examples (2 choices)",
            lines.Where(l => l.HeldOut).ToList(), lines.Where(l => !l.HeldOut).ToList(), items, seed,
            (l, _) => new EvalItem($"{l.Line}\n類：", ["甲", "乙"], l.Line.Length == 12 ? 0 : 1));
    }

    /// <summary>
    /// Generative: k example poems of one form (two lines of five-, or of seven-character clauses), each after
    /// <c>&lt;|bos|&gt;</c> as documents are in pretraining, then the boundary of a new poem. The answer is right when
    /// the first line the model writes has the examples' form. Half the queries ask for each form; at k = 0 the prompt
    /// is the boundary alone, the same for every query, so greedy decoding gives every query the same line and scores
    /// at most half — above half, the examples steer what the model writes.
    /// </summary>
    static EvalTask FormSteer(int items, long seed)
    {
        var random = new Random((int)(seed & 0x7fffffff));
        var examples = Poems().Where(p => !p.HeldOut && p.Lines.Length >= 2 && PoemForm.IsRegularQuatrainOrRegulated(p.Lines[..2]))
            .Select(p => new EvalItem(string.Join("\n", p.Lines[..2]), Expected: "", Group: PoemForm.ClauseLength(p.Lines[0]).ToString())).ToList();
        random.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(examples));
        var pool = examples.Where(e => e.Group == "5").Take(64).Concat(examples.Where(e => e.Group == "7").Take(64)).ToList();
        static EvalItem Query(int form) =>
            new("", Expected: form == 5 ? "五言" : "七言", Group: form.ToString()) { Accepts = line => PoemForm.ClauseLength(line) == form };
        var queries = Enumerable.Range(0, items).Select(i => Query(i % 2 == 0 ? 5 : 7)).ToList();
        return new EvalTask("form-steer", "in context, generative: a new poem's first line in the form of k example poems (5 or 7 characters a clause)",
            queries, pool, SpecialTokens.Bos);
    }
}
