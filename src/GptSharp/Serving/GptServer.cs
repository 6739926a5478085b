using System.Diagnostics;
using System.Text.Json;
using System.Threading.Channels;
using GptSharp.Inference;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace GptSharp.Serving;

/// <summary>Where and how the server listens.</summary>
/// <param name="Port">0 picks a free port (see <see cref="GptServer.Address"/>).</param>
/// <param name="ApiKey">When set, every /v1 request needs <c>Authorization: Bearer KEY</c>.</param>
/// <param name="MaxConcurrent">Requests decoded together in one batch per model; more wait for the next batch.</param>
public sealed record ServerOptions(string Host = "127.0.0.1", int Port = 8000, string? ApiKey = null, long MaxBodyBytes = 1 << 20, int MaxConcurrent = 4);

/// <summary>
/// An OpenAI-compatible HTTP server over loaded runs (ASP.NET Core minimal APIs): <c>GET /v1/models</c>,
/// <c>POST /v1/chat/completions</c> and <c>POST /v1/completions</c> (both streamed as server-sent events or whole),
/// <c>GET /health</c>, and the web chat at <c>/</c>. Bad requests get OpenAI-style error JSON with a 4xx status.
/// </summary>
public sealed class GptServer : IAsyncDisposable
{
    static readonly JsonSerializerOptions Json = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    readonly WebApplication _app;
    readonly Dictionary<string, ServedModel> _models;
    readonly ServerOptions _options;
    readonly Dictionary<string, DecodeScheduler> _schedulers;

    public GptServer(IReadOnlyList<ServedModel> models, ServerOptions options)
    {
        if (models.Count == 0) throw new ArgumentException("Serve at least one run.", nameof(models));
        var duplicate = models.GroupBy(m => m.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new ArgumentException($"Two runs are both named '{duplicate.Key}'; name them with name=folder.", nameof(models));
        _models = models.ToDictionary(m => m.Name);
        _options = options;
        _schedulers = models.ToDictionary(m => m.Name, m => new DecodeScheduler(m, options.MaxConcurrent));
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Limits.MaxRequestBodySize = options.MaxBodyBytes);
        builder.WebHost.UseUrls($"http://{options.Host}:{options.Port}");
        _app = builder.Build();
        _app.Use(Guard);
        _app.MapGet("/", () => Results.Content(ChatPage(), "text/html; charset=utf-8"));
        _app.MapGet("/health", () => Results.Json(new { status = "ok", models = _models.Keys }, Json));
        _app.MapGet("/v1/models", () => Results.Json(new
        {
            @object = "list",
            data = _models.Values.Select(m => new { id = m.Name, @object = "model", created = m.Created, owned_by = "gptsharp" }),
        }, Json));
        _app.MapPost("/v1/chat/completions", ChatCompletions);
        _app.MapPost("/v1/completions", Completions);
        _app.MapFallback((HttpContext context) => Error(context, new ApiError(404, $"No route {context.Request.Method} {context.Request.Path}.", code: "not_found")));
    }

    /// <summary>Generations stopped because their client went away (each freed its slot).</summary>
    public int CancelledGenerations => _cancelled;
    int _cancelled;

    /// <summary>The address it listens on, once started (with the real port when 0 was asked for).</summary>
    public string Address => _app.Urls.First();

    public Task StartAsync(CancellationToken cancellation = default) => _app.StartAsync(cancellation);
    public Task WaitForShutdownAsync(CancellationToken cancellation = default) => _app.WaitForShutdownAsync(cancellation);

