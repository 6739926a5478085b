using System.Globalization;
using System.Text.RegularExpressions;
using GptSharp.Data;

namespace GptSharp.Alignment;

/// <summary>The rules of regulated verse (近體詩) the checker scores one by one.</summary>
public enum VerseRule
{
    /// <summary>Four or eight clauses of five or seven characters (the earlier form check).</summary>
    Form,
    /// <summary>The even clauses end in one rhyme group.</summary>
    Rhyme,
    /// <summary>… and on a level tone.</summary>
    LevelRhyme,
    /// <summary>Within each clause the 2nd, 4th (and 6th) characters alternate level and oblique (二四六分明).</summary>
    Alternation,
    /// <summary>Within each couplet the key characters of the second clause oppose the first's (對).</summary>
    Opposition,
    /// <summary>Between couplets the key characters of a couplet's first clause follow the clause before (粘).</summary>
    Adhesion,
    /// <summary>No character used twice.</summary>
    NoRepeat,
    /// <summary>The clauses have the length the prompt asked for (五言, 七言).</summary>
    AskedLength,
    /// <summary>The clauses begin with the prompt's acrostic characters (藏頭), in order.</summary>
    Acrostic,
    /// <summary>The rhyme is the group of the prompt's character (用「X」韻).</summary>
    AskedRhyme,
}

/// <summary>
/// What a prompt asks of a poem besides its title: five or seven characters a clause (<c>五言</c>/<c>七言</c>), an acrostic
/// (<c>藏頭「春江花月」</c>), a rhyme (<c>用「東」韻</c>). Null fields ask nothing.
/// </summary>
public sealed record VerseInstruction(int? ClauseLength = null, string? Acrostic = null, string? Rhyme = null)
{
    public static VerseInstruction None { get; } = new();

    /// <summary>The instruction a prompt's text carries; a malformed one is an <see cref="ArgumentException"/> saying what is wrong.</summary>
    public static VerseInstruction FromPrompt(string prompt)
    {
        prompt = prompt[(prompt.LastIndexOf('》') + 1)..];   // a title may hold any words; instructions follow it
        int? length = prompt.Contains("五言") ? 5 : prompt.Contains("七言") ? 7 : null;
        string? acrostic = null, rhyme = null;
        if (Regex.Match(prompt, "藏頭「([^」]*)」") is { Success: true } a)
        {
            acrostic = a.Groups[1].Value;
            var characters = Elements(acrostic);
            if (characters.Count is not (4 or 8) || characters.Any(c => !Verse.IsHan(c)))
                throw new ArgumentException($"The acrostic 「{acrostic}」 must be 4 or 8 CJK characters, one to begin each clause of a quatrain or an eight-clause poem.");
        }
        if (Regex.Match(prompt, "用「([^」]*)」韻") is { Success: true } r)
        {
            rhyme = r.Groups[1].Value;
            if (Elements(rhyme) is not [var only] || !Verse.IsHan(only))
                throw new ArgumentException($"The rhyme 「{rhyme}」 must be one CJK character.");
        }
        return new VerseInstruction(length, acrostic, rhyme);
    }

    /// <summary>The prompt text for this instruction and a title, as the SFT data and the held-out prompts write it
    /// (every kind begins 「寫一首詩，題為《…》」).</summary>
    public string Prompt(string title)
    {
        string extra = (ClauseLength switch { 5 => "，五言", 7 => "，七言", _ => "" }) + (Acrostic is null ? "" : $"，藏頭「{Acrostic}」")
                       + (Rhyme is null ? "" : $"，用「{Rhyme}」韻");
        return $"寫一首詩，題為《{title}》{extra}。";
    }

    /// <summary>The kinds of instruction a prompt carries, taken in turn by the built-in poems.</summary>
    public const int Kinds = 4;

