using GptSharp.Tokenization;
using GptSharp.Data;

namespace GptSharp.Alignment;

/// <summary>Train and held-out conversations and preference pairs built from the embedded corpora.</summary>
/// <param name="HeldOutDuplicatesDropped">Held-out items whose question also occurs in training (e.g. a shared half-line), removed.</param>
public sealed record AlignmentDatasets(
    IReadOnlyList<IReadOnlyList<ChatMessage>> TrainChats, IReadOnlyList<IReadOnlyList<ChatMessage>> HeldOutChats,
    IReadOnlyList<PreferencePair> TrainPairs, IReadOnlyList<PreferencePair> HeldOutPairs, int HeldOutDuplicatesDropped);

/// <summary>
/// Builds chat and preference data from the Tang poems and State of the Union metadata, deterministically from a
/// seed. Tasks: write a poem for a title (the answer is the real poem), name the author of a poem, give the line that
/// follows a line, and name the president who gave a given year's address; separately, multi-digit arithmetic with and
/// without a calculator (<see cref="ArithmeticChats"/>). A poem (or year) is held out as a whole,
/// so no held-out question has its answer in the training data. Rejected answers are realistic failures: a wrong
/// author, a line with a character dropped, a line repeated, an answer cut short.
/// </summary>
public static class BuiltInDatasets
{
    public static AlignmentDatasets Build(long seed = 1337, double heldOutFraction = 0.05, int maxPoems = 20000)
    {
        var random = new Random((int)(seed & 0x7fffffff));
        var poems = Corpus.Read("tang")
            .Select(d => (Title: d.Field("title") ?? "", Author: d.Field("author") ?? "", Lines: d.Text.Split('\n')))
            .Where(p => p.Title.Length is > 0 and <= 20 && p.Author.Length > 0 && PoemForm.IsRegularQuatrainOrRegulated(p.Lines))
            .ToList();
        // A title shared by several poems would make "who wrote it?" ambiguous and leak across the split: keep unique titles.
        var titleCounts = poems.GroupBy(p => p.Title).ToDictionary(g => g.Key, g => g.Count());
        poems = poems.Where(p => titleCounts[p.Title] == 1).Take(maxPoems).ToList();
        var authors = poems.Select(p => p.Author).Distinct().Order(StringComparer.Ordinal).ToArray();

        var verse = Verse.Uncalibrated();
        var trainChats = new List<IReadOnlyList<ChatMessage>>();
        var heldChats = new List<IReadOnlyList<ChatMessage>>();
        var trainPairs = new List<PreferencePair>();
        var heldPairs = new List<PreferencePair>();
        for (int i = 0; i < poems.Count; i++)
        {
            var (title, author, lines) = poems[i];
            bool heldOut = ShardBuilder.IsValidation(seed, "alignment-tang", i, heldOutFraction);
            var chats = heldOut ? heldChats : trainChats;
            var pairs = heldOut ? heldPairs : trainPairs;
            string poem = string.Join("\n", lines);

            // The poem answers an instruction it meets by construction (its length, acrostic or rhyme), in turn by index.
            var writePrompt = User(VerseInstruction.ForPoem(i % VerseInstruction.Kinds, poem, verse).Prompt(title));
            chats.Add([.. writePrompt, Assistant(poem)]);
            var whoPrompt = User($"《{title}》的作者是誰？");
            chats.Add([.. whoPrompt, Assistant($"{author}。")]);
            int at = random.Next(lines.Length);
            string first = lines[at];
            string half = first[..(first.IndexOf('，') + 1 is > 0 and var comma ? comma : first.Length / 2)];
            string rest = first[half.Length..];
            if (rest.Length > 2)
            {
                var continuePrompt = User($"請接下句：{half}");
                chats.Add([.. continuePrompt, Assistant(rest)]);
                // The next half-line with a character dropped: the line length breaks.
                pairs.Add(new PreferencePair(continuePrompt, rest, rest.Remove(random.Next(rest.Length - 1), 1)));
            }

            // Preference pairs: chosen is the real answer; rejected a realistic failure.
            string wrongAuthor = authors[random.Next(authors.Length)];
            if (wrongAuthor != author) pairs.Add(new PreferencePair(whoPrompt, $"{author}。", $"{wrongAuthor}。"));
            pairs.Add(new PreferencePair(writePrompt, poem, Corrupt(lines, random)));
            // Too long is a failure too: a line of another poem appended (otherwise only short answers are ever rejected,
            // and a reward model learns that longer is better).
            var other = poems[random.Next(poems.Count)].Lines;
            pairs.Add(new PreferencePair(writePrompt, poem, poem + "\n" + other[random.Next(other.Length)]));
        }

        var addresses = Corpus.Read("sotu").Select(d => (Year: d.Field("year") ?? "", President: d.Field("president") ?? "")).Where(a => a.Year.Length == 4).ToList();
        var presidents = addresses.Select(a => a.President).Distinct().Order(StringComparer.Ordinal).ToArray();
        for (int i = 0; i < addresses.Count; i++)
        {
            var (year, president) = addresses[i];
            bool heldOut = ShardBuilder.IsValidation(seed, "alignment-sotu", i, heldOutFraction);
            var prompt = User($"Who gave the State of the Union address in {year}?");
            (heldOut ? heldChats : trainChats).Add([.. prompt, Assistant($"{president}.")]);
            string wrong = presidents[random.Next(presidents.Length)];
            if (wrong != president) (heldOut ? heldPairs : trainPairs).Add(new PreferencePair(prompt, $"{president}.", $"{wrong}."));
        }
        var trainQuestions = trainChats.Select(Question).Concat(trainPairs.Select(p => Question(p.Prompt))).ToHashSet();
        int before = heldChats.Count + heldPairs.Count;
        heldChats.RemoveAll(c => trainQuestions.Contains(Question(c)));
        heldPairs.RemoveAll(p => trainQuestions.Contains(Question(p.Prompt)));
        return new AlignmentDatasets(trainChats, heldChats, trainPairs, heldPairs, before - heldChats.Count - heldPairs.Count);
    }

