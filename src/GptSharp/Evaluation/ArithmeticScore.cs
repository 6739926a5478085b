using GptSharp.Alignment;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Tokenization;

namespace GptSharp.Evaluation;

/// <summary>The arithmetic task measured (see <see cref="Arithmetic"/>): held-out problems answered greedily, with the
/// calculator offered and run or without it.</summary>
public static class ArithmeticScore
{
    /// <summary>Exact-answer accuracy on held-out problems, greedy, with or without the calculator offered and run.</summary>
    public static ArithmeticReport Measure(Gpt model, GptTokenizer tokenizer, IReadOnlyList<ArithmeticProblem> problems, bool withTool, int maxNewTokens = 64)
    {
        var prompts = problems.Select(p => p.Question).ToList();
        var tools = withTool ? Arithmetic.Tools : null;
        var rendered = Rollout.RenderPrompts(tokenizer, prompts, tools);
        using var decoder = TokenDecoder.Create(model);
        var answers = decoder.Generate(rendered, new SamplingOptions(Temperature: 0, MaxNewTokens: maxNewTokens,
            StopTokens: [tokenizer.EndId, tokenizer.BosId]), interject: tools?.Interjection(tokenizer));
        var completions = Rewards.Describe(tokenizer, prompts, rendered, [.. answers.Select(a => a.Tokens)],
            [.. answers.Select(a => a.Finish != FinishReason.Stop)], [.. answers.Select(a => a.Inserted)]);
        var scores = Arithmetic.Reward(problems)(completions);
        int called = answers.Count(a => a.Inserted is not null);
        return new ArithmeticReport(withTool, problems.Count, (int)scores.Sum(), called,
            [.. completions.Take(6).Select(c => (c.Prompt, ToolBox.Transcript(tokenizer, c.AnswerTokens)))]);
    }
}

/// <summary>Exact answers out of the problems asked; <paramref name="ToolCalls"/> counts answers in which the calculator ran.</summary>
public sealed record ArithmeticReport(bool WithTool, int Problems, int Correct, int ToolCalls, IReadOnlyList<(string Question, string Answer)> Samples)
{
    public double Accuracy => Problems == 0 ? 0 : Correct / (double)Problems;
}