    /// <summary>
    /// Instruction <paramref name="kind"/> (0 title only, 1 the clause length, 2 an acrostic, 3 a rhyme) that a real
    /// poem meets by construction: its own length, its clauses' first characters, the rhyme of its second clause (only
    /// when the poem rhymes under <paramref name="verse"/>'s standard; otherwise the title alone).
    /// </summary>
    public static VerseInstruction ForPoem(int kind, string poem, Verse verse)
    {
        var clauses = Verse.Clauses(poem);
        return kind switch
        {
            1 => new VerseInstruction(ClauseLength: clauses[0].Count),
            2 when clauses.All(c => Verse.IsHan(c[0])) => new VerseInstruction(Acrostic: string.Concat(clauses.Select(c => c[0]))),
            3 when verse.Check(poem).Passed(VerseRule.LevelRhyme) == true => new VerseInstruction(Rhyme: clauses[1][^1]),
            _ => None,
        };
    }

    internal static List<string> Elements(string text)
    {
        var list = new List<string>();
        var e = StringInfo.GetTextElementEnumerator(text);
        while (e.MoveNext()) list.Add((string)e.Current);
        return list;
    }
}

/// <summary>One rule's verdict: passed, failed, or not applicable (<see cref="Passed"/> null), and why in a few words.</summary>
public sealed record RuleVerdict(VerseRule Rule, bool? Passed, string Detail)
{
    /// <summary>The share of the rule met, for the graded score: 1 or 0 by <see cref="Passed"/>, except where a rule is
    /// met part by part (an acrostic: the share of clauses that begin right; no repeat: 1 / (1 + extra occurrences)), so
    /// shaping sees a step towards it.</summary>
    public double Credit { get; init; } = Passed == true ? 1 : 0;
}

/// <summary>
/// A poem's verdicts: each rule, <see cref="Strict"/> (every required rule passed) and <see cref="Graded"/> (the weighted
/// share of the applicable rules passed, for reward shaping), and the characters the phonology table lacks.
/// </summary>
public sealed record VerseVerdict(IReadOnlyList<RuleVerdict> Rules, bool Strict, double Graded, IReadOnlyList<string> Unknown)
{
    public bool? Passed(VerseRule rule) => Rules.First(r => r.Rule == rule).Passed;
}

/// <summary>
/// Checks poems against the rules of regulated verse under the modern standard (tone classes from Mandarin tones,
/// rhyme groups of 中華新韻; a polyphonic character meets a rule if some reading does). One place used by rewards,
/// scoring, feedback labelers and people (<c>gptsharp verse check</c>). <see cref="VerseVerdict.Strict"/> requires form, a level-tone
/// rhyme, whatever the prompt asked, and each tonal rule that at least half of the embedded Tang poems of the poem's
/// shape pass (<see cref="RequiredTonalRules"/>): a rule the poets themselves break as often as not is reported, not
/// required.
/// </summary>
public sealed class Verse
{
    readonly Phonology _phonology;
    readonly IReadOnlyDictionary<(int Length, int Clauses), IReadOnlySet<VerseRule>> _required;

    /// <param name="requiredTonalRules">Per shape (characters a clause, clauses), the tonal rules strict requires; see <see cref="Calibrate"/>.</param>
    public Verse(Phonology phonology, IReadOnlyDictionary<(int Length, int Clauses), IReadOnlySet<VerseRule>> requiredTonalRules)
    {
        _phonology = phonology;
        _required = requiredTonalRules;
    }

    /// <summary>The checker with the shipped phonology table, calibrated on the embedded Tang poems (built once per
    /// process: both are read-only data, and the calibration reads every poem).</summary>
    public static Verse Embedded() => EmbeddedChecker.Value;

    static readonly Lazy<Verse> EmbeddedChecker = new(() =>
    {
        var phonology = Phonology.Embedded();
        return new Verse(phonology, Calibrate(phonology, Corpus.Read("tang").Select(d => d.Text)).Required);
    });

