using System.Net;
using System.Text.Json;
using System.Threading.Channels;
using GptSharp.Inference;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Net.Http.Headers;

namespace GptSharp.Serving;

/// <summary>
/// An OpenAI-compatible HTTP server over loaded runs (ASP.NET Core minimal APIs): <c>GET /v1/models</c>,
/// <c>POST /v1/chat/completions</c> and <c>POST /v1/completions</c> (both streamed as server-sent events or whole),
/// <c>GET /health</c>, and the web chat at <c>/</c>. Bad requests get OpenAI-style error JSON with a 4xx status;
/// only loopback names, the bound host and <see cref="ServerOptions.AllowedHosts"/> are served (no DNS rebinding), and a
/// POST must be <c>application/json</c> (no cross-site form posts).
/// </summary>
public sealed class GptServer : IAsyncDisposable
{
    static readonly JsonSerializerOptions Json = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    readonly WebApplication _app;
    readonly Dictionary<string, ServedModel> _models;
    readonly ServerOptions _options;
    readonly Dictionary<string, IGenerationScheduler> _schedulers;
    readonly HashSet<string> _allowedHosts;

    public GptServer(IReadOnlyList<ServedModel> models, ServerOptions options)
    {
        if (models.Count == 0) throw new ArgumentException("Serve at least one run.", nameof(models));
        var duplicate = models.GroupBy(m => m.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new ArgumentException($"Two runs are both named '{duplicate.Key}'; name them with name=folder.", nameof(models));
        _options = options.Validate();
        var bind = options.BindAddress();
        ExposedWithoutKey = !IPAddress.IsLoopback(bind) && options.ApiKey is null;
        _allowedHosts = new HashSet<string>(["localhost", "127.0.0.1", "::1", options.Host.Trim().Trim('[', ']'), .. options.AllowedHosts ?? []],
            StringComparer.OrdinalIgnoreCase);
        _models = models.ToDictionary(m => m.Name);
        _schedulers = models.ToDictionary(m => m.Name, m => options.Batching == Batching.Static
            ? (IGenerationScheduler)new DecodeScheduler(m, options.MaxConcurrent, options.MaxQueue)
            : new ContinuousBatcher(m.Model, new BatcherOptions(options.MaxConcurrent, options.MaxQueue, PrefixCache: options.PrefixCache)));
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxBodyBytes;
            k.Listen(bind, options.Port);
        });
        _app = builder.Build();
        _app.Use(Guard);
        string[] get = ["GET", "HEAD"];
        _app.MapMethods("/", get, (HttpContext context) =>
        {
            // The page talks to this server only; no site may frame it (clickjacking) or inject into it.
            context.Response.Headers["X-Frame-Options"] = "DENY";
            context.Response.Headers.ContentSecurityPolicy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " +
                                                             "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
            return Results.Content(ChatPage(), "text/html; charset=utf-8");
        });
        _app.MapMethods("/health", get, () => Results.Json(new { status = "ok", models = _models.Keys }, Json));
        _app.MapMethods("/v1/models", get, () => Results.Json(new { @object = "list", data = _models.Values.Select(ModelObject) }, Json));
        _app.MapMethods("/v1/models/{id}", get, (string id) => Results.Json(ModelObject(Find(id, param: null)), Json));
        _app.MapPost("/v1/chat/completions", ChatCompletions);
        _app.MapPost("/v1/completions", Completions);
    }

    /// <summary>True when the server listens beyond this machine without an API key (the CLI warns).</summary>
    public bool ExposedWithoutKey { get; }

    static object ModelObject(ServedModel m) => new { id = m.Name, @object = "model", created = m.Created, owned_by = "gptsharp" };

    /// <summary>Generations stopped because their client went away (each freed its slot).</summary>
    public int CancelledGenerations => _cancelled;
    int _cancelled;

    /// <summary>The address it listens on, once started (with the real port when 0 was asked for).</summary>
    public string Address => _app.Urls.First();

    public Task StartAsync(CancellationToken cancellation = default) => _app.StartAsync(cancellation);
    public Task WaitForShutdownAsync(CancellationToken cancellation = default) => _app.WaitForShutdownAsync(cancellation);

    /// <summary>The batching scheduler of a served model.</summary>
    public IGenerationScheduler Scheduler(string model) => _schedulers[model];

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

    /// <summary>
    /// Host, key and content-type checks, and OpenAI-style JSON for every error: never an HTML page, an empty 404, or
    /// an exception's text (which may hold native stack traces and install paths).
    /// </summary>
    async Task Guard(HttpContext context, RequestDelegate next)
    {
        context.Response.Headers.XContentTypeOptions = "nosniff";
        try
        {
            string host = context.Request.Host.Host.Trim('[', ']');
            if (!_allowedHosts.Contains("*") && !_allowedHosts.Contains(host))
                throw new ApiError(400, $"The Host '{context.Request.Host.Host}' is not served here; start the server with --allowed-hosts {context.Request.Host.Host} to allow it.",
                    code: "host_not_allowed");
            if (_options.ApiKey is { } key && context.Request.Path.StartsWithSegments("/v1")
                && context.Request.Headers.Authorization.ToString() != $"Bearer {key}")
                throw new ApiError(401, "Invalid or missing API key: send Authorization: Bearer <key>.", code: "invalid_api_key", type: "authentication_error");
            if (HttpMethods.IsPost(context.Request.Method) && !IsJson(context.Request.ContentType))
                throw new ApiError(415, $"The request body must be sent as Content-Type: application/json (got '{context.Request.ContentType}').", code: "unsupported_media_type");
            await next(context);
            if (!context.Response.HasStarted && context.Response.StatusCode is 404 or 405)
                throw context.Response.StatusCode == 404
                    ? new ApiError(404, $"No route {context.Request.Method} {context.Request.Path}.", code: "not_found")
                    : new ApiError(405, $"{context.Request.Path} does not take {context.Request.Method}.", code: "method_not_allowed");
        }
        catch (ApiError e) when (!context.Response.HasStarted)
        {
            await Error(context, e);
        }
        catch (BadHttpRequestException e) when (!context.Response.HasStarted)
        {
            await Error(context, new ApiError(e.StatusCode, e.StatusCode == 413
                ? $"The request body is larger than {_options.MaxBodyBytes:N0} bytes." : "The HTTP request is malformed."));
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            Interlocked.Increment(ref _cancelled); // the client went away; its generation has stopped and its slot is free
        }
        catch (Exception e) when (!context.Response.HasStarted)
        {
            Console.Error.WriteLine($"gptsharp serve: {context.Request.Method} {context.Request.Path} failed: {e}");
            await Error(context, new ApiError(500, "Internal error while answering this request; the server log has the details.", type: "server_error"));
        }
    }

    static bool IsJson(string? contentType) =>
        MediaTypeHeaderValue.TryParse(contentType, out var media) && media.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase);

    static Task Error(HttpContext context, ApiError error)
    {
        context.Response.Clear();
        context.Response.StatusCode = error.Status;
        if (error.RetryAfterSeconds is { } seconds) context.Response.Headers.RetryAfter = seconds.ToString();
        return context.Response.WriteAsJsonAsync(error.Body, Json);
    }

    static readonly System.Text.UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    static async Task<JsonElement> Body(HttpContext context)
    {
        string text;
        try
        {
            using var reader = new StreamReader(context.Request.Body, StrictUtf8);
            text = await reader.ReadToEndAsync(context.RequestAborted);
        }
        catch (System.Text.DecoderFallbackException)
        {
            throw new ApiError(400, "The request body is not valid UTF-8.");
        }
        return OpenAiProtocol.ParseBody(text);
    }

    ServedModel Find(string name, string? param = "model") => _models.TryGetValue(name, out var model) ? model
        : throw new ApiError(404, $"The model '{name}' does not exist; available: {string.Join(", ", _models.Keys)}.", param, "model_not_found");

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
        Task<BatchResult> Enqueue(Action<int>? onToken) => scheduler.TryEnqueue(new BatchRow(prompt, options, onToken, aborted, model.Decode))
            ?? throw new ApiError(429, $"The server is busy: {_options.MaxQueue} requests are already waiting for model '{model.Name}'. Retry shortly.",
                code: "rate_limit_exceeded", type: "rate_limit_error") { RetryAfterSeconds = 1 };
        async Task<Generation> Outcome(Task<BatchResult> queued)
        {
            var result = await queued;
            if (result.Cancelled) throw new OperationCanceledException(aborted);
            if (result.Error is { } error) throw GenerationFailed(error);
            return result.Generation;
        }

        if (!sampling.Stream)
        {
            var generation = await Outcome(Enqueue(null));
            string text = model.Text(generation, sampling.Stop);
            var usage = Usage(prompt.Length, generation.Tokens.Length);
            string finish = Finish(generation);
            object body = chat
                ? new { id, @object = "chat.completion", created, model = model.Name, choices = new[] { new { index = 0, message = new { role = "assistant", content = text }, finish_reason = finish } }, usage }
                : new { id, @object = "text_completion", created, model = model.Name, choices = new[] { new { index = 0, text, logprobs = (object?)null, finish_reason = finish } }, usage };
            await context.Response.WriteAsJsonAsync(body, Json, aborted);
            return;
        }

        // Queue first, so that a full queue is still a plain 429 rather than an event stream.
        var pieces = Channel.CreateUnbounded<string>();
        var answer = new AnswerText(model.Tokenizer, sampling.Stop, piece => pieces.Writer.TryWrite(piece));
        var work = Outcome(Enqueue(answer.Add)).ContinueWith(t =>
        {
            if (t.IsCompletedSuccessfully) answer.Finish();
            pieces.Writer.TryComplete();
            return t;
        }, TaskScheduler.Default).Unwrap();
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
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
        Generation done;
        try
        {
            done = await work;
        }
        catch (ApiError e)
        {
            // Headers are sent: the error goes out as an event, and the stream still ends properly.
            await Send(e.Body);
            await context.Response.WriteAsync("data: [DONE]\n\n", aborted);
            return;
        }
        await Send(chat
            ? new { id, @object = "chat.completion.chunk", created, model = model.Name, choices = new[] { new { index = 0, delta = new { }, finish_reason = Finish(done) } } }
            : Chunk("", null, Finish(done)));
        if (sampling.IncludeUsage)
            await Send(new { id, @object = chat ? "chat.completion.chunk" : "text_completion", created, model = model.Name, choices = Array.Empty<object>(), usage = Usage(prompt.Length, done.Tokens.Length) });
        await context.Response.WriteAsync("data: [DONE]\n\n", aborted);
        await context.Response.Body.FlushAsync(aborted);
    }

    /// <summary>One request's generation failed (the rest of its batch went on): an OpenAI error without native detail.</summary>
    static ApiError GenerationFailed(Exception error)
    {
        if (error is ApiError api) return api;
        if (error is ArgumentException) return new ApiError(400, $"This request cannot be generated: {FirstLine(error.Message)}");
        Console.Error.WriteLine($"gptsharp serve: a generation failed: {error}");
        return new ApiError(500, "Generation failed for this request (other requests are unaffected); the server log has the details.", type: "server_error");
    }

    static string FirstLine(string text) => text.Split('\n', 2)[0].Trim();

    static object Usage(int prompt, int completion) => new { prompt_tokens = prompt, completion_tokens = completion, total_tokens = prompt + completion };
    static string Finish(Generation generation) => generation.Finish == FinishReason.Stop ? "stop" : "length";
}
