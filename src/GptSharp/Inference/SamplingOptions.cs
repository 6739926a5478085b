namespace GptSharp.Inference;

/// <summary>How the next token is chosen.</summary>
/// <param name="Temperature">0 is greedy (argmax); higher flattens the distribution.</param>
/// <param name="TopK">Keep only the k most likely tokens (0: all).</param>
/// <param name="TopP">Keep the smallest set of tokens whose probability sums to at least p (1: all).</param>
/// <param name="RepetitionPenalty">Divides positive (multiplies negative) logits of tokens already in the context; 1 is off.</param>
/// <param name="MaxNewTokens">Stop after this many generated tokens.</param>
/// <param name="Seed">Seeds the sampler, so the same prompt and seed give the same text.</param>
/// <param name="StopTokens">Generation ends after emitting one of these ids (e.g. &lt;|eos|&gt;, &lt;|end|&gt;).</param>
/// <param name="StopSequences">Generation ends when the decoded text contains one of these (also inside a token); the
/// text from the stop on is not part of the answer.</param>
/// <param name="TruncatePrompt">A prompt longer than the context keeps its last tokens instead of being an error.</param>
/// <param name="PresencePenalty">Subtracted from the logit of every token the answer already holds (OpenAI's presence_penalty).</param>
/// <param name="FrequencyPenalty">Subtracted from a token's logit once per time the answer already holds it (OpenAI's frequency_penalty).</param>
/// <param name="TopLogprobs">Record each sampled token's log-probability and this many most likely alternatives
/// (null: none). Log-probabilities are the model's own, before temperature, penalties and constraints.</param>
/// <param name="SampledLogprobs">Record each sampled token's log-probability under the distribution it was drawn from
/// (temperature, penalties, top-k, top-p and constraints applied): what RL compares its trainer's log-probabilities with.</param>
public sealed record SamplingOptions(
    double Temperature = 0.8, int TopK = 0, double TopP = 1.0, double RepetitionPenalty = 1.0, int MaxNewTokens = 64,
    long Seed = 1337, IReadOnlyList<int>? StopTokens = null, IReadOnlyList<string>? StopSequences = null, bool TruncatePrompt = false,
    double PresencePenalty = 0, double FrequencyPenalty = 0, int? TopLogprobs = null, bool SampledLogprobs = false)
{
    public SamplingOptions Validate()
    {
        if (Temperature < 0 || double.IsNaN(Temperature)) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Temperature must be >= 0.");
        if (TopK < 0) throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "TopK must be >= 0 (0: off).");
        if (TopP is <= 0 or > 1) throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "TopP must be in (0, 1].");
        if (RepetitionPenalty <= 0) throw new ArgumentOutOfRangeException(nameof(RepetitionPenalty), RepetitionPenalty, "RepetitionPenalty must be > 0 (1: off).");
        if (StopSequences?.Any(string.IsNullOrEmpty) == true) throw new ArgumentException("A stop sequence is empty.", nameof(StopSequences));
        if (!double.IsFinite(PresencePenalty)) throw new ArgumentOutOfRangeException(nameof(PresencePenalty), PresencePenalty, "PresencePenalty must be a finite number.");
        if (!double.IsFinite(FrequencyPenalty)) throw new ArgumentOutOfRangeException(nameof(FrequencyPenalty), FrequencyPenalty, "FrequencyPenalty must be a finite number.");
        if (TopLogprobs < 0) throw new ArgumentOutOfRangeException(nameof(TopLogprobs), TopLogprobs, "TopLogprobs must be >= 0.");
        if (MaxNewTokens < 1) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "MaxNewTokens must be >= 1.");
        return this;
    }
}

/// <summary>Why generation ended.</summary>
public enum FinishReason { Length, Stop, ContextFull }

/// <summary>The tokens one prompt produced.</summary>
/// <param name="Inserted">Per token of <paramref name="Tokens"/>, whether a tool wrote it rather than the model; null when no tool did.</param>
/// <param name="Logprobs">Per token of <paramref name="Tokens"/>, its log-probability and the likeliest alternatives, when
/// <see cref="SamplingOptions.TopLogprobs"/> asked for them (null for tokens a tool wrote).</param>
/// <param name="SampledLogprobs">Per token, its log-probability under the distribution it was drawn from, when
/// <see cref="SamplingOptions.SampledLogprobs"/> asked for it (NaN for tokens a tool wrote).</param>
public sealed record Generation(int[] PromptTokens, int[] Tokens, FinishReason Finish, bool[]? Inserted = null, TokenLogprob?[]? Logprobs = null,
    double[]? SampledLogprobs = null);

/// <summary>A generated token's log-probability under the model, and the most likely tokens at that step (best first).</summary>
public sealed record TokenLogprob(int Token, double Logprob, IReadOnlyList<(int Token, double Logprob)> Top);
