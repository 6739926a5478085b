using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace GptSharp.Serving;

/// <summary>
/// A streamed answer as server-sent events: the role, then each choice's pieces as they are released, then each
/// choice's end (held-back text, tool call, finish reason), the usage when asked, and <c>[DONE]</c>. An error after the
/// headers went out is sent as an event, and the stream still ends properly.
/// </summary>
static class EventStream
{
    public static async Task WriteAsync(HttpContext context, RequestChoices choices, Task<Inference.BatchResult[]> outcomes, CompletionJson json,
        bool chat, bool includeUsage, Func<Inference.BatchResult[], object> usage)
    {
        var aborted = context.RequestAborted;
        _ = outcomes.ContinueWith(_ => choices.Complete(), TaskScheduler.Default);
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        async Task Send(object chunk) => await context.Response.WriteAsync($"data: {JsonSerializer.Serialize(chunk, CompletionJson.Options)}\n\n", aborted);

        int n = choices.Rows.Count;
        if (chat)
            for (int i = 0; i < n; i++) await Send(json.Chunk(i, "", role: "assistant"));
        await context.Response.Body.FlushAsync(aborted);
        await foreach (var piece in choices.Pieces.ReadAllAsync(aborted))
        {
            await Send(json.Chunk(piece.Choice, piece.Text, logprob: piece.Logprob));
            await context.Response.Body.FlushAsync(aborted);
        }
        Inference.BatchResult[] done;
        try
        {
            done = await outcomes;
        }
        catch (ApiError e)
        {
            await Send(e.Body);
            await context.Response.WriteAsync("data: [DONE]\n\n", aborted);
            return;
        }
        for (int i = 0; i < n; i++)
        {
            string rest = choices.Rest(i);
            if (rest.Length > 0) await Send(json.Chunk(i, rest));
            foreach (var chunk in json.Ending(i, done[i].Generation)) await Send(chunk);
        }
        object used = usage(done);   // counted in the metrics whether or not the client asked to see it
        if (includeUsage) await Send(json.UsageChunk(done, used));
        await context.Response.WriteAsync("data: [DONE]\n\n", aborted);
        await context.Response.Body.FlushAsync(aborted);
    }
}

/// <summary>
/// Server-sent events with names, as the Responses and Messages APIs stream (<c>event: TYPE</c>, then data holding
/// <c>"type": TYPE</c> first, and for Responses a <c>sequence_number</c>), and the relay of a request's streamed text.
/// </summary>
sealed class NamedEventStream
{
    readonly HttpContext _context;
    readonly bool _sequenced;
    int _sequence;

    public NamedEventStream(HttpContext context, RequestChoices choices, Task<Inference.BatchResult[]> outcomes, bool sequenced)
    {
        (_context, _sequenced) = (context, sequenced);
        _ = outcomes.ContinueWith(_ => choices.Complete(), TaskScheduler.Default);
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
    }

    public async Task Send(string type, object fields)
    {
        var data = JsonSerializer.SerializeToNode(fields, CompletionJson.Options)!.AsObject();
        data.Insert(0, "type", type);
        if (_sequenced) data["sequence_number"] = _sequence++;
        await _context.Response.WriteAsync($"event: {type}\ndata: {data.ToJsonString(CompletionJson.Options)}\n\n", _context.RequestAborted);
    }

    public Task Flush() => _context.Response.Body.FlushAsync(_context.RequestAborted);

    /// <summary>
    /// Hands each piece of the answer's text to <paramref name="onText"/> as it is released, then the generations' results;
    /// a stopped or failed generation comes back as its error (for the API's own error event), not thrown.
    /// </summary>
    public async Task<(Inference.BatchResult[]? Done, ApiError? Error)> Relay(RequestChoices choices, Task<Inference.BatchResult[]> outcomes, Func<string, Task> onText)
    {
        await foreach (var piece in choices.Pieces.ReadAllAsync(_context.RequestAborted))
        {
            if (piece.Text.Length == 0) continue;
            await onText(piece.Text);
            await Flush();
        }
        try { return (await outcomes, null); }
        catch (ApiError e) { return (null, e); }
    }
}
