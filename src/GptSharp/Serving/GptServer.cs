using System.Net;
using System.Text.Json;
using System.Threading.Channels;
using GptSharp.Inference;
using GptSharp.Tokenization;
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
    readonly ServerMetrics _metrics;
    readonly CancellationTokenSource _stopping = new();
    readonly DrainingLifetime _lifetime;   // given to the host as an instance, so disposed here   // cancels the generations still running when the shutdown grace ends
    volatile bool _draining;

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
            : ContinuousBatcher.For(m.Model, m.Decoder, new BatcherOptions(options.MaxConcurrent, options.MaxQueue, PrefixCache: options.PrefixCache)));
        _metrics = new ServerMetrics(_schedulers);
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        // Running streams get the grace period to finish, then a few seconds to tell their clients that they were stopped.
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(options.ShutdownGraceSeconds + 5));
        // SIGTERM and Ctrl+C drain the server (StopAsync) instead of closing its port at once.
        _lifetime = new DrainingLifetime(() => _ = StopAsync());
        builder.Services.AddSingleton<IHostLifetime>(_lifetime);
        builder.WebHost.UseKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxBodyBytes;
            k.Listen(bind, options.Port);
        });
        _app = builder.Build();
        _app.Lifetime.ApplicationStopping.Register(() =>
        {
            _draining = true;
            _stopping.CancelAfter(TimeSpan.FromSeconds(options.ShutdownGraceSeconds));
        });
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
        _app.MapPost("/tokenize", Tokenize);
        _app.MapPost("/detokenize", Detokenize);
        _app.MapMethods("/metrics", get, async (HttpContext context) =>
        {
            context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await _metrics.WriteAsync(context.Response.Body, context.RequestAborted);
        });
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

    /// <summary>
    /// Shuts down gracefully (SIGTERM and Ctrl+C come here): the port stays open while generations run, new generation
    /// requests get 503 <c>server_shutting_down</c>, running ones have <see cref="ServerOptions.ShutdownGraceSeconds"/> to
    /// finish, then are stopped (a stream ends with an error event and <c>[DONE]</c>, a whole answer with a 503); then the
    /// server closes its port.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellation = default)
    {
        if (Interlocked.Exchange(ref _stopRequested, 1) == 0)
        {
            _draining = true;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var grace = TimeSpan.FromSeconds(_options.ShutdownGraceSeconds);
            while (clock.Elapsed < grace && Volatile.Read(ref _generating) > 0) await Task.Delay(20, cancellation);
            _stopping.Cancel();
            // The stopped generations tell their clients so before the connections close.
            for (var wait = System.Diagnostics.Stopwatch.StartNew(); Volatile.Read(ref _generating) > 0 && wait.Elapsed.TotalSeconds < 5;) await Task.Delay(10, cancellation);
        }
        await _app.StopAsync(cancellation);
    }

    int _stopRequested, _generating;

    /// <summary>The batching scheduler of a served model.</summary>
    public IGenerationScheduler Scheduler(string model) => _schedulers[model];

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _lifetime.Dispose();
        _stopping.Dispose();
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
        try
        {
            await Checked(context, next);
        }
        finally
        {
            string path = context.Request.Path.Value ?? "";
            _metrics.Request(KnownPaths.Contains(path) ? path : "other", context.Response.StatusCode);
        }
    }

    static readonly HashSet<string> KnownPaths = ["/", "/health", "/metrics", "/tokenize", "/detokenize", "/v1/models", "/v1/chat/completions", "/v1/completions"];

    async Task Checked(HttpContext context, RequestDelegate next)
    {
        context.Response.Headers.XContentTypeOptions = "nosniff";
        try
        {
            string host = context.Request.Host.Host.Trim('[', ']');
            if (!_allowedHosts.Contains("*") && !_allowedHosts.Contains(host))
                throw new ApiError(400, $"The Host '{context.Request.Host.Host}' is not served here; start the server with --allowed-hosts {context.Request.Host.Host} to allow it.",
                    code: "host_not_allowed");
            if (_options.ApiKey is { } key && !(context.Request.Path == "/" || context.Request.Path == "/health")
                && context.Request.Headers.Authorization.ToString() != $"Bearer {key}")
                throw new ApiError(401, "Invalid or missing API key: send Authorization: Bearer <key>.", code: "invalid_api_key", type: "authentication_error");
            if (HttpMethods.IsPost(context.Request.Method) && !IsJson(context.Request.ContentType))
                throw new ApiError(415, $"The request body must be sent as Content-Type: application/json (got '{context.Request.ContentType}').", code: "unsupported_media_type");
            if (_draining && HttpMethods.IsPost(context.Request.Method))
                throw new ApiError(503, "The server is shutting down and takes no new requests.", code: "server_shutting_down", type: "server_error");
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
        catch (Exception e) when (e is OperationCanceledException or IOException && context.RequestAborted.IsCancellationRequested)
        {
            Interlocked.Increment(ref _cancelled); // the client went away (noticed as a cancellation or a failed write); its generation has stopped and its slot is free
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

    /// <summary>The model a request names, or the only one served when it names none (llama.cpp's /tokenize takes no model).</summary>
    ServedModel ModelOf(JsonElement body) => body.TryGetProperty("model", out var m) && m.ValueKind != JsonValueKind.Null
        ? Find(m.ValueKind == JsonValueKind.String ? m.GetString()! : throw new ApiError(400, "'model' must be a string.", "model"))
        : _models.Count == 1 ? _models.Values.First()
        : throw new ApiError(400, $"Several models are served: name one in 'model' ({string.Join(", ", _models.Keys)}).", "model");

    /// <summary>POST /tokenize {"content": "...", "add_special": false, "with_pieces": false} → {"tokens": [...]}.</summary>
    async Task Tokenize(HttpContext context)
    {
        var body = await Body(context);
        var model = ModelOf(body);
        if (!body.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
            throw new ApiError(400, "'content' is required and must be a string.", "content");
        string text;
        try { text = content.GetString()!; }
        catch (InvalidOperationException) { throw new ApiError(400, "'content' is not valid Unicode text (it holds a lone surrogate).", "content"); }
        bool special = body.TryGetProperty("add_special", out var a) && a.ValueKind == JsonValueKind.True;
        bool pieces = body.TryGetProperty("with_pieces", out var p) && p.ValueKind == JsonValueKind.True;
        int[] ids = [.. special ? [model.Tokenizer.BosId] : Array.Empty<int>(), .. model.Tokenizer.Encode(text)];
        object tokens = pieces ? ids.Select(id => new { id, piece = model.Tokenizer.Decode([id]) }) : ids;
        await context.Response.WriteAsJsonAsync(new { tokens }, Json, context.RequestAborted);
    }

    /// <summary>POST /detokenize {"tokens": [...]} → {"content": "..."}.</summary>
    async Task Detokenize(HttpContext context)
    {
        var body = await Body(context);
        var model = ModelOf(body);
        if (!body.TryGetProperty("tokens", out var tokens) || tokens.ValueKind != JsonValueKind.Array)
            throw new ApiError(400, "'tokens' is required and must be an array of token ids.", "tokens");
        var ids = new List<int>();
        foreach (var token in tokens.EnumerateArray())
        {
            string field = $"tokens[{ids.Count}]";
            if (token.ValueKind != JsonValueKind.Number || !token.TryGetInt32(out int id) || id < 0 || id >= model.Tokenizer.VocabSize)
                throw new ApiError(400, $"{field} must be a token id from 0 to {model.Tokenizer.VocabSize - 1}.", field);
            ids.Add(id);
        }
        await context.Response.WriteAsJsonAsync(new { content = model.Tokenizer.Decode(ids) }, Json, context.RequestAborted);
    }

    async Task ChatCompletions(HttpContext context)
    {
        var request = OpenAiProtocol.Chat(await Body(context));
        var model = Find(request.Model);
        if (request.Shape.NeedsToolTokens(request.Messages) && !model.Template.SupportsTools)
            throw new ApiError(400, $"Model '{model.Name}' cannot take tools: its tokenizer has no tool-call tokens (it was trained before tool calls existed).",
                request.Shape.Calls ? "tools" : "messages");
        int[] prompt = model.Template.RenderPrompt(request.Shape.Offer(request.Messages));
        await Respond(context, model, prompt, request.Sampling, chat: true, request.Shape);
    }

    async Task Completions(HttpContext context)
    {
        var request = OpenAiProtocol.Completion(await Body(context));
        var model = Find(request.Model);
        int[] prompt = [model.Tokenizer.BosId, .. model.Tokenizer.Encode(request.Prompt)];
        await Respond(context, model, prompt, request.Sampling, chat: false, AnswerShape.Free);
    }

    async Task Respond(HttpContext context, ServedModel model, int[] prompt, RequestSampling sampling, bool chat, AnswerShape shape)
    {
        Interlocked.Increment(ref _generating);
        try { await Generate(context, model, prompt, sampling, chat, shape); }
        finally { Interlocked.Decrement(ref _generating); }
    }

    async Task Generate(HttpContext context, ServedModel model, int[] prompt, RequestSampling sampling, bool chat, AnswerShape shape)
    {
        var arrived = System.Diagnostics.Stopwatch.StartNew();
        if (prompt.Length >= model.ContextLength)
            throw new ApiError(400, $"The prompt is {prompt.Length} tokens; model '{model.Name}' reads at most {model.ContextLength} (prompt and answer together).",
                chat ? "messages" : "prompt", "context_length_exceeded");
        if (sampling.MaxTokens > model.ContextLength)
            throw new ApiError(400, $"'max_tokens' {sampling.MaxTokens} is more than model '{model.Name}''s context of {model.ContextLength} tokens.", "max_tokens");
        var options = new SamplingOptions(Temperature: sampling.Temperature, TopP: sampling.TopP,
            MaxNewTokens: Math.Min(sampling.MaxTokens ?? model.ContextLength, model.ContextLength - prompt.Length),
            Seed: sampling.Seed ?? Random.Shared.NextInt64(), StopTokens: chat ? [model.Tokenizer.EndId, model.Tokenizer.BosId] : [model.Tokenizer.BosId, model.Tokenizer.EosId],
            StopSequences: sampling.Stop, PresencePenalty: sampling.PresencePenalty, FrequencyPenalty: sampling.FrequencyPenalty, TopLogprobs: sampling.TopLogprobs);
        if (shape.Constrained && options.MaxNewTokens < shape.MinTokens)
            throw new ApiError(400, $"'max_tokens' leaves room for {options.MaxNewTokens} tokens; the response format or tool call asked for needs up to {shape.MinTokens} to be complete.",
                sampling.MaxTokens is null ? "messages" : "max_tokens");
        int toolCall = shape.Calls ? model.Tokenizer.SpecialId(SpecialTokens.ToolCall) : -1;
        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N")[..24];
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var aborted = context.RequestAborted;
        // A generation ends early when its client leaves, the server shuts down, or it runs past the request timeout.
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(aborted, _stopping.Token);
        if (_options.RequestTimeoutSeconds > 0) limit.CancelAfter(TimeSpan.FromSeconds(_options.RequestTimeoutSeconds));

        int n = sampling.Choices;
        var answers = new AnswerText[n];
        var calling = new bool[n];   // the choice began a tool call: its tokens are the call, not text
        var held = new string[n];   // text a choice's last token released, not yet sent
        var events = Channel.CreateUnbounded<(int Choice, string Piece, TokenLogprob? Logprob)>();
        int firstToken = 0;
        void OnFirstToken()
        {
            if (Interlocked.Exchange(ref firstToken, 1) == 0) _metrics.FirstToken(model.Name, arrived.Elapsed);
        }
        var scheduler = _schedulers[model.Name];
        if (n > scheduler.QueueLimit)
            throw new ApiError(400, $"'n' is {n}; this server queues at most {scheduler.QueueLimit} choices per model (--max-queue), so this request could never be taken.", "n");
        var rows = new List<BatchRow>();
        for (int i = 0; i < n; i++)
        {
            int choice = i;
            TokenLogprob? pending = null;
            held[i] = "";
            answers[i] = new AnswerText(model.Tokenizer, sampling.Stop, text => held[choice] += text);
            void OnToken(int token)
            {
                OnFirstToken();
                if (!sampling.Stream) return;
                if (token == toolCall) calling[choice] = true;
                if (calling[choice]) return;
                bool counts = !answers[choice].Stopped && !model.Tokenizer.IsSpecial(token);
                answers[choice].Add(token);
                var logprob = counts ? pending : null;
                if (held[choice].Length > 0 || logprob is not null) events.Writer.TryWrite((choice, held[choice], logprob));
                (held[choice], pending) = ("", null);
            }
            var row = new BatchRow(prompt, options with { Seed = options.Seed + i }, OnToken, limit.Token, model.Decode,
                Constraint: shape.NewConstraint(model), OnLogprob: sampling.Stream ? logprob => pending = logprob : null);
            rows.Add(row);
        }
        // A request's choices are queued together or not at all; the limit counts choices (each takes a slot to decode).
        var queued = scheduler.TryEnqueueAll(rows)
            ?? throw new ApiError(429, $"The server is busy: {scheduler.Waiting} choices are waiting for model '{model.Name}' and --max-queue allows {scheduler.QueueLimit}; " +
                                       $"this request needs room for {n}. Retry shortly.", code: "rate_limit_exceeded", type: "rate_limit_error") { RetryAfterSeconds = 1 };
        async Task<BatchResult> Outcome(Task<BatchResult> task)
        {
            var result = await task;
            if (result.Cancelled)
            {
                if (aborted.IsCancellationRequested) throw new OperationCanceledException(aborted);
                if (_stopping.IsCancellationRequested) throw new ApiError(503, "The server is shutting down; this generation was stopped.", code: "server_shutting_down", type: "server_error");
                throw new ApiError(408, $"The generation ran past the server's limit of {_options.RequestTimeoutSeconds:G} s (--request-timeout).", code: "request_timeout");
            }
            if (result.Error is { } error) throw GenerationFailed(error);
            return result;
        }
        var outcomes = Task.WhenAll(queued.Select(Outcome));
        object Usage(BatchResult[] results)
        {
            int completion = results.Sum(r => r.Generation.Tokens.Length);
            int cached = results[0].Timings?.CachedTokens ?? 0;
            _metrics.Generated(model.Name, prompt.Length, completion, cached, arrived.Elapsed);
            return new
            {
                prompt_tokens = prompt.Length, completion_tokens = completion, total_tokens = prompt.Length + completion,
                prompt_tokens_details = new { cached_tokens = cached },
            };
        }

        try
        {
            if (!sampling.Stream)
            {
                var results = await outcomes;
                var choices = results.Select((result, i) =>
                {
                    var generation = result.Generation;
                    var call = shape.ReadCall(model.Tokenizer, generation.Tokens);
                    var (text, entries) = Replay(model, BeforeCall(generation, shape.CallStart(model.Tokenizer, generation.Tokens)), sampling.Stop);
                    object? logprobs = sampling.TopLogprobs is null ? null : chat ? new { content = entries.Select(e => ChatLogprob(model, e)) } : CompletionLogprobs(model, entries);
                    if (call is not null)
                        return new { index = i, message = (object)new { role = "assistant", content = text.Length == 0 ? null : text, tool_calls = new[] { CallJson(call) } }, logprobs, finish_reason = "tool_calls" };
                    return chat
                        ? (object)new { index = i, message = new { role = "assistant", content = text }, logprobs, finish_reason = Finish(generation) }
                        : new { index = i, text, logprobs, finish_reason = Finish(generation) };
                }).ToArray();
                object body = new { id, @object = chat ? "chat.completion" : "text_completion", created, model = model.Name, choices, usage = Usage(results), timings = Timings(results) };
                await context.Response.WriteAsJsonAsync(body, Json, aborted);
                return;
            }

            _ = outcomes.ContinueWith(_ => events.Writer.TryComplete(), TaskScheduler.Default);
            context.Response.ContentType = "text/event-stream";
            context.Response.Headers.CacheControl = "no-cache";
            async Task Send(object chunk) => await context.Response.WriteAsync($"data: {JsonSerializer.Serialize(chunk, Json)}\n\n", aborted);
            object Chunk(int choice, string? content, string? role, string? finish, TokenLogprob? logprob)
            {
                object? logprobs = logprob is null ? null : chat ? new { content = new[] { ChatLogprob(model, logprob) } } : CompletionLogprobs(model, [logprob]);
                return chat
                    ? new { id, @object = "chat.completion.chunk", created, model = model.Name, choices = new[] { new { index = choice, delta = role is null ? (object)new { content } : new { role, content }, logprobs, finish_reason = finish } } }
                    : new { id, @object = "text_completion", created, model = model.Name, choices = new[] { new { index = choice, text = content ?? "", logprobs, finish_reason = finish } } };
            }
            if (chat)
                for (int i = 0; i < n; i++) await Send(Chunk(i, "", "assistant", null, null));
            await context.Response.Body.FlushAsync(aborted);
            await foreach (var (choice, piece, logprob) in events.Reader.ReadAllAsync(aborted))
            {
                await Send(Chunk(choice, piece, null, null, logprob));
                await context.Response.Body.FlushAsync(aborted);
            }
            BatchResult[] done;
            try
            {
                done = await outcomes;
            }
            catch (ApiError e)
            {
                // Headers are sent: the error goes out as an event, and the stream still ends properly.
                await Send(e.Body);
                await context.Response.WriteAsync("data: [DONE]\n\n", aborted);
                return;
            }
            for (int i = 0; i < n; i++)
            {
                // What was held back (what might have begun a stop sequence) goes out before the last chunk.
                answers[i].Finish();
                if (held[i].Length > 0) await Send(Chunk(i, held[i], null, null, null));
                var call = shape.ReadCall(model.Tokenizer, done[i].Generation.Tokens);
                if (call is not null)
                    await Send(new { id, @object = "chat.completion.chunk", created, model = model.Name, choices = new[] { new { index = i, delta = (object)new { tool_calls = new[] { CallJson(call, index: 0) } }, logprobs = (object?)null, finish_reason = (string?)null } } });
                await Send(chat
                    ? new { id, @object = "chat.completion.chunk", created, model = model.Name, choices = new[] { new { index = i, delta = new { }, logprobs = (object?)null, finish_reason = call is null ? Finish(done[i].Generation) : "tool_calls" } } }
                    : Chunk(i, "", null, Finish(done[i].Generation), null));
            }
            object final = new { id, @object = chat ? "chat.completion.chunk" : "text_completion", created, model = model.Name, choices = Array.Empty<object>(), usage = Usage(done), timings = Timings(done) };
            if (sampling.IncludeUsage) await Send(final);
            await context.Response.WriteAsync("data: [DONE]\n\n", aborted);
            await context.Response.Body.FlushAsync(aborted);
        }
        finally
        {
            // Leaving before the generations ended (the client went away, a write failed): stop them, so their slots
            // come free now rather than when they would have finished.
            if (!outcomes.IsCompleted) limit.Cancel();
        }
    }

    /// <summary>One request's generation failed (the rest of its batch went on): an OpenAI error without native detail.</summary>
    static ApiError GenerationFailed(Exception error)
    {
        if (error is ApiError api) return api;
        if (error is ArgumentException) return new ApiError(400, $"This request cannot be generated: {FirstLine(error.Message)}");
        Console.Error.WriteLine($"gptsharp serve: a generation failed: {error}");
        return new ApiError(500, "Generation failed for this request (other requests are unaffected); the server log has the details.", type: "server_error");
    }

    /// <summary>The part of a generation before its tool call (all of it when it makes none).</summary>
    static Generation BeforeCall(Generation generation, int start) => start < 0 ? generation
        : generation with { Tokens = generation.Tokens[..start], Logprobs = generation.Logprobs?[..start] };

    /// <summary>A tool call in OpenAI's shape (<paramref name="index"/> only in stream deltas).</summary>
    static object CallJson(FunctionCall call, int? index = null) => index is null
        ? new { id = call.Id, type = "function", function = new { name = call.Name, arguments = call.Arguments } }
        : new { index, id = call.Id, type = "function", function = new { name = call.Name, arguments = call.Arguments } };

    /// <summary>The answer's text and the tokens it is made of (special tokens and tokens after a stop sequence left out), as streaming hands them out.</summary>
    static (string Text, List<TokenLogprob> Logprobs) Replay(ServedModel model, Generation generation, IReadOnlyList<string> stops)
    {
        var answer = new AnswerText(model.Tokenizer, stops);
        var logprobs = new List<TokenLogprob>();
        for (int i = 0; i < generation.Tokens.Length; i++)
        {
            int token = generation.Tokens[i];
            if (!answer.Stopped && !model.Tokenizer.IsSpecial(token) && generation.Logprobs?[i] is { } logprob) logprobs.Add(logprob);
            answer.Add(token);
        }
        return (answer.Finish(), logprobs);
    }

    static object ChatLogprob(ServedModel model, TokenLogprob logprob)
    {
        object Entry(int token, double value) => new { token = model.Tokenizer.Decode([token]), logprob = value, bytes = model.Tokenizer.TokenBytes(token).Select(b => (int)b) };
        return new
        {
            token = model.Tokenizer.Decode([logprob.Token]), logprob = logprob.Logprob, bytes = model.Tokenizer.TokenBytes(logprob.Token).Select(b => (int)b),
            top_logprobs = logprob.Top.Select(t => Entry(t.Token, t.Logprob)),
        };
    }

    /// <summary>The legacy completions shape: parallel lists of tokens, their log-probabilities, the alternatives and text offsets.</summary>
    static object CompletionLogprobs(ServedModel model, IReadOnlyList<TokenLogprob> logprobs)
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

    static string FirstLine(string text) => text.Split('\n', 2)[0].Trim();

    static string Finish(Generation generation) => generation.Finish == FinishReason.Stop ? "stop" : "length";
}

/// <summary>The host's lifetime under <see cref="GptServer"/>: SIGTERM, SIGINT and SIGQUIT start the server's drain
/// instead of stopping the host at once (which would close the port and refuse new clients without a word).</summary>
sealed class DrainingLifetime(Action drain) : IHostLifetime, IDisposable
{
    readonly List<System.Runtime.InteropServices.PosixSignalRegistration> _signals = [];

    public Task WaitForStartAsync(CancellationToken cancellationToken)
    {
        foreach (var signal in new[] { System.Runtime.InteropServices.PosixSignal.SIGTERM, System.Runtime.InteropServices.PosixSignal.SIGINT, System.Runtime.InteropServices.PosixSignal.SIGQUIT })
            _signals.Add(System.Runtime.InteropServices.PosixSignalRegistration.Create(signal, context =>
            {
                context.Cancel = true;
                drain();
            }));
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public void Dispose()
    {
        foreach (var signal in _signals) signal.Dispose();
    }
}
