using System.Text.Json;
using GptSharp.Alignment;
using GptSharp.Models;
using GptSharp.Tokenization;

namespace GptSharp.Evaluation;

/// <summary>
/// What RL trains on: prompts, the program that scores an answer, and (optionally) held-out prompts on which the same
/// program measures the policy while it trains, to keep the best one.
/// </summary>
/// <param name="HeldOutGold">The program's score of a policy on held-out prompts (null: no selection).</param>
/// <param name="GradedLabeler">A finer-grained check that ranks answers the program scores alike (near misses above
/// nonsense), used to label feedback; null: the program itself.</param>
/// <param name="Tools">Built-in tools offered with every prompt and run in rollouts (comma-separated names, see
/// <see cref="Inference.ToolBox.Named"/>); null: none.</param>
/// <param name="StrictGold">The pass/fail check a policy is finally judged by, when <paramref name="Program"/> is a graded
/// reward (logged beside PPO's learned reward); null: the program itself.</param>
/// <param name="Environment">An environment each rollout's answers act in over several turns (its reward is then the
/// program's, <see cref="Rewards.Episodes"/>); null: one turn.</param>
public sealed record RlTask(string Name, IReadOnlyList<string> Prompts, RewardFunction Program, Func<Gpt, GptTokenizer, double>? HeldOutGold,
    RewardFunction? GradedLabeler = null, string? Tools = null, RewardFunction? StrictGold = null, EnvironmentFactory? Environment = null)
{
    /// <summary>What ranks answers when feedback is collected.</summary>
    public RewardFunction Labeler => GradedLabeler ?? Program;

    /// <summary>The gold check: <see cref="StrictGold"/>, or the program.</summary>
    public RewardFunction Gold => StrictGold ?? Program;
}

/// <summary>The built-in RL tasks and a user's own from a file.</summary>
public static class RlTasks
{
    /// <summary>Held-out titles used to pick the best policy during RL; disjoint from the form score's prompts (they
    /// come from the other end of the held-out list).</summary>
    public const int SelectionPrompts = 128;

    /// <summary>Write a poem for a title; 1 when it has a regular form. Trains on the built-in training titles.</summary>
    public static RlTask Form(long seed = 1337) => new("form", PpoRun.PoemPrompts(seed), Rewards.Form,
        (policy, tokenizer) => FormScore.Measure(policy, tokenizer, FormScore.SelectionPrompts(SelectionPrompts)).Share, Rewards.FormCloseness);

    /// <summary>
    /// Regulated verse (see <see cref="Verse"/>): write a poem for a title and its instruction (a clause length, an
    /// acrostic, a rhyme). GRPO's reward and the feedback labeler are the graded check, the gold and the kept policy's
    /// held-out score the strict one. Trains on the built-in training prompts.
    /// </summary>
    public static RlTask Verse(long seed = 1337)
    {
        var verse = Alignment.Verse.Embedded();
        var selection = FormScore.SelectionPrompts(SelectionPrompts, seed);
        var graded = Rewards.VerseGraded(verse);
        return new RlTask("verse", PpoRun.PoemPrompts(seed), graded, (policy, tokenizer) => VerseScore.Measure(policy, tokenizer, selection, verse).Strict,
            graded, StrictGold: Rewards.VerseStrict(verse));
    }

    /// <summary>
    /// Every built-in task with its check: a poem for a title (regular form), the author of a poem, the next half-line,
    /// the president of a year's address (the expected answer). Prompts are the built-in training questions.
    /// </summary>
    public static RlTask BuiltIn(long seed = 1337)
    {
        var data = BuiltInDatasets.Build(seed);
        var expected = new Dictionary<string, string>(StringComparer.Ordinal);
        var chats = data.TrainChats;
        foreach (var chat in chats)
            if (!IsPoemRequest(chat[0].Content)) expected[chat[0].Content] = chat[1].Content;
        var answers = Rewards.ExpectedAnswers(expected);
        RewardFunction program = completions =>
        {
            var scores = new double[completions.Count];
            var poems = Enumerable.Range(0, completions.Count).Where(i => IsPoemRequest(completions[i].Prompt)).ToList();
            var others = Enumerable.Range(0, completions.Count).Where(i => !IsPoemRequest(completions[i].Prompt)).ToList();
            var poemScores = Rewards.Form([.. poems.Select(i => completions[i])]);
            var otherScores = answers([.. others.Select(i => completions[i])]);
            for (int j = 0; j < poems.Count; j++) scores[poems[j]] = poemScores[j];
            for (int j = 0; j < others.Count; j++) scores[others[j]] = otherScores[j];
            return scores;
        };
        return new RlTask("builtin", [.. chats.Select(c => c[0].Content).Distinct()], program, null);
    }

    /// <summary>Held-out arithmetic problems used to pick the best policy; the arithmetic score uses the first
    /// <see cref="ScoreProblems"/> of the same list, selection the next ones.</summary>
    public const int ScoreProblems = 200;