    /// <summary>The checker with the shipped phonology and no tonal rule required (cheap: for building data).</summary>
    public static Verse Uncalibrated() => new(Phonology.Embedded(), new Dictionary<(int, int), IReadOnlySet<VerseRule>>());

    /// <summary>Checks an answer against the instructions of the prompt it answers.</summary>
    public VerseVerdict CheckAnswer(string prompt, string answer) => Check(answer, VerseInstruction.FromPrompt(prompt));

    /// <summary>The tonal rules strict requires of each shape.</summary>
    public IReadOnlyDictionary<(int Length, int Clauses), IReadOnlySet<VerseRule>> RequiredTonalRules => _required;

    /// <summary>Rules that tones decide, and no repeated character, each required of a shape only when most Tang poems
    /// of that shape keep it. Repetition stays among them although no tone decides it: without it, GRPO against the
    /// graded reward learnt to pass every tonal rule and rhyme with two characters (「人人路路人」).</summary>
    public static IReadOnlyList<VerseRule> TonalRules { get; } = [VerseRule.Alternation, VerseRule.Opposition, VerseRule.Adhesion, VerseRule.NoRepeat];

    static readonly Dictionary<VerseRule, double> Weights = new()
    {
        [VerseRule.Form] = 3, [VerseRule.Rhyme] = 3, [VerseRule.LevelRhyme] = 2, [VerseRule.Alternation] = 1, [VerseRule.Opposition] = 1,
        [VerseRule.Adhesion] = 1, [VerseRule.NoRepeat] = 3, [VerseRule.AskedLength] = 2, [VerseRule.Acrostic] = 2, [VerseRule.AskedRhyme] = 2,
    };

    /// <summary>Whether a text element is a CJK ideograph (the unified block, extension A, compatibility ideographs, or the supplementary planes' extensions).</summary>
    internal static bool IsHan(string element) => element.Length > 0 && element[0] switch
    {
        >= '\u3400' and <= '\u4DBF' or >= '\u4E00' and <= '\u9FFF' or >= '\uF900' and <= '\uFAFF' => true,
        >= '\uD840' and <= '\uD8BF' => element.Length == 2,   // U+20000–U+3FFFF
        _ => false,
    };

    /// <summary>The clauses of a poem: its text cut at the clause marks (，。！？；、 and line breaks), each a list of its
    /// CJK characters (Latin text, white space and other punctuation left out), empty clauses dropped.</summary>
    public static List<List<string>> Clauses(string poem)
    {
        var clauses = new List<List<string>>();
        var current = new List<string>();
        foreach (string element in VerseInstruction.Elements(poem))
        {
            if (element is "，" or "。" or "！" or "？" or "；" or "、" or "\n" or "\r\n" or "," or "." or "!" or "?" or ";")
            {
                if (current.Count > 0) clauses.Add(current);
                current = [];
            }
            else if (IsHan(element) || element[0] > '\u2E7F' && !char.IsWhiteSpace(element[0]) && !char.IsPunctuation(element[0])) current.Add(element);   // a CJK placeholder such as 〇 counts
        }
        if (current.Count > 0) clauses.Add(current);
        return clauses;
    }

    /// <summary>The shape of a poem of regular form: characters a clause and clauses; null for any other poem.</summary>
    public static (int Length, int Clauses)? Shape(string poem)
    {
        var lines = poem.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        return PoemForm.IsRegularQuatrainOrRegulated(lines) ? (PoemForm.ClauseLength(lines[0])!.Value, lines.Length * 2) : null;
    }

