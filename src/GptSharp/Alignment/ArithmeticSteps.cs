using System.Globalization;
using System.Text.RegularExpressions;
using GptSharp.Inference;
using GptSharp.Tokenization;

namespace GptSharp.Alignment;

/// <summary>A two-step problem, <c>(a × b) ± c</c>, and its exact answer.</summary>
public sealed record StepProblem(long A, long B, char Operator, long C)
{
    public string Expression => $"({A} × {B}) {Operator} {C}";
    public string Question => $"What is {Expression}?";
    public long Value => Operator == '+' ? A * B + C : A * B - C;
    public string Answer => Value.ToString(CultureInfo.InvariantCulture);
}

/// <summary>
/// Multi-step arithmetic in an environment: the calculator here does one operation a call (<c>37 × 48</c>) and keeps
/// its last result as <c>ans</c> (<c>ans − 205</c>), so <c>(a × b) − c</c> takes two calls; a turn without a call is
/// the answer, which ends the episode with 1 for the exact result, else 0.
/// </summary>
public sealed class ArithmeticStepsEnvironment(IReadOnlyDictionary<string, string> answers) : IEnvironment
{
    public const string Name = "calculator-steps";
    public const string ToolName = "calculator";

    static readonly Regex OneOperation = new(@"^\s*(ans|\d+(?:\.\d+)?)\s*([-+−×x*/÷])\s*(ans|\d+(?:\.\d+)?)\s*$", RegexOptions.CultureInvariant);

    string _prompt = "";
    string? _last;

    /// <summary>The environment over these problems (the prompt picks the problem).</summary>
    public static EnvironmentFactory Factory(IEnumerable<StepProblem> problems)
    {
        var answers = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in problems) answers[p.Question] = p.Answer;
        return new EnvironmentFactory(Name, () => new ArithmeticStepsEnvironment(answers));
    }

    /// <summary>How the system turn offers the tool.</summary>
    public static IReadOnlyList<ChatMessage> Offer(string question) =>
        ToolBox.Offer([new ChatMessage(ChatRoles.User, question)], [ToolName + " (one operation a call; ans is the last result)"]);

    public IReadOnlyList<ChatMessage> Reset(string prompt)
    {
        if (!answers.ContainsKey(prompt)) throw new KeyNotFoundException("no problem of this environment asks it");
        (_prompt, _last) = (prompt, null);
        return Offer(prompt);
    }

    public EnvironmentStep Step(ChatMessage turn)
    {
        if (turn.ToolCall is not { } call) return EnvironmentStep.Finish(Rewards.GivesAnswer(turn.Content, answers[_prompt]) ? 1 : 0);
        if (call.Name != ToolName) return EnvironmentStep.Reply($"error: no tool named '{call.Name}'; the tools are: {ToolName}");
        return EnvironmentStep.Reply(Calculate(call.Arguments));
    }

    /// <summary>One operation, <c>ans</c> standing for the last result; the result becomes the new <c>ans</c>.</summary>
    string Calculate(string arguments)
    {
        var match = OneOperation.Match(arguments);
        if (!match.Success) return "error: one operation a call: a number or ans, then + − × or /, then a number or ans";
        string Operand(Group g) => g.Value == "ans" ? _last ?? throw new InvalidOperationException() : g.Value;
        if ((match.Groups[1].Value == "ans" || match.Groups[3].Value == "ans") && _last is null) return "error: no result yet for ans";
        var result = Calculator.Evaluate($"{Operand(match.Groups[1])} {match.Groups[2].Value} {Operand(match.Groups[3])}");
        if (result.Ok) _last = result.Text;
        return result.Text;
    }

    /// <summary>Problems of one split, the same for a seed on any machine; train and held-out never share a question.</summary>
    public static IReadOnlyList<StepProblem> Problems(bool heldOut, int count, long seed = 1337) =>
        ProblemSplits.Take(random => new StepProblem(random.Next(10, 100), random.Next(10, 100), random.Next(2) == 0 ? '+' : '−', random.Next(100, 1000)),
            p => p.Question, seed, (29, 71), heldOut, count, TrainingProblems);

    public const int TrainingProblems = 20000;

    /// <summary>A worked answer: the product, then the sum or difference with <c>ans</c>, then the result.</summary>
    public static IReadOnlyList<ChatMessage> WorkedAnswer(StepProblem problem)
    {
        long product = problem.A * problem.B;
        return
        [
            .. Offer(problem.Question),
            new ChatMessage(ChatRoles.Assistant, "", new ToolCall(ToolName, $"{problem.A} × {problem.B}")),
            new ChatMessage(ChatRoles.Tool, product.ToString(CultureInfo.InvariantCulture)),
            new ChatMessage(ChatRoles.Assistant, "", new ToolCall(ToolName, $"ans {problem.Operator} {problem.C}")),
            new ChatMessage(ChatRoles.Tool, problem.Answer),
            new ChatMessage(ChatRoles.Assistant, $"{problem.Expression} = {problem.Answer}"),
        ];
    }
}