    /// <summary>Multi-digit arithmetic with the calculator offered and run (see <see cref="Alignment.Arithmetic"/>): 1 for
    /// the exact result in the final turn. Trains on the arithmetic SFT data's training problems.</summary>
    public static RlTask Arithmetic(long seed = 1337)
    {
        var problems = Alignment.Arithmetic.Problems(heldOut: false, Alignment.Arithmetic.TrainingProblems, seed);
        var selection = Alignment.Arithmetic.Problems(heldOut: true, ScoreProblems + SelectionPrompts, seed).Skip(ScoreProblems).ToList();
        return new RlTask("arithmetic", [.. problems.Select(p => p.Question)], Alignment.Arithmetic.Reward(problems),
            (policy, tokenizer) => ArithmeticScore.Measure(policy, tokenizer, selection, withTool: true).Accuracy, Tools: Alignment.Arithmetic.ToolName);
    }

    /// <summary>The verse task with the rhyme dictionary at hand (<see cref="VerseEnvironment"/>): the episode's reward is
    /// the graded check of its final poem, the gold and the held-out selection the strict one, measured with the dictionary.</summary>
    public static RlTask VerseRhyme(long seed = 1337)
    {
        var verse = Alignment.Verse.Embedded();
        var selection = FormScore.SelectionPrompts(SelectionPrompts, seed);
        var environment = VerseEnvironment.Factory(verse);
        return new RlTask("verse-rhyme", PpoRun.PoemPrompts(seed), Rewards.Episodes,
            (policy, tokenizer) => VerseScore.Measure(policy, tokenizer, selection, verse, environment: environment).Strict,
            Rewards.VerseGraded(verse), StrictGold: Rewards.VerseStrict(verse), Environment: environment);
    }

    /// <summary>Two-step arithmetic, <c>(a × b) ± c</c>, in <see cref="ArithmeticStepsEnvironment"/> (a calculator of one
    /// operation a call): 1 for the exact result in the final turn. Selection measures held-out problems greedily.</summary>
    public static RlTask ArithmeticSteps(long seed = 1337)
    {
        var problems = ArithmeticStepsEnvironment.Problems(heldOut: false, ArithmeticStepsEnvironment.TrainingProblems, seed);
        var selection = ArithmeticStepsEnvironment.Problems(heldOut: true, ScoreProblems + SelectionPrompts, seed).Skip(ScoreProblems).ToList();
        var environment = ArithmeticStepsEnvironment.Factory([.. problems, .. selection]);
        return new RlTask(ArithmeticStepsEnvironment.Name, [.. problems.Select(p => p.Question)], Rewards.Episodes,
            (policy, tokenizer) => EnvironmentScore.Measure(policy, tokenizer, [.. selection.Select(p => p.Question)], environment).MeanReward,
            Environment: environment);
    }

    static bool IsPoemRequest(string prompt) => prompt.StartsWith("寫一首詩", StringComparison.Ordinal);

    /// <summary>A task by name: <c>form</c>, <c>verse</c>, <c>verse-rhyme</c>, <c>builtin</c>, <c>arithmetic</c>,
    /// <c>calculator-steps</c>, or a JSONL file (see <see cref="FromFile"/>).</summary>
    public static RlTask Named(string name, long seed = 1337) => name switch
    {
        "form" => Form(seed),
        "verse" => Verse(seed),
        "verse-rhyme" => VerseRhyme(seed),
        ArithmeticStepsEnvironment.Name => ArithmeticSteps(seed),
        "arithmetic" => Arithmetic(seed),
        "builtin" => BuiltIn(seed),
        _ => FromFile(name),
    };

    /// <summary>
    /// A user's task from JSONL: one object per line with <c>prompt</c> and <c>answer</c> (strings); the reward is 1
    /// when the model's answer gives the expected one (see <see cref="Rewards.GivesAnswer"/>). Errors name the file,
    /// the line and the field.
    /// </summary>
    public static RlTask FromFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such task file (JSONL with \"prompt\" and \"answer\" on each line).", path);
        var expected = new Dictionary<string, string>(StringComparer.Ordinal);
        int number = 0;
        foreach (string line in File.ReadLines(path))
        {
            number++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonElement item;
            try { item = JsonDocument.Parse(line).RootElement; }
            catch (JsonException e) { throw new InvalidDataException($"{path}:{number}: invalid JSON: {e.Message}", e); }
            string Field(string name) => item.ValueKind == JsonValueKind.Object && item.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String
                ? value.GetString()! : throw new InvalidDataException($"{path}:{number}: expected a string field \"{name}\".");
            string prompt = Field("prompt"), answer = Field("answer");
            if (prompt.Length == 0) throw new InvalidDataException($"{path}:{number}: \"prompt\" is empty.");
            if (expected.TryGetValue(prompt, out string? earlier) && earlier != answer)
                throw new InvalidDataException($"{path}:{number}: the prompt appears earlier with another answer (\"{earlier}\").");
            expected[prompt] = answer;
        }
        if (expected.Count == 0) throw new InvalidDataException($"{path}: no prompts.");
        return new RlTask(Path.GetFileNameWithoutExtension(path), [.. expected.Keys], Rewards.ExpectedAnswers(expected), null);
    }
}