    /// <summary>
    /// The arithmetic task's conversations (see <see cref="Arithmetic"/>): every training problem worked with the
    /// calculator, every fourth also answered without it (so the model learns to call only where the tool is offered);
    /// 100 held-out problems both ways. Taught as its own fine-tuning stage: mixed into the main SFT data at a third of
    /// the conversations, 600 steps of the speedrun's <c>tiny</c> model never learned to copy the numbers into the call.
    /// </summary>
    public static (List<IReadOnlyList<ChatMessage>> Train, List<IReadOnlyList<ChatMessage>> HeldOut) ArithmeticChats(long seed = 1337, int problems = Arithmetic.TrainingProblems)
    {
        var train = new List<IReadOnlyList<ChatMessage>>();
        var training = Arithmetic.Problems(heldOut: false, problems, seed);
        for (int i = 0; i < training.Count; i++)
        {
            train.Add(Arithmetic.WithTool(training[i]));
            if (i % 16 == 0) train.Add(Arithmetic.WithoutTool(training[i]));
        }
        var heldOut = new List<IReadOnlyList<ChatMessage>>();
        foreach (var problem in Arithmetic.Problems(heldOut: true, 100, seed))
        {
            heldOut.Add(Arithmetic.WithTool(problem));
            heldOut.Add(Arithmetic.WithoutTool(problem));
        }
        return (train, heldOut);
    }

    /// <summary>
    /// The verse task with the rhyme dictionary (<see cref="VerseEnvironment"/>): every poem request of the built-in data
    /// twice — worked with the dictionary (the poem's rhyme looked up, then the poem; poems without a level-tone rhyme
    /// skip this), and answered directly with no tool offered — so a model learns to look up only where the tool is offered.
    /// </summary>
    public static (List<IReadOnlyList<ChatMessage>> Train, List<IReadOnlyList<ChatMessage>> HeldOut) VerseRhymeChats(long seed = 1337)
    {
        var data = Build(seed);
        var dictionary = RhymeDictionary.Embedded();
        var verse = Verse.Uncalibrated();
        List<IReadOnlyList<ChatMessage>> Both(IEnumerable<IReadOnlyList<ChatMessage>> chats)
        {
            var list = new List<IReadOnlyList<ChatMessage>>();
            foreach (var chat in chats.Where(c => c[0].Content.StartsWith("寫一首詩", StringComparison.Ordinal)))
            {
                if (VerseEnvironment.WorkedAnswer(chat[0].Content, chat[1].Content, dictionary, verse) is { } worked) list.Add(worked);
                list.Add(chat);
            }
            return list;
        }
        return (Both(data.TrainChats), Both(data.HeldOutChats));
    }

    /// <summary>Two-step arithmetic worked in <see cref="ArithmeticStepsEnvironment"/>: two calls, then the result.</summary>
    public static (List<IReadOnlyList<ChatMessage>> Train, List<IReadOnlyList<ChatMessage>> HeldOut) ArithmeticStepsChats(long seed = 1337,
        int problems = ArithmeticStepsEnvironment.TrainingProblems) =>
        ([.. ArithmeticStepsEnvironment.Problems(heldOut: false, problems, seed).Select(ArithmeticStepsEnvironment.WorkedAnswer)],
         [.. ArithmeticStepsEnvironment.Problems(heldOut: true, 100, seed).Select(ArithmeticStepsEnvironment.WorkedAnswer)]);

    /// <summary>The user's question of a conversation (its first user message).</summary>
    public static string Question(IReadOnlyList<ChatMessage> chat) => chat.First(m => m.Role == ChatRoles.User).Content;

    static string Corrupt(string[] lines, Random random)
    {
        var copy = (string[])lines.Clone();
        switch (random.Next(3))
        {
            case 0: // a clause loses a character: the line lengths break
                int at = random.Next(copy.Length);
                copy[at] = copy[at].Remove(random.Next(Math.Max(1, copy[at].IndexOf('，'))), 1);
                return string.Join("\n", copy);
            case 1: // a line repeated in place of the next
                int repeat = random.Next(copy.Length - 1);
                copy[repeat + 1] = copy[repeat];
                return string.Join("\n", copy);
            default: // cut short
                return string.Join("\n", copy[..Math.Max(1, copy.Length / 2)]) + "\n" + copy[copy.Length / 2][..3];
        }
    }

    static ChatMessage[] User(string text) => [new ChatMessage(ChatRoles.User, text)];
    static ChatMessage Assistant(string text) => new(ChatRoles.Assistant, text);
}
