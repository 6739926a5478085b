using System.Text.Json;
using GptSharp.Inference;
using Microsoft.AspNetCore.Http;

namespace GptSharp.Serving;

/// <summary>
/// Anthropic's Messages API shapes for one request: the <c>message</c> (text and <c>tool_use</c> content blocks,
/// <c>stop_reason</c>, <c>stop_sequence</c>, usage), the streamed events from <c>message_start</c> to
/// <c>message_stop</c>, and Anthropic's error shape.
/// </summary>
sealed class MessagesJson(ServedModel model, MessagesRequest request, string? name = null)
{
    /// <summary>The name the request asked for (<c>base:adapter</c> for an adapter).</summary>
    string Served => name ?? model.Name;

    readonly string _id = "msg_" + Guid.NewGuid().ToString("N")[..24];

    /// <summary>Anthropic's <c>{"type": "error", "error": {"type", "message"}}</c> for an error, its type read from the status.</summary>
    public static object Error(ApiError error) => new { type = "error", error = new { type = ErrorType(error.Status), message = error.Message } };

    static string ErrorType(int status) => status switch
    {
        401 => "authentication_error", 403 => "permission_error", 404 => "not_found_error", 408 => "timeout_error", 413 => "request_too_large",
        429 => "rate_limit_error", 503 => "overloaded_error", >= 500 => "api_error", _ => "invalid_request_error",
    };

    /// <summary>A finished answer with the call's id in Anthropic's form.</summary>
    public ChoiceAnswer Read(Generation generation)
    {
        var answer = CompletionJson.Read(model, request.Shape, request.Sampling.Stop, generation);
        return answer.Call is { } call ? answer with { Call = call with { Id = "toolu_" + Guid.NewGuid().ToString("N")[..24] } } : answer;
    }

    static string StopReason(ChoiceAnswer answer) => answer.Call is not null ? "tool_use" : answer.StopSequence is not null ? "stop_sequence" : answer.Cut ? "max_tokens" : "end_turn";

    static object Usage(TokenUsage used, int output) => new { input_tokens = used.Prompt, output_tokens = output, cache_read_input_tokens = used.Cached, cache_creation_input_tokens = 0 };

    static object ToolUse(FunctionCall call, bool empty = false) => new
    {
        type = "tool_use", id = call.Id, name = call.Name,
        input = empty ? JsonSerializer.SerializeToElement(new { }) : JsonDocument.Parse(call.Arguments).RootElement.Clone(),
    };

    /// <summary>The whole message.</summary>
    public object Whole(ChoiceAnswer answer, TokenUsage used)
    {
        var content = new List<object>();
        if (answer.Text.Length > 0 || answer.Call is null) content.Add(new { type = "text", text = answer.Text });
        if (answer.Call is { } call) content.Add(ToolUse(call));
        return new
        {
            id = _id, type = "message", role = "assistant", model = Served, content,
            stop_reason = StopReason(answer), stop_sequence = answer.StopSequence, usage = Usage(used, used.Completion),
        };
    }

    /// <summary>
    /// Streams the message as Anthropic's events: message_start, a text block as its text arrives (start, text deltas,
    /// stop), a tool_use block (start, its input as one input_json_delta, stop), message_delta with the stop reason and
    /// usage, message_stop. An error after the headers went out is an <c>error</c> event.
    /// </summary>
    public async Task StreamAsync(HttpContext context, RequestChoices choices, Task<BatchResult[]> outcomes, Func<BatchResult[], TokenUsage> usage, int promptTokens)
    {
        var events = new NamedEventStream(context, choices, outcomes, sequenced: false);
        Func<string, object, Task> Send = events.Send;
        await Send("message_start", new
        {
            message = new
            {
                id = _id, type = "message", role = "assistant", model = Served, content = Array.Empty<object>(),
                stop_reason = (string?)null, stop_sequence = (string?)null, usage = Usage(new TokenUsage(promptTokens, 0, 0), 0),
            },
        });
        await Send("ping", new { });
        await events.Flush();

        bool textOpen = false;
        async Task Text(string text)
        {
            if (!textOpen)
            {
                textOpen = true;
                await Send("content_block_start", new { index = 0, content_block = new { type = "text", text = "" } });
            }
            if (text.Length > 0) await Send("content_block_delta", new { index = 0, delta = new { type = "text_delta", text } });
        }
        var (done, error) = await events.Relay(choices, outcomes, Text);
        if (error is not null)
        {
            await Send("error", new { error = new { type = ErrorType(error.Status), message = error.Message } });
            return;
        }
        string rest = choices.Rest(0);
        var answer = Read(done![0].Generation);
        if (rest.Length > 0 || (answer.Call is null && !textOpen)) await Text(rest);
        int index = 0;
        if (textOpen) await Send("content_block_stop", new { index = index++ });
        if (answer.Call is { } call)
        {
            await Send("content_block_start", new { index, content_block = ToolUse(call, empty: true) });
            await Send("content_block_delta", new { index, delta = new { type = "input_json_delta", partial_json = call.Arguments } });
            await Send("content_block_stop", new { index });
        }
        var used = usage(done);
        await Send("message_delta", new { delta = new { stop_reason = StopReason(answer), stop_sequence = answer.StopSequence }, usage = new { output_tokens = used.Completion } });
        await Send("message_stop", new { });
        await events.Flush();
    }
}
