using System.Text.Json;
using GptSharp.Inference;

namespace GptSharp.Serving;

/// <summary>A finished answer: its text (before any tool call, cut at a stop sequence), the call it ends with, the stop sequence
/// that ended it, and whether it ran out of tokens instead of ending.</summary>
sealed record ChoiceAnswer(string Text, FunctionCall? Call, string? StopSequence, bool Cut);

/// <summary>
/// OpenAI's response shapes for one request: the whole answer (<c>chat.completion</c> / <c>text_completion</c>) and the
/// stream's chunks, with tool calls, log-probabilities (the chat and the legacy completions shapes), usage and
/// llama.cpp's <c>timings</c>.
/// </summary>
sealed class CompletionJson(ServedModel model, RequestSampling sampling, bool chat, AnswerShape shape, string? name = null)
{
    /// <summary>The name the request asked for (<c>base:adapter</c> for an adapter).</summary>
    string Served => name ?? model.Name;

    public static readonly JsonSerializerOptions Options = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    readonly string _id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N")[..24];
    readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    string ChunkObject => chat ? "chat.completion.chunk" : "text_completion";

    /// <summary>The whole answer: every choice's text (or tool call), log-probabilities when asked, usage and timings.</summary>
    public object Whole(BatchResult[] results, object usage)
    {
        var choices = results.Select((result, i) =>
        {
            var generation = result.Generation;
            var call = shape.ReadCall(model.Tokenizer, generation.Tokens);
            var (text, entries) = Replay(BeforeCall(generation, shape.CallStart(model.Tokenizer, generation.Tokens)));
            object? logprobs = sampling.TopLogprobs is null ? null : chat ? new { content = entries.Select(ChatLogprob) } : CompletionLogprobs(entries);
            if (call is not null)
                return new { index = i, message = (object)new { role = "assistant", content = text.Length == 0 ? null : text, tool_calls = new[] { CallJson(call) } }, logprobs, finish_reason = "tool_calls" };
            return chat
                ? (object)new { index = i, message = new { role = "assistant", content = text }, logprobs, finish_reason = Finish(generation) }
                : new { index = i, text, logprobs, finish_reason = Finish(generation) };
        }).ToArray();
        return new { id = _id, @object = chat ? "chat.completion" : "text_completion", created = _created, model = Served, choices, usage, timings = Timings(results) };
    }

    /// <summary>A stream chunk of one choice: a piece of text (the first chat chunk carries the role), or its finish.</summary>
    public object Chunk(int choice, string? content, string? role = null, string? finish = null, TokenLogprob? logprob = null)
    {
        object? logprobs = logprob is null ? null : chat ? new { content = new[] { ChatLogprob(logprob) } } : CompletionLogprobs([logprob]);
        return chat
            ? new { id = _id, @object = ChunkObject, created = _created, model = Served, choices = new[] { new { index = choice, delta = role is null ? (object)new { content } : new { role, content }, logprobs, finish_reason = finish } } }
            : new { id = _id, @object = ChunkObject, created = _created, model = Served, choices = new[] { new { index = choice, text = content ?? "", logprobs, finish_reason = finish } } };
    }

    /// <summary>The chunks that end one streamed choice: its tool call if it made one, then its finish reason.</summary>
    public IEnumerable<object> Ending(int choice, Generation generation)
    {
        var call = shape.ReadCall(model.Tokenizer, generation.Tokens);
        if (call is not null)
            yield return new { id = _id, @object = ChunkObject, created = _created, model = Served, choices = new[] { new { index = choice, delta = (object)new { tool_calls = new[] { CallJson(call, index: 0) } }, logprobs = (object?)null, finish_reason = (string?)null } } };
        yield return chat
            ? new { id = _id, @object = ChunkObject, created = _created, model = Served, choices = new[] { new { index = choice, delta = new { }, logprobs = (object?)null, finish_reason = call is null ? Finish(generation) : "tool_calls" } } }
            : Chunk(choice, "", finish: Finish(generation));
    }

    /// <summary>The stream's last chunk when <c>stream_options.include_usage</c> asks for it: no choices, the usage.</summary>
    public object UsageChunk(BatchResult[] results, object usage) =>
        new { id = _id, @object = ChunkObject, created = _created, model = Served, choices = Array.Empty<object>(), usage, timings = Timings(results) };

