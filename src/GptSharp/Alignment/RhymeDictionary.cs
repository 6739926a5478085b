using GptSharp.Data;
using GptSharp.Inference;
using GptSharp.Tokenization;

namespace GptSharp.Alignment;

/// <summary>
/// A rhyme dictionary a poet looks things up in: asked about one character, it says its tone class and rhyme group
/// under the modern standard (from the phonology table) and lists the level-tone characters of that group that Tang
/// poets rhymed on most (<c>平聲庚韻：中風空同紅…</c>). A tool for the verse task (<see cref="VerseEnvironment"/>).
/// </summary>
public sealed class RhymeDictionary
{
    /// <summary>The tool's name as the model writes it: 韻, one token of a Chinese vocabulary (a tiny model trained on
    /// poems misspelt the English name's word pieces).</summary>
    public const string ToolName = "韻";
    /// <summary>Rhyme characters listed per answer: a model's context is small.</summary>
    public const int Listed = 12;

    static readonly string[] GroupNames = ["麻", "波", "皆", "開", "微", "豪", "尤", "寒", "文", "唐", "庚", "齊", "支", "姑"];

    readonly Phonology _phonology;
    readonly IReadOnlyDictionary<RhymeGroup, IReadOnlyList<string>> _common;

    /// <param name="poems">Poems whose even clauses' last characters rank each group's characters (most rhymed on first).</param>
    public RhymeDictionary(Phonology phonology, IEnumerable<string> poems)
    {
        _phonology = phonology;
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string poem in poems)
        {
            var clauses = Verse.Clauses(poem);
            for (int i = 1; i < clauses.Count; i += 2)
                counts[clauses[i][^1]] = counts.GetValueOrDefault(clauses[i][^1]) + 1;
        }
        _common = Enum.GetValues<RhymeGroup>().ToDictionary(g => g, g => (IReadOnlyList<string>)[.. counts
            .Where(c => phonology.Of(c.Key).Any(r => r.Group == g && r.Classes.Contains(ToneClass.Level)))
            .OrderByDescending(c => c.Value).ThenBy(c => c.Key, StringComparer.Ordinal).Select(c => c.Key)]);
    }

    /// <summary>The dictionary over the shipped phonology table, ranked by the embedded Tang poems (built once per process).</summary>
    public static RhymeDictionary Embedded() => EmbeddedDictionary.Value;

    static readonly Lazy<RhymeDictionary> EmbeddedDictionary = new(() => new RhymeDictionary(Phonology.Embedded(), Corpus.Read("tang").Select(d => d.Text)));

    /// <summary>The group's level-tone characters, most rhymed on first.</summary>
    public IReadOnlyList<string> Common(RhymeGroup group) => _common[group];

    /// <summary>What the dictionary answers about <paramref name="character"/>: every tone class and group it reads in,
    /// then the commonest level-tone rhymes of its first level-tone group (other than itself); an error text for
    /// anything but one known character.</summary>
    public ToolResult Lookup(string? character)
    {
        character = character?.Trim().Trim('「', '」', '"', '\'') ?? "";
        if (VerseInstruction.Elements(character) is not [var one] || !Verse.IsHan(one))
            return new(false, "error: ask about one CJK character");
        var readings = _phonology.Of(one);
        if (readings.Count == 0) return new(false, $"error: 「{one}」 is not in the table");
        var kinds = readings.Where(r => r.Group is not null)
            .SelectMany(r => r.Classes.Select(c => (Class: c, Group: r.Group!.Value))).Distinct().ToList();
        if (kinds.Count == 0) return new(false, $"error: 「{one}」 is in no rhyme group");
        string described = string.Join("、", kinds.Select(k => (k.Class == ToneClass.Level ? "平聲" : "仄聲") + GroupNames[(int)k.Group] + "韻"));
        int level = kinds.FindIndex(k => k.Class == ToneClass.Level);
        if (level < 0) return new(true, described);
        return new(true, described + "：" + string.Concat(_common[kinds[level].Group].Where(c => c != one).Take(Listed)));
    }

    /// <summary>The dictionary as a tool a model calls by name.</summary>
    public Tool Tool => new(ToolName, "rhyme dictionary: one character → its tone and rhyme group, and level-tone rhymes", Lookup);
}

/// <summary>
/// The verse task with the rhyme dictionary at hand: the model may look characters up (<c>韻 東</c>) as often as the
/// turn limit allows; a turn without a call is its poem, which ends the episode with the verse task's reward for it.
/// </summary>
public sealed class VerseEnvironment(RhymeDictionary dictionary, RewardFunction poemReward) : IEnvironment
{
    public const string Name = "rhyme";
    string _prompt = "";

    /// <summary>The environment for GRPO and scores: the embedded dictionary and the verse task's graded reward.</summary>
    public static EnvironmentFactory Factory(Verse verse)
    {
        var dictionary = RhymeDictionary.Embedded();
        var reward = Rewards.VerseGraded(verse);
        return new EnvironmentFactory(Name, () => new VerseEnvironment(dictionary, reward));
    }

    /// <summary>The tool as the system turn offers it.</summary>
    public static ToolBox Tools(RhymeDictionary dictionary) => new([dictionary.Tool]);

    public IReadOnlyList<ChatMessage> Reset(string prompt)
    {
        _prompt = prompt;
        return Tools(dictionary).Offer([new ChatMessage(ChatRoles.User, prompt)]);
    }

    public EnvironmentStep Step(ChatMessage turn)
    {
        if (turn.ToolCall is { } call)
            return EnvironmentStep.Reply(call.Name == RhymeDictionary.ToolName ? dictionary.Lookup(call.Arguments).Text
                : $"error: no tool named '{call.Name}'; the tools are: {RhymeDictionary.ToolName}");
        return EnvironmentStep.Finish(poemReward([new Completion(_prompt, turn.Content, [], [], false)])[0]);
    }

    /// <summary>A worked answer with the dictionary: the poem's rhyme looked up first (the character that ends its second
    /// clause), then the poem. Null for a poem that does not rhyme on a level tone.</summary>
    public static IReadOnlyList<ChatMessage>? WorkedAnswer(string prompt, string poem, RhymeDictionary dictionary, Verse verse)
    {
        if (verse.Check(poem).Passed(VerseRule.LevelRhyme) != true) return null;
        string rhyme = Verse.Clauses(poem)[1][^1];
        return Tools(dictionary).Offer(
        [
            new ChatMessage(ChatRoles.User, prompt),
            new ChatMessage(ChatRoles.Assistant, "", new ToolCall(RhymeDictionary.ToolName, rhyme)),
            new ChatMessage(ChatRoles.Tool, dictionary.Lookup(rhyme).Text),
            new ChatMessage(ChatRoles.Assistant, poem),
        ]);
    }
}