    /// <summary>The batching scheduler of a served model.</summary>
    public DecodeScheduler Scheduler(string model) => _schedulers[model];

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
        foreach (var scheduler in _schedulers.Values) await scheduler.DisposeAsync();
    }

    static string ChatPage()
    {
        using var stream = typeof(GptServer).Assembly.GetManifestResourceStream("GptSharp.Serving.chat.html")!;
        return new StreamReader(stream).ReadToEnd();
    }

    /// <summary>API key check, and OpenAI-style JSON for every error (never an HTML page or a bare 500).</summary>
    async Task Guard(HttpContext context, RequestDelegate next)
    {
        try
        {
            if (_options.ApiKey is { } key && context.Request.Path.StartsWithSegments("/v1")
                && context.Request.Headers.Authorization.ToString() != $"Bearer {key}")
                throw new ApiError(401, "Invalid or missing API key: send Authorization: Bearer <key>.", code: "invalid_api_key", type: "authentication_error");
            await next(context);
        }
        catch (ApiError e) when (!context.Response.HasStarted)
        {
            await Error(context, e);
        }
        catch (BadHttpRequestException e) when (!context.Response.HasStarted)
        {
            await Error(context, new ApiError(e.StatusCode, e.StatusCode == 413
                ? $"The request body is larger than {_options.MaxBodyBytes:N0} bytes." : e.Message));
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            Interlocked.Increment(ref _cancelled); // the client went away; its generation has stopped and its slot is free
        }
        catch (Exception e) when (!context.Response.HasStarted)
        {
            await Error(context, new ApiError(500, $"Internal error: {e.Message}", type: "server_error"));
        }
    }

    static Task Error(HttpContext context, ApiError error)
    {
        context.Response.StatusCode = error.Status;
        return context.Response.WriteAsJsonAsync(error.Body, Json);
    }

    static async Task<JsonElement> Body(HttpContext context)
    {
        using var reader = new StreamReader(context.Request.Body);
        return OpenAiProtocol.ParseBody(await reader.ReadToEndAsync(context.RequestAborted));
    }

    ServedModel Find(string name) => _models.TryGetValue(name, out var model) ? model
        : throw new ApiError(404, $"The model '{name}' does not exist; available: {string.Join(", ", _models.Keys)}.", "model", "model_not_found");

    async Task ChatCompletions(HttpContext context)
    {
        var request = OpenAiProtocol.Chat(await Body(context));
        var model = Find(request.Model);
        int[] prompt = model.Template.RenderPrompt(request.Messages);
        await Respond(context, model, prompt, request.Sampling, chat: true);
    }

    async Task Completions(HttpContext context)
    {
        var request = OpenAiProtocol.Completion(await Body(context));
        var model = Find(request.Model);
        int[] prompt = [model.Tokenizer.BosId, .. model.Tokenizer.Encode(request.Prompt)];
        await Respond(context, model, prompt, request.Sampling, chat: false);
    }

    async Task Respond(HttpContext context, ServedModel model, int[] prompt, RequestSampling sampling, bool chat)
    {
        if (prompt.Length >= model.ContextLength)
            throw new ApiError(400, $"The prompt is {prompt.Length} tokens; model '{model.Name}' reads at most {model.ContextLength} (prompt and answer together).",
                chat ? "messages" : "prompt", "context_length_exceeded");
        if (sampling.MaxTokens > model.ContextLength)
            throw new ApiError(400, $"'max_tokens' {sampling.MaxTokens} is more than model '{model.Name}''s context of {model.ContextLength} tokens.", "max_tokens");
        var options = new SamplingOptions(Temperature: sampling.Temperature, TopP: sampling.TopP,
            MaxNewTokens: Math.Min(sampling.MaxTokens ?? model.ContextLength, model.ContextLength - prompt.Length),
            Seed: sampling.Seed ?? Random.Shared.NextInt64(), StopTokens: chat ? [model.Tokenizer.EndId, model.Tokenizer.BosId] : [model.Tokenizer.BosId, model.Tokenizer.EosId],
            StopSequences: sampling.Stop);
        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N")[..24];
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var aborted = context.RequestAborted;

        var scheduler = _schedulers[model.Name];
        async Task<Generation> Run(Action<int>? onToken)
        {
            var (generation, cancelled) = await scheduler.Enqueue(new BatchRow(prompt, options, onToken, aborted, model.Decode));
            if (cancelled) throw new OperationCanceledException(aborted);
            return generation;
        }

        if (!sampling.Stream)
        {
            var generation = await Run(null);
            string text = model.Text(generation, sampling.Stop);
            var usage = Usage(prompt.Length, generation.Tokens.Length);
            string finish = Finish(generation);
            object body = chat
                ? new { id, @object = "chat.completion", created, model = model.Name, choices = new[] { new { index = 0, message = new { role = "assistant", content = text }, finish_reason = finish } }, usage }
                : new { id, @object = "text_completion", created, model = model.Name, choices = new[] { new { index = 0, text, logprobs = (object?)null, finish_reason = finish } }, usage };
            await context.Response.WriteAsJsonAsync(body, Json, aborted);
            return;
        }

        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        var pieces = Channel.CreateUnbounded<string>();
        var work = Task.Run(async () =>
        {
            try { return await Run(model.TextStream(piece => pieces.Writer.TryWrite(piece))); }
            finally { pieces.Writer.TryComplete(); }
        });
        async Task Send(object chunk) => await context.Response.WriteAsync($"data: {JsonSerializer.Serialize(chunk, Json)}\n\n", aborted);
        object Chunk(string? content, string? role, string? finish) => chat
            ? new { id, @object = "chat.completion.chunk", created, model = model.Name, choices = new[] { new { index = 0, delta = role is null ? (object)new { content } : new { role, content }, finish_reason = finish } } }
            : new { id, @object = "text_completion", created, model = model.Name, choices = new[] { new { index = 0, text = content ?? "", logprobs = (object?)null, finish_reason = finish } } };
        if (chat) await Send(Chunk("", "assistant", null));
        await context.Response.Body.FlushAsync(aborted);
        await foreach (string piece in pieces.Reader.ReadAllAsync(aborted))
        {
            await Send(Chunk(piece, null, null));
            await context.Response.Body.FlushAsync(aborted);
        }
        var done = await work;
        await Send(chat
            ? new { id, @object = "chat.completion.chunk", created, model = model.Name, choices = new[] { new { index = 0, delta = new { }, finish_reason = Finish(done) } } }
            : Chunk("", null, Finish(done)));
        if (sampling.IncludeUsage)
            await Send(new { id, @object = chat ? "chat.completion.chunk" : "text_completion", created, model = model.Name, choices = Array.Empty<object>(), usage = Usage(prompt.Length, done.Tokens.Length) });
        await context.Response.WriteAsync("data: [DONE]\n\n", aborted);
        await context.Response.Body.FlushAsync(aborted);
    }

    static object Usage(int prompt, int completion) => new { prompt_tokens = prompt, completion_tokens = completion, total_tokens = prompt + completion };
    static string Finish(Generation generation) => generation.Finish == FinishReason.Stop ? "stop" : "length";
}
