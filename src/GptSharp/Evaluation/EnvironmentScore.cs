using GptSharp.Alignment;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Tokenization;

namespace GptSharp.Evaluation;

/// <summary>How a model fares in an environment: greedy episodes on held-out prompts, their mean reward, turns and how
/// many the environment finished (the others hit the turn or length limit), with a few transcripts.</summary>
public sealed record EnvironmentReport(int Episodes, double MeanReward, double MeanTurns, double Finished, IReadOnlyList<(string Prompt, string Transcript)> Samples);

/// <summary>Plays one greedy episode per prompt in an environment and reports the rewards.</summary>
public static class EnvironmentScore
{
    public static EnvironmentReport Measure(Gpt model, GptTokenizer tokenizer, IReadOnlyList<string> prompts, EnvironmentFactory environment,
        int maxTurns = Episode.DefaultMaxTurns, int maxNewTokens = 96)
    {
        using var decoder = TokenDecoder.Create(model);
        var (answers, episodes, _) = Episodes.Play(decoder, tokenizer, environment, prompts, new SamplingOptions(Temperature: 0, MaxNewTokens: maxNewTokens,
            StopTokens: [tokenizer.EndId, tokenizer.BosId]), maxTurns, model.Config.ContextLength);
        return new EnvironmentReport(prompts.Count, episodes.Average(e => e.Reward), episodes.Average(e => e.Turns), episodes.Count(e => e.Done) / (double)prompts.Count,
            [.. prompts.Zip(answers).Take(6).Select(p => (p.First, ToolBox.Transcript(tokenizer, p.Second.Tokens)))]);
    }
}
