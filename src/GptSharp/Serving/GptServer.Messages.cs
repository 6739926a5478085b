using Microsoft.AspNetCore.Http;

namespace GptSharp.Serving;

/// <summary>Anthropic's Messages API: <c>POST /v1/messages</c> (whole or streamed) and <c>POST /v1/messages/count_tokens</c>.</summary>
public sealed partial class GptServer
{
    static readonly RequestFields MessagesFields = new("messages", "max_tokens");

    /// <summary>Whether a path answers errors in Anthropic's shape.</summary>
    static bool IsAnthropic(PathString path) => path.StartsWithSegments("/v1/messages");

    (ServedModel Model, Inference.Cpu.CpuAdapter? Adapter, int[] Prompt) MessagesPrompt(MessagesRequest request)
    {
        var (model, adapter) = Target(request.Model);
        return (model, adapter, ChatPrompt(model, request.Shape, request.Turns, "messages", messagePrefix: "tools: model"));
    }

    async Task CreateMessage(HttpContext context)
    {
        var request = AnthropicProtocol.Parse(await Body(context));
        var (model, adapter, prompt) = MessagesPrompt(request);
        await Run(context, model, prompt, request.Sampling, chat: true, request.Shape, async (choices, outcomes, usage) =>
        {
            var json = new MessagesJson(model, request, request.Model);
            if (request.Sampling.Stream) await json.StreamAsync(context, choices, outcomes, usage, prompt.Length);
            else
            {
                var results = await outcomes;
                await context.Response.WriteAsJsonAsync(json.Whole(json.Read(results[0].Generation), usage(results)), Json, context.RequestAborted);
            }
        }, MessagesFields, adapter);
    }

    async Task CountMessageTokens(HttpContext context)
    {
        var (_, _, prompt) = MessagesPrompt(AnthropicProtocol.Parse(await Body(context), countOnly: true));
        await context.Response.WriteAsJsonAsync(new { input_tokens = prompt.Length }, Json, context.RequestAborted);
    }
}