    /// <summary>Checks a poem (lines of two clauses, 「…，…。」) against every rule and what <paramref name="instruction"/> asks.</summary>
    public VerseVerdict Check(string poem, VerseInstruction? instruction = null)
    {
        instruction ??= VerseInstruction.None;
        var shape = Shape(poem);
        bool form = shape is not null;
        var clauses = Clauses(poem);
        var unknown = clauses.SelectMany(c => c).Where(c => !_phonology.Knows(c)).Distinct().ToList();
        var verdicts = new List<RuleVerdict>
        {
            new(VerseRule.Form, form, form ? $"{shape!.Value.Clauses} clauses of {shape.Value.Length}" : clauses.Count == 0 ? "no CJK text" : "not 4 or 8 clauses of 5 or 7 characters, two to a line"),
        };
        // The other rules read clauses: they apply to any poem of even clauses, and say "not applicable" without text.
        var even = clauses.Where((_, i) => i % 2 == 1).Select(c => c[^1]).ToList();
        var rhymes = even.Count == 0 ? null : CommonGroups(even, levelOnly: false);
        var levelRhymes = even.Count == 0 ? null : CommonGroups(even, levelOnly: true);
        verdicts.Add(even.Count < 2 ? new(VerseRule.Rhyme, null, "fewer than two rhyming clauses")
            : new(VerseRule.Rhyme, rhymes!.Count > 0, rhymes!.Count > 0 ? $"{string.Concat(even)} share {Name(rhymes)}" : $"{string.Concat(even)} share no rhyme group"));
        verdicts.Add(even.Count < 2 ? new(VerseRule.LevelRhyme, null, "fewer than two rhyming clauses")
            : new(VerseRule.LevelRhyme, levelRhymes!.Count > 0, levelRhymes!.Count > 0 ? "on a level tone" : rhymes!.Count > 0 ? "the rhyme is not on a level tone" : "no rhyme"));
        verdicts.Add(Alternation(clauses));
        verdicts.Add(Opposition(clauses));
        verdicts.Add(Adhesion(clauses));
        var repeated = clauses.SelectMany(c => c).GroupBy(c => c).Where(g => g.Count() > 1).ToList();
        // Credit falls with each extra occurrence, so shaping sees three repeats become one before one becomes none.
        int extra = repeated.Sum(g => g.Count() - 1);
        verdicts.Add(clauses.Count == 0 ? new(VerseRule.NoRepeat, null, "no CJK text")
            : new(VerseRule.NoRepeat, repeated.Count == 0, repeated.Count == 0 ? "every character once" : $"repeats {string.Concat(repeated.Select(g => g.Key))}") { Credit = 1.0 / (1 + extra) });
        verdicts.Add(instruction.ClauseLength is not { } asked ? new(VerseRule.AskedLength, null, "not asked")
            : new(VerseRule.AskedLength, clauses.Count > 0 && clauses.All(c => c.Count == asked), $"{asked} characters a clause asked"));
        if (instruction.Acrostic is not { } acrostic) verdicts.Add(new(VerseRule.Acrostic, null, "not asked"));
        else
        {
            var heads = VerseInstruction.Elements(acrostic);
            int right = clauses.Take(heads.Count).Where((c, i) => c[0] == heads[i]).Count();
            bool ok = clauses.Count == heads.Count && right == heads.Count;
            double credit = (double)right / Math.Max(heads.Count, clauses.Count);
            verdicts.Add(new(VerseRule.Acrostic, ok, ok ? $"clauses begin 「{acrostic}」" : $"clauses begin 「{string.Concat(clauses.Select(c => c[0]))}」, not 「{acrostic}」") { Credit = credit });
        }
        if (instruction.Rhyme is not { } wanted) verdicts.Add(new(VerseRule.AskedRhyme, null, "not asked"));
        else
        {
            var groups = _phonology.Of(wanted).Select(r => r.Group).OfType<RhymeGroup>().ToHashSet();
            bool ok = rhymes is { Count: > 0 } && rhymes.Overlaps(groups);
            verdicts.Add(new(VerseRule.AskedRhyme, ok, groups.Count == 0 ? $"「{wanted}」 has no known rhyme group" : ok ? $"rhymes in {Name(groups)}" : $"「{wanted}」 is {Name(groups)}"));
        }

        var required = new HashSet<VerseRule> { VerseRule.Form, VerseRule.Rhyme, VerseRule.LevelRhyme };
        if (shape is { } known && _required.TryGetValue(known, out var tonal)) required.UnionWith(tonal);
        bool strict = verdicts.All(v => required.Contains(v.Rule) ? v.Passed == true : !IsInstruction(v.Rule) || v.Passed != false);
        var applicable = verdicts.Where(v => v.Passed is not null).ToList();
        double graded = applicable.Count == 0 ? 0 : applicable.Sum(v => v.Credit * Weights[v.Rule]) / applicable.Sum(v => Weights[v.Rule]);
        if (!form) graded *= 0.5;   // whatever else it gets right, a poem of the wrong form is worth at most half
        return new VerseVerdict(verdicts, strict, graded, unknown);
    }

