using System.Globalization;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Tokenization;

namespace GptSharp.Alignment;

/// <summary>One multi-digit problem, <c>a op b</c> with op one of + − ×, and its exact answer.</summary>
public sealed record ArithmeticProblem(long A, char Operator, long B)
{
    public string Expression => $"{A} {Operator} {B}";
    public string Question => $"What is {Expression}?";
    public long Value => Operator switch { '+' => A + B, '-' => A - B, '×' => A * B, _ => throw new InvalidOperationException($"Unknown operator '{Operator}'.") };
    public string Answer => Value.ToString(CultureInfo.InvariantCulture);
}

/// <summary>
/// The built-in arithmetic task (nanochat's calculator, done with a sandbox): questions like "What is 482 × 37?"
/// over operands of 2–3 digits (2 for ×). SFT data shows both ways to answer: with the calculator offered (a system
/// turn names it), the assistant calls it and states the result (<c>482 × 37 = 17834</c>); without, the assistant
/// answers from what it has learned. The exact-answer accuracy of the two ways is what a tool is worth to a model.
/// </summary>
public static class Arithmetic
{
    public const string ToolName = "calculator";

    /// <summary>Problems of one split, the same for a seed on any machine; train and held-out never share a question.</summary>
    public static IReadOnlyList<ArithmeticProblem> Problems(bool heldOut, int count, long seed = 1337) =>
        ProblemSplits.Take(Draw, p => p.Question, seed, (17, 91), heldOut, count, TrainingProblems);

    /// <summary>How many training problems the arithmetic SFT data draws from (held-out problems avoid all of them).</summary>
    public const int TrainingProblems = 20000;

    static ArithmeticProblem Draw(Random random)
    {
        char op = "+-×"[random.Next(3)];
        int maxDigits = op == '×' ? 2 : 3;
        long Operand() { int digits = random.Next(2, maxDigits + 1); return random.NextInt64((long)Math.Pow(10, digits - 1), (long)Math.Pow(10, digits)); }
        return new ArithmeticProblem(Operand(), op, Operand());
    }

    /// <summary>The calculator alone, as the task offers it.</summary>
    public static ToolBox Tools { get; } = new([ToolBox.Calculator]);

    /// <summary>A worked answer with the tool: the call, the calculator's turn, the result.</summary>
    public static IReadOnlyList<ChatMessage> WithTool(ArithmeticProblem problem) => Tools.Offer(
    [
        new ChatMessage(ChatRoles.User, problem.Question),
        new ChatMessage(ChatRoles.Assistant, "", new ToolCall(ToolName, problem.Expression)),
        new ChatMessage(ChatRoles.Tool, Calculator.Evaluate(problem.Expression).Text),
        new ChatMessage(ChatRoles.Assistant, $"{problem.Expression} = {problem.Answer}"),
    ]);

    /// <summary>The same question answered directly, no tool offered.</summary>
    public static IReadOnlyList<ChatMessage> WithoutTool(ArithmeticProblem problem) =>
        [new ChatMessage(ChatRoles.User, problem.Question), new ChatMessage(ChatRoles.Assistant, problem.Answer)];

    /// <summary>1 when the answer's final turn gives the exact result.</summary>
    public static RewardFunction Reward(IEnumerable<ArithmeticProblem> problems)
    {
        var expected = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in problems) expected[p.Question] = p.Answer;
        return Rewards.ExpectedAnswers(expected);
    }
}

/// <summary>Generated problems in two splits that never share a question, the same for a seed on any machine.</summary>
static class ProblemSplits
{
    /// <summary>
    /// <paramref name="count"/> problems of one split: each split draws from its own stream (seeded by the seed and the
    /// split's salt), repeats skipped; held-out problems also skip every question among the first
    /// <paramref name="trainingCount"/> of the training stream.
    /// </summary>
    public static IReadOnlyList<T> Take<T>(Func<Random, T> draw, Func<T, string> question, long seed, (int Train, int HeldOut) salts, bool heldOut,
        int count, int trainingCount)
    {
        var training = heldOut ? Stream(draw, question, seed, salts.Train).Take(trainingCount).Select(question).ToHashSet() : null;
        return [.. Stream(draw, question, seed, heldOut ? salts.HeldOut : salts.Train).Where(p => training?.Contains(question(p)) != true).Take(count)];
    }

    static IEnumerable<T> Stream<T>(Func<Random, T> draw, Func<T, string> question, long seed, int salt)
    {
        // A fixed mix of seed and split (HashCode.Combine is randomised per process, so it cannot be used here).
        var random = new Random((int)((seed * 1_000_003 + salt) & 0x7fffffff));
        var seen = new HashSet<string>();
        while (true)
        {
            var problem = draw(random);
            if (seen.Add(question(problem))) yield return problem;
        }
    }
}
