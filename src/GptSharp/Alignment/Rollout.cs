using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Alignment;

/// <summary>
/// Answers sampled from a policy, laid out for its forward pass: <c>Sequences</c> (B, T) are prompt + answer padded on
/// the right; over each answer (B, R), <c>Positions</c> index the logits that predict its tokens, <c>Tokens</c> are the
/// tokens and <c>Mask</c> is 1 on the tokens that count (answer tokens of rows that are kept, less those a tool wrote:
/// the policy did not choose them, so they have no log-probability to learn from).
/// </summary>
public sealed class Rollout : IDisposable
{
    Rollout(List<Completion> completions, Tensor sequences, Tensor positions, Tensor tokens, Tensor mask, Tensor? samplerLogProbabilities)
        => (Completions, Sequences, Positions, Tokens, Mask, SamplerLogProbabilities) = (completions, sequences, positions, tokens, mask, samplerLogProbabilities);

    public IReadOnlyList<Completion> Completions { get; }
    public Tensor Sequences { get; }
    public Tensor Positions { get; }
    public Tensor Tokens { get; }
    public Tensor Mask { get; }
    /// <summary>(B, R): each answer token's log-probability as the rollout engine sampled it (0 where the mask is 0);
    /// null unless every completion recorded them.</summary>
    public Tensor? SamplerLogProbabilities { get; }
    public int Rows => Completions.Count;

    /// <summary>Samples one answer per prompt (a user message each, rendered with the chat template) in one batch;
    /// prompt i samples with seed <paramref name="seed"/> + i. Answers end at <c>&lt;|end|&gt;</c> or the length limit.</summary>
    /// <param name="keepTruncated">When false, answers cut by the length limit get mask 0: they are scored but not learned from.</param>
    /// <param name="tools">Tools offered in a system turn and run when the policy calls them; their answers are part
    /// of the completion but carry mask 0.</param>
    /// <param name="engine">What samples (<see cref="Inference.Cpu.DecodeEngine"/>): by default the CPU engine on a CPU
    /// for up to <see cref="Inference.Cpu.DecodeEngine.AutoRowLimit"/> prompts (the policy's current weights packed for
    /// this rollout), libtorch for more.</param>
    /// <param name="environment">An environment the policy acts in over up to <paramref name="maxTurns"/> turns, one episode
    /// per prompt (instead of <paramref name="tools"/>): what it says is part of the completion with mask 0, and each
    /// completion carries its episode's outcome.</param>
    public static Rollout Sample(Gpt policy, GptTokenizer tokenizer, IReadOnlyList<string> prompts, double temperature, int maxNewTokens, long seed,
        bool keepTruncated = true, ToolBox? tools = null, string engine = Inference.Cpu.DecodeEngine.Auto,
        EnvironmentFactory? environment = null, int maxTurns = Episode.DefaultMaxTurns)
    {
        if (tools is not null && environment is not null) throw new ArgumentException("Offer tools or an environment, not both: an environment offers its own tools.", nameof(environment));
        using var decoder = TokenDecoder.Create(policy, engine);
        var options = new SamplingOptions(Temperature: temperature, TopK: 0, TopP: 1.0, MaxNewTokens: maxNewTokens, Seed: seed,
            StopTokens: [tokenizer.EndId, tokenizer.BosId], SampledLogprobs: true);
        IReadOnlyList<Generation> answers;
        IReadOnlyList<Episode>? episodes = null;
        IReadOnlyList<int[]> rendered;
        if (environment is null)
        {
            rendered = RenderPrompts(tokenizer, prompts, tools);
            int room = policy.Config.ContextLength - rendered.Max(r => r.Length);
            if (room < 1) throw new ArgumentException($"A prompt fills the model's context of {policy.Config.ContextLength} tokens: no room for an answer.", nameof(prompts));
            answers = decoder.Generate(rendered, options with { MaxNewTokens = Math.Min(maxNewTokens, room) }, interject: tools?.Interjection(tokenizer));
        }
        else (answers, episodes, rendered) = Episodes.Play(decoder, tokenizer, environment, prompts, options, maxTurns, policy.Config.ContextLength);
        var truncated = answers.Select(a => a.Finish != FinishReason.Stop).ToList();
        var completions = Rewards.Describe(tokenizer, prompts, rendered, [.. answers.Select(a => a.Tokens)], truncated, [.. answers.Select(a => a.Inserted)])
            .Select((c, i) => c with { SamplerLogprobs = answers[i].SampledLogprobs, Episode = episodes?[i].Outcome }).ToList();
        return Layout(completions, tokenizer.PadId, parameterDevice(policy), keepTruncated);
    }

