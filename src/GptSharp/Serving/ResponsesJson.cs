using System.Text.Json;
using GptSharp.Inference;
using GptSharp.Tokenization;
using Microsoft.AspNetCore.Http;

namespace GptSharp.Serving;

/// <summary>
/// The Responses API's shapes for one request: the <c>response</c> object (output items — a message with
/// <c>output_text</c>, a <c>function_call</c> — usage, and the request's settings echoed), and the streamed event
/// sequence from <c>response.created</c> to <c>response.completed</c>.
/// </summary>
sealed class ResponsesJson(ServedModel model, ResponsesRequest request, string? name = null)
{
    /// <summary>The name the request asked for (<c>base:adapter</c> for an adapter).</summary>
    string Served => name ?? model.Name;

    public string Id { get; } = "resp_" + Guid.NewGuid().ToString("N");
    readonly string _messageId = "msg_" + Guid.NewGuid().ToString("N"), _callItemId = "fc_" + Guid.NewGuid().ToString("N");
    readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    /// <summary>The output items of a finished answer: its text as a message (left out when the answer is only a call), then its call.</summary>
    public List<object> Output(ChoiceAnswer answer)
    {
        var output = new List<object>();
        if (answer.Call is null || answer.Text.Length > 0) output.Add(Message(answer.Text, answer.Cut ? "incomplete" : "completed"));
        if (answer.Call is { } call) output.Add(CallItem(call, "completed"));
        return output;
    }

    /// <summary>The response object; <paramref name="answer"/> null while it is in progress.</summary>
    public object Response(ChoiceAnswer? answer, TokenUsage? usage)
    {
        var echo = request.Echo;
        JsonElement? Echoed(string name) => echo.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;
        string status = answer is null ? "in_progress" : answer.Cut ? "incomplete" : "completed";
        return new
        {
            id = Id, @object = "response", created_at = _created, status, error = (object?)null,
            incomplete_details = answer?.Cut == true ? new { reason = "max_output_tokens" } : null,
            instructions = request.Instructions, max_output_tokens = request.Sampling.MaxTokens, model = Served,
            output = answer is null ? [] : Output(answer),
            parallel_tool_calls = Echoed("parallel_tool_calls")?.ValueKind != JsonValueKind.False,
            previous_response_id = request.PreviousResponseId, store = request.Store,
            temperature = request.Sampling.Temperature, top_p = request.Sampling.TopP,
            text = Echoed("text") ?? JsonSerializer.SerializeToElement(new { format = new { type = "text" } }),
            tool_choice = Echoed("tool_choice") ?? JsonSerializer.SerializeToElement("auto"),
            tools = Echoed("tools") ?? JsonSerializer.SerializeToElement(Array.Empty<object>()),
            metadata = Echoed("metadata") ?? JsonSerializer.SerializeToElement(new { }),
            usage = usage is { } used ? new
            {
                input_tokens = used.Prompt, input_tokens_details = new { cached_tokens = used.Cached },
                output_tokens = used.Completion, output_tokens_details = new { reasoning_tokens = 0 }, total_tokens = used.Prompt + used.Completion,
            } : null,
        };
    }

    object Message(string text, string status) => new
    {
        type = "message", id = _messageId, status, role = "assistant",
        content = new[] { new { type = "output_text", text, annotations = Array.Empty<object>(), logprobs = Array.Empty<object>() } },
    };

    object CallItem(FunctionCall call, string status) => new { type = "function_call", id = _callItemId, call_id = call.Id, name = call.Name, arguments = call.Arguments, status };

    /// <summary>
    /// Streams the answer as Responses events: created, in_progress, the message item as its text arrives (item added,
    /// part added, text deltas, text done, part done, item done), the function call item (its arguments as a delta, then
    /// done), and completed (or incomplete) with the whole response. An error after the headers is an <c>error</c> event.
    /// Returns the finished answer, or null when it failed.
    /// </summary>
    public async Task<(ChoiceAnswer Answer, object Response)?> StreamAsync(HttpContext context, RequestChoices choices, Task<BatchResult[]> outcomes, Func<BatchResult[], TokenUsage> usage)
    {
        var events = new NamedEventStream(context, choices, outcomes, sequenced: true);
        Func<string, object, Task> Send = events.Send;
        await Send("response.created", new { response = Response(null, null) });
        await Send("response.in_progress", new { response = Response(null, null) });
        await events.Flush();

        bool messageOpen = false;
        var text = new System.Text.StringBuilder();
        async Task Text(string delta)
        {
            if (!messageOpen)
            {
                messageOpen = true;
                await Send("response.output_item.added", new { output_index = 0, item = new { type = "message", id = _messageId, status = "in_progress", role = "assistant", content = Array.Empty<object>() } });
                await Send("response.content_part.added", new { item_id = _messageId, output_index = 0, content_index = 0, part = new { type = "output_text", text = "", annotations = Array.Empty<object>() } });
            }
            if (delta.Length == 0) return;
            text.Append(delta);
            await Send("response.output_text.delta", new { item_id = _messageId, output_index = 0, content_index = 0, delta, logprobs = Array.Empty<object>() });
        }
        var (done, error) = await events.Relay(choices, outcomes, Text);
        if (error is not null)
        {
            await Send("error", new { code = error.Code ?? error.Type, message = error.Message, param = error.Param });
            return null;
        }
        string rest = choices.Rest(0);
        var answer = CompletionJson.Read(model, request.Shape, [], done![0].Generation);
        if (rest.Length > 0 || (answer.Call is null && !messageOpen)) await Text(rest);
        int index = 0;
        if (messageOpen)
        {
            string whole = text.ToString();
            var part = new { type = "output_text", text = whole, annotations = Array.Empty<object>(), logprobs = Array.Empty<object>() };
            await Send("response.output_text.done", new { item_id = _messageId, output_index = 0, content_index = 0, text = whole, logprobs = Array.Empty<object>() });
            await Send("response.content_part.done", new { item_id = _messageId, output_index = 0, content_index = 0, part });
            await Send("response.output_item.done", new { output_index = 0, item = Message(whole, answer.Cut ? "incomplete" : "completed") });
            index = 1;
        }
        if (answer.Call is { } call)
        {
            await Send("response.output_item.added", new { output_index = index, item = CallItem(call with { Arguments = "" }, "in_progress") });
            await Send("response.function_call_arguments.delta", new { item_id = _callItemId, output_index = index, delta = call.Arguments });
            await Send("response.function_call_arguments.done", new { item_id = _callItemId, output_index = index, name = call.Name, arguments = call.Arguments });
            await Send("response.output_item.done", new { output_index = index, item = CallItem(call, "completed") });
        }
        var response = Response(answer, usage(done));
        await Send(answer.Cut ? "response.incomplete" : "response.completed", new { response });
        await events.Flush();
        return (answer, response);
    }
}