    static bool IsInstruction(VerseRule rule) => rule is VerseRule.AskedLength or VerseRule.Acrostic or VerseRule.AskedRhyme;

    /// <summary>The rhyme groups every character can be read in (on a level tone only, when asked).</summary>
    HashSet<RhymeGroup> CommonGroups(IEnumerable<string> characters, bool levelOnly)
    {
        HashSet<RhymeGroup>? common = null;
        foreach (string character in characters)
        {
            var groups = _phonology.Of(character).Where(r => !levelOnly || r.Classes.Contains(ToneClass.Level)).Select(r => r.Group).OfType<RhymeGroup>().ToHashSet();
            if (common is null) common = groups; else common.IntersectWith(groups);
        }
        return common ?? [];
    }

    static string Name(IEnumerable<RhymeGroup> groups) => string.Join("/", groups.Select(g => g.ToString().ToLowerInvariant())) + " rhyme group";

    /// <summary>The tone classes a character can take (both when the table lacks it: an unknown character constrains nothing).</summary>
    HashSet<ToneClass> ClassesOf(string character)
    {
        var classes = _phonology.Of(character).SelectMany(r => r.Classes).ToHashSet();
        return classes.Count == 0 ? [ToneClass.Level, ToneClass.Oblique] : classes;
    }

    /// <summary>The key positions of a clause (0-based 1, 3, 5: the 2nd, 4th and 6th characters) that it has.</summary>
    static int[] KeyPositions(int length) => length >= 7 ? [1, 3, 5] : length >= 5 ? [1, 3] : length >= 2 ? [1] : [];

    RuleVerdict Alternation(List<List<string>> clauses)
    {
        if (clauses.Count == 0) return new(VerseRule.Alternation, null, "no CJK text");
        foreach (var (clause, i) in clauses.Select((c, i) => (c, i)))
        {
            var keys = KeyPositions(clause.Count).Select(p => ClassesOf(clause[p])).ToList();
            if (!CanAlternate(keys)) return new(VerseRule.Alternation, false, $"clause {i + 1}: the 2nd/4th/6th characters {string.Concat(KeyPositions(clause.Count).Select(p => clause[p]))} do not alternate");
        }
        return new(VerseRule.Alternation, true, "2nd/4th/6th characters alternate in every clause");
    }

    /// <summary>Whether some choice of readings makes each key position's class differ from the one before.</summary>
    static bool CanAlternate(List<HashSet<ToneClass>> keys)
    {
        foreach (var start in new[] { ToneClass.Level, ToneClass.Oblique })
        {
            var expected = start;
            bool ok = true;
            foreach (var classes in keys)
            {
                if (!classes.Contains(expected)) { ok = false; break; }
                expected = expected == ToneClass.Level ? ToneClass.Oblique : ToneClass.Level;
            }
            if (ok) return true;
        }
        return false;
    }