    /// <summary>A finished choice read as an answer, the same for every API's shape.</summary>
    public static ChoiceAnswer Read(ServedModel model, AnswerShape shape, IReadOnlyList<string> stops, Generation generation)
    {
        var call = shape.ReadCall(model.Tokenizer, generation.Tokens);
        var before = BeforeCall(generation, shape.CallStart(model.Tokenizer, generation.Tokens));
        var answer = new AnswerText(model.Tokenizer, stops);
        foreach (int token in before.Tokens) answer.Add(token);
        return new ChoiceAnswer(answer.Finish(), call, answer.StoppedBy, Cut: call is null && generation.Finish != FinishReason.Stop);
    }

    /// <summary>The part of a generation before its tool call (all of it when it makes none).</summary>
    static Generation BeforeCall(Generation generation, int start) => start < 0 ? generation
        : generation with { Tokens = generation.Tokens[..start], Logprobs = generation.Logprobs?[..start] };

    /// <summary>A tool call in OpenAI's shape (<paramref name="index"/> only in stream deltas).</summary>
    static object CallJson(FunctionCall call, int? index = null) => index is null
        ? new { id = call.Id, type = "function", function = new { name = call.Name, arguments = call.Arguments } }
        : new { index, id = call.Id, type = "function", function = new { name = call.Name, arguments = call.Arguments } };

    /// <summary>The answer's text and the tokens it is made of (special tokens and tokens after a stop sequence left out), as streaming hands them out.</summary>
    (string Text, List<TokenLogprob> Logprobs) Replay(Generation generation)
    {
        var answer = new AnswerText(model.Tokenizer, sampling.Stop);
        var logprobs = new List<TokenLogprob>();
        for (int i = 0; i < generation.Tokens.Length; i++)
        {
            int token = generation.Tokens[i];
            if (!answer.Stopped && !model.Tokenizer.IsSpecial(token) && generation.Logprobs?[i] is { } logprob) logprobs.Add(logprob);
            answer.Add(token);
        }
        return (answer.Finish(), logprobs);
    }

    object ChatLogprob(TokenLogprob logprob)
    {
        object Entry(int token, double value) => new { token = model.Tokenizer.Decode([token]), logprob = value, bytes = model.Tokenizer.TokenBytes(token).Select(b => (int)b) };
        return new
        {
            token = model.Tokenizer.Decode([logprob.Token]), logprob = logprob.Logprob, bytes = model.Tokenizer.TokenBytes(logprob.Token).Select(b => (int)b),
            top_logprobs = logprob.Top.Select(t => Entry(t.Token, t.Logprob)),
        };
    }

    /// <summary>The legacy completions shape: parallel lists of tokens, their log-probabilities, the alternatives and text offsets.</summary>
    object CompletionLogprobs(IReadOnlyList<TokenLogprob> logprobs)
    {
        var tokens = logprobs.Select(l => model.Tokenizer.Decode([l.Token])).ToList();
        var offsets = new List<int>();
        int offset = 0;
        foreach (string token in tokens) { offsets.Add(offset); offset += token.Length; }
        return new
        {
            tokens, token_logprobs = logprobs.Select(l => l.Logprob), text_offset = offsets,
            top_logprobs = logprobs.Select(l => l.Top.GroupBy(t => model.Tokenizer.Decode([t.Token])).ToDictionary(g => g.Key, g => g.Max(t => t.Logprob))),
        };
    }

    /// <summary>llama.cpp's <c>timings</c>: prompt and generation speed (the first choice's prompt; all choices' tokens).</summary>
    static object? Timings(BatchResult[] results)
    {
        if (results[0].Timings is not { } first) return null;
        int predicted = results.Sum(r => r.Generation.Tokens.Length);
        double decodeMs = results.Max(r => r.Timings?.DecodeMilliseconds ?? 0);
        static double PerSecond(int count, double ms) => ms > 0 ? Math.Round(count * 1000 / ms, 2) : 0;
        return new
        {
            cache_n = first.CachedTokens, prompt_n = first.PromptTokens, prompt_ms = Math.Round(first.PrefillMilliseconds, 3),
            prompt_per_second = PerSecond(first.PromptTokens, first.PrefillMilliseconds),
            predicted_n = predicted, predicted_ms = Math.Round(decodeMs, 3), predicted_per_second = PerSecond(predicted, decodeMs),
            queue_ms = Math.Round(first.QueueMilliseconds, 3),
        };
    }

    static string Finish(Generation generation) => generation.Finish == FinishReason.Stop ? "stop" : "length";
}
