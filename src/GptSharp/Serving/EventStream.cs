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
