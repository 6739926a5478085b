using GptSharp.Tokenization;
using Microsoft.AspNetCore.Http;

namespace GptSharp.Serving;

/// <summary>OpenAI's Responses API: <c>POST /v1/responses</c> (whole or streamed), <c>GET</c> and <c>DELETE /v1/responses/{id}</c>.</summary>
public sealed partial class GptServer
{
    static readonly RequestFields ResponsesFields = new("input", "max_output_tokens");

    async Task CreateResponse(HttpContext context)
    {
        var request = ResponsesProtocol.Parse(await Body(context), _responses.Find);
        var (model, adapter) = Target(request.Model);
        int[] prompt = ChatPrompt(model, request.Shape, request.Turns(), "input");
        await Run(context, model, prompt, request.Sampling, chat: true, request.Shape, async (choices, outcomes, usage) =>
        {
            var json = new ResponsesJson(model, request, request.Model);
            if (request.Sampling.Stream)
            {
                if (await json.StreamAsync(context, choices, outcomes, usage) is { } streamed) Store(json.Id, request, streamed.Answer, streamed.Response);
                return;
            }
            var results = await outcomes;
            var answer = CompletionJson.Read(model, request.Shape, [], results[0].Generation);
            var response = json.Response(answer, usage(results));
            Store(json.Id, request, answer, response);
            await context.Response.WriteAsJsonAsync(response, Json, context.RequestAborted);
        }, ResponsesFields, adapter);
    }

    /// <summary>Keeps a finished response (when the request asked to store it) with its conversation, for <c>previous_response_id</c>.</summary>
    void Store(string id, ResponsesRequest request, ChoiceAnswer answer, object response)
    {
        if (!request.Store) return;
        var said = new ConversationEntry(new ChatMessage(ChatRoles.Assistant, answer.Text), answer.Call is null ? [] : [answer.Call], null);
        _responses.Add(id, new StoredResponse(response, [.. request.Conversation.Entries, said]));
    }

    static ApiError NoResponse(string id) =>
        new(404, $"Response with id '{id}' not found (never stored, deleted, or evicted: the server keeps the latest --stored-responses).", code: "not_found");

    IResult GetResponse(string id) => Results.Json((_responses.Find(id) ?? throw NoResponse(id)).Json, Json);

    IResult DeleteResponse(string id) => _responses.Remove(id) ? Results.Json(new { id, @object = "response.deleted", deleted = true }, Json) : throw NoResponse(id);
}