    RuleVerdict Opposition(List<List<string>> clauses)
    {
        if (clauses.Count < 2) return new(VerseRule.Opposition, null, "no couplet");
        for (int i = 0; i + 1 < clauses.Count; i += 2)
        {
            var (first, second) = (clauses[i], clauses[i + 1]);
            int at = 1;   // the 2nd character decides (一三五不論，二四六分明); the others follow from alternation
            if (first.Count <= at || second.Count <= at) return new(VerseRule.Opposition, false, $"couplet {i / 2 + 1}: a clause too short");
            if (!CanDiffer(ClassesOf(first[at]), ClassesOf(second[at])))
                return new(VerseRule.Opposition, false, $"couplet {i / 2 + 1}: {first[at]} and {second[at]} are both {Single(ClassesOf(first[at]))}");
        }
        return new(VerseRule.Opposition, true, "each couplet's 2nd characters oppose");
    }

    RuleVerdict Adhesion(List<List<string>> clauses)
    {
        if (clauses.Count < 4) return new(VerseRule.Adhesion, null, "one couplet");
        for (int i = 2; i < clauses.Count; i += 2)
        {
            var (before, first) = (clauses[i - 1], clauses[i]);
            int at = 1;
            if (before.Count <= at || first.Count <= at) return new(VerseRule.Adhesion, false, $"clause {i + 1}: too short");
            if (!ClassesOf(before[at]).Overlaps(ClassesOf(first[at])))
                return new(VerseRule.Adhesion, false, $"clause {i + 1}: {first[at]} does not follow {before[at]} (粘)");
        }
        return new(VerseRule.Adhesion, true, "each couplet's first clause follows the clause before");
    }

    static bool CanDiffer(HashSet<ToneClass> a, HashSet<ToneClass> b) => a.Any(x => b.Any(y => x != y));

    static string Single(HashSet<ToneClass> classes) => classes.Count == 1 && classes.Contains(ToneClass.Level) ? "level" : "oblique";

    /// <summary>
    /// The share of poems of each shape (characters a clause, clauses) that pass each rule, and so which tonal rules strict
    /// requires of the shape: those that at least half of the poems pass.
    /// </summary>
    public static VerseCalibration Calibrate(Phonology phonology, IEnumerable<string> poems)
    {
        var probe = new Verse(phonology, new Dictionary<(int, int), IReadOnlySet<VerseRule>>());
        var verdicts = new List<((int, int) Shape, VerseVerdict Verdict, string Poem)>();
        foreach (string poem in poems)
            if (Shape(poem) is { } shape) verdicts.Add((shape, probe.Check(poem), poem));
        var counts = verdicts.GroupBy(v => v.Shape).ToDictionary(g => g.Key, g => g.Count());
        var rates = verdicts.GroupBy(v => v.Shape).ToDictionary(g => g.Key,
            g => (IReadOnlyDictionary<VerseRule, double>)Enum.GetValues<VerseRule>().ToDictionary(r => r, r => (double)g.Count(v => v.Verdict.Passed(r) == true) / g.Count()));
        var required = rates.ToDictionary(r => r.Key, r => (IReadOnlySet<VerseRule>)TonalRules.Where(rule => r.Value[rule] >= 0.5).ToHashSet());
        var calibrated = new Verse(phonology, required);
        var strict = verdicts.GroupBy(v => v.Shape).ToDictionary(g => g.Key, g => (double)g.Count(v => calibrated.Check(v.Poem).Strict) / g.Count());
        return new VerseCalibration(required, rates, counts, strict);
    }
}

/// <summary>What the poets do: per shape, how many poems and the share passing each rule, and the tonal rules strict requires.</summary>
public sealed record VerseCalibration(
    IReadOnlyDictionary<(int Length, int Clauses), IReadOnlySet<VerseRule>> Required,
    IReadOnlyDictionary<(int Length, int Clauses), IReadOnlyDictionary<VerseRule, double>> Rates,
    IReadOnlyDictionary<(int Length, int Clauses), int> Counts,
    IReadOnlyDictionary<(int Length, int Clauses), double> StrictRates);