    /// <summary>Each prompt as a user turn (after a system turn offering <paramref name="tools"/>, if any), ready for the answer.</summary>
    public static List<int[]> RenderPrompts(GptTokenizer tokenizer, IReadOnlyList<string> prompts, ToolBox? tools = null)
    {
        var template = new ChatTemplate(tokenizer);
        return [.. prompts.Select(p =>
        {
            IReadOnlyList<ChatMessage> messages = [new ChatMessage(ChatRoles.User, p)];
            return template.RenderPrompt(tools is null ? messages : tools.Offer(messages));
        })];
    }

    /// <summary>Lays out completions (prompt and answer tokens) as tensors on <paramref name="device"/>.</summary>
    public static Rollout Layout(List<Completion> completions, int padId, Device device, bool keepTruncated = true)
    {
        int b = completions.Count;
        int r = Math.Max(1, completions.Max(c => c.AnswerTokens.Length));
        int t = completions.Max(c => c.PromptTokens.Length + c.AnswerTokens.Length);
        var sequences = new long[b * t];
        var positions = new long[b * r];
        var tokens = new long[b * r];
        var mask = new float[b * r];
        bool sampled = completions.All(c => c.SamplerLogprobs is not null);
        var samplerLogp = sampled ? new float[b * r] : null;
        Array.Fill(sequences, padId);
        for (int row = 0; row < b; row++)
        {
            var (prompt, answer) = (completions[row].PromptTokens, completions[row].AnswerTokens);
            for (int j = 0; j < prompt.Length; j++) sequences[row * t + j] = prompt[j];
            for (int j = 0; j < answer.Length; j++) sequences[row * t + prompt.Length + j] = answer[j];
            bool learn = keepTruncated || !completions[row].Truncated;
            for (int k = 0; k < answer.Length; k++)
            {
                positions[row * r + k] = prompt.Length - 1 + k;
                tokens[row * r + k] = answer[k];
                mask[row * r + k] = learn && completions[row].Inserted?[k] != true ? 1 : 0;
                if (samplerLogp is not null && mask[row * r + k] == 1) samplerLogp[row * r + k] = (float)completions[row].SamplerLogprobs![k];
            }
        }
        return new Rollout(completions, tensor(sequences, [b, t], device: device), tensor(positions, [b, r], device: device),
            tensor(tokens, [b, r], device: device), tensor(mask, [b, r], device: device), samplerLogp is null ? null : tensor(samplerLogp, [b, r], device: device));
    }

    /// <summary>The rows in <paramref name="index"/> (a minibatch), as tensors outside any dispose scope.</summary>
    public (Tensor Sequences, Tensor Positions, Tensor Tokens, Tensor Mask) Select(Tensor index) =>
        (Sequences.index_select(0, index), Positions.index_select(0, index), Tokens.index_select(0, index), Mask.index_select(0, index));

    /// <summary>Mean answer length in tokens.</summary>
    public double MeanLength => Completions.Average(c => c.AnswerTokens.Length);

    static Device parameterDevice(Gpt model) => model.parameters().First().device;

    public void Dispose()
    {
        Sequences.Dispose();
        Positions.Dispose();
        Tokens.Dispose();
        Mask.Dispose();
        SamplerLogProbabilities?.Dispose();
    }
}
