using System.Net;
using System.Text.Json;
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
/// An OpenAI- and Anthropic-compatible HTTP server over loaded runs (ASP.NET Core minimal APIs): <c>GET /v1/models</c>,
/// <c>POST /v1/chat/completions</c>, <c>/v1/completions</c>, <c>/v1/responses</c> and <c>/v1/messages</c> (each streamed
/// as server-sent events or whole), <c>/v1/embeddings</c>, <c>GET /health</c>, and the web chat at <c>/</c>. Bad requests
/// get each API's own error JSON with a 4xx status;
/// only loopback names, the bound host and <see cref="ServerOptions.AllowedHosts"/> are served (no DNS rebinding), and a
/// POST must be <c>application/json</c> (no cross-site form posts).
/// </summary>
public sealed partial class GptServer : IAsyncDisposable
{
    static readonly JsonSerializerOptions Json = CompletionJson.Options;
    readonly WebApplication _app;
    readonly Dictionary<string, ServedModel> _models;
    readonly Dictionary<string, ServedEncoder> _encoders;
    readonly ServerOptions _options;
    readonly Dictionary<string, IGenerationScheduler> _schedulers;
    readonly HashSet<string> _allowedHosts;
    readonly ServerMetrics _metrics;
    readonly ResponseStore _responses;
    readonly CancellationTokenSource _stopping = new();
    readonly DrainingLifetime _lifetime;   // given to the host as an instance, so disposed here   // cancels the generations still running when the shutdown grace ends
    volatile bool _draining;

    /// <param name="encoders">BERT runs served for <c>/v1/embeddings</c> only, beside the GPT runs.</param>
    public GptServer(IReadOnlyList<ServedModel> models, ServerOptions options, IReadOnlyList<ServedEncoder>? encoders = null)
    {
        encoders ??= [];
        if (models.Count + encoders.Count == 0) throw new ArgumentException("Serve at least one run.", nameof(models));
        var duplicate = models.Select(m => m.Name).Concat(encoders.Select(e => e.Name)).GroupBy(n => n).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new ArgumentException($"Two runs are both named '{duplicate.Key}'; name them with name=folder.", nameof(models));
        _options = options.Validate();
        var bind = options.BindAddress();
        ExposedWithoutKey = !IPAddress.IsLoopback(bind) && options.ApiKey is null;
        _allowedHosts = new HashSet<string>(["localhost", "127.0.0.1", "::1", options.Host.Trim().Trim('[', ']'), .. options.AllowedHosts ?? []],
            StringComparer.OrdinalIgnoreCase);
        _models = models.ToDictionary(m => m.Name);
        _encoders = encoders.ToDictionary(e => e.Name);
        _schedulers = models.ToDictionary(m => m.Name, m => (IGenerationScheduler)ContinuousBatcher.For(m.Model, m.Decoder, new BatcherOptions(options.MaxConcurrent, options.MaxQueue, PrefixCache: options.PrefixCache, PromptLookupTokens: options.PromptLookupTokens, PrefillChunk: options.PrefillChunk)));
        _metrics = new ServerMetrics(_schedulers);
        _responses = new ResponseStore(options.StoredResponses);
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
        _app.MapMethods("/health", get, () => Results.Json(new { status = "ok", models = _models.Keys.Concat(_encoders.Keys) }, Json));
        _app.MapMethods("/v1/models", get, () => Results.Json(new
        {
            @object = "list",
            data = _models.Values.Concat<IEmbeddingModel>(_encoders.Values).Select(ModelObject)
                .Concat(_models.Values.SelectMany(m => m.Adapters.Keys.Order(StringComparer.Ordinal).Select(a => AdapterObject(m, a)))),
        }, Json));
        _app.MapPost("/v1/adapters", LoadAdapter);
        _app.MapDelete("/v1/adapters/{id}", UnloadAdapter);
        _app.MapMethods("/v1/models/{id}", get, (string id) => Results.Json(_encoders.TryGetValue(id, out var e) ? ModelObject(e)
            : Target(id, param: null) is var (model, adapter) && adapter is not null ? AdapterObject(model, adapter.Name) : ModelObject(model), Json));
        _app.MapPost("/v1/chat/completions", ChatCompletions);
        _app.MapPost("/v1/completions", Completions);
        _app.MapPost("/v1/embeddings", Embeddings);
        _app.MapPost("/v1/responses", CreateResponse);
        _app.MapGet("/v1/responses/{id}", GetResponse);
        _app.MapDelete("/v1/responses/{id}", DeleteResponse);
        _app.MapPost("/v1/messages", CreateMessage);
        _app.MapPost("/v1/messages/count_tokens", CountMessageTokens);
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

    static object ModelObject(IEmbeddingModel m) => new { id = m.Name, @object = "model", created = m.Created, owned_by = "gptsharp" };

    static object AdapterObject(ServedModel m, string adapter) =>
        new { id = $"{m.Name}:{adapter}", @object = "model", created = m.Created, owned_by = "gptsharp", parent = m.Name };

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

    static readonly HashSet<string> KnownPaths = ["/", "/health", "/metrics", "/tokenize", "/detokenize", "/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages", "/v1/messages/count_tokens", "/v1/adapters"];

    async Task Checked(HttpContext context, RequestDelegate next)
    {
        context.Response.Headers.XContentTypeOptions = "nosniff";
        try
        {
            string host = context.Request.Host.Host.Trim('[', ']');
            if (!_allowedHosts.Contains("*") && !_allowedHosts.Contains(host))
                throw new ApiError(400, $"The Host '{context.Request.Host.Host}' is not served here; start the server with --allowed-hosts {context.Request.Host.Host} to allow it.",
                    code: "host_not_allowed");
            // Loading and unloading adapters takes the admin key, and nothing else does.
            if (context.Request.Path.StartsWithSegments("/v1/adapters"))
            {
                if (_options.AdminKey is not { } admin)
                    throw new ApiError(403, "Adapters are loaded and unloaded at run time only on a server started with --admin-key.", code: "admin_disabled", type: "permission_error");
                if (context.Request.Headers.Authorization.ToString() != $"Bearer {admin}" && context.Request.Headers["x-api-key"].ToString() != admin)
                    throw new ApiError(401, "Invalid or missing admin key: send Authorization: Bearer <admin key>.", code: "invalid_api_key", type: "authentication_error");
            }
            // The key comes as OpenAI's clients send it (Authorization: Bearer) or as Anthropic's do (x-api-key).
            else if (_options.ApiKey is { } key && !(context.Request.Path == "/" || context.Request.Path == "/health")
                && context.Request.Headers.Authorization.ToString() != $"Bearer {key}" && context.Request.Headers["x-api-key"].ToString() != key)
                throw new ApiError(401, "Invalid or missing API key: send Authorization: Bearer <key> or x-api-key: <key>.", code: "invalid_api_key", type: "authentication_error");
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
        return context.Response.WriteAsJsonAsync(IsAnthropic(context.Request.Path) ? MessagesJson.Error(error) : error.Body, Json);
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
        : _encoders.ContainsKey(name) ? throw new ApiError(400, $"The model '{name}' is an encoder (BERT): it serves /v1/embeddings only.", param, "model_not_supported")
        : throw new ApiError(404, $"The model '{name}' does not exist; available: {string.Join(", ", _models.Keys.Concat(_encoders.Keys))}.", param, "model_not_found");

    /// <summary>
    /// The model a generation request names and the LoRA adapter it decodes with: <c>base</c>, or <c>base:adapter</c> for an
    /// adapter loaded on that base (<see cref="ServedModel.LoadAdapter"/>).
    /// </summary>
    (ServedModel Model, Inference.Cpu.CpuAdapter? Adapter) Target(string name, string? param = "model")
    {
        int colon = name.IndexOf(':');
        if (colon < 0 || _models.ContainsKey(name)) return (Find(name, param), null);
        var model = Find(name[..colon], param);
        return model.Adapters.TryGetValue(name[(colon + 1)..], out var adapter) ? (model, adapter)
            : throw new ApiError(404, $"The model '{name}' does not exist: '{model.Name}' serves {(model.Adapters.Count == 0 ? "no adapters" : "the adapters " + string.Join(", ", model.Adapters.Keys))}.", param, "model_not_found");
    }

    /// <summary>The model an embeddings request names (a GPT or a BERT run), or the only one served.</summary>
    IEmbeddingModel EmbedderOf(JsonElement body) => body.TryGetProperty("model", out var m) && m.ValueKind != JsonValueKind.Null
        ? m.ValueKind == JsonValueKind.String && _encoders.TryGetValue(m.GetString()!, out var encoder) ? encoder : ModelOf(body)
        : _models.Count + _encoders.Count == 1 ? _models.Values.Concat<IEmbeddingModel>(_encoders.Values).Single()
        : throw new ApiError(400, $"Several models are served: name one in 'model' ({string.Join(", ", _models.Keys.Concat(_encoders.Keys))}).", "model");

    /// <summary>The model a request names, or the only one served when it names none (llama.cpp's /tokenize takes no model).</summary>
    ServedModel ModelOf(JsonElement body) => body.TryGetProperty("model", out var m) && m.ValueKind != JsonValueKind.Null
        ? Find(m.ValueKind == JsonValueKind.String ? m.GetString()! : throw new ApiError(400, "'model' must be a string.", "model"))
        : _models.Count == 1 ? _models.Values.First()
        : throw new ApiError(400, $"Several models are served: name one in 'model' ({string.Join(", ", _models.Keys)}).", "model");

    /// <summary>
    /// POST /v1/embeddings (OpenAI's shape), from a GPT or a BERT run: <c>input</c> a string, an array of strings, an array of token ids or an array
    /// of such arrays; <c>encoding_format</c> <c>float</c> (default) or <c>base64</c> (little-endian float32, as the
    /// official SDKs ask); <c>dimensions</c> only the model's own width. Each input is pooled from the final hidden states
    /// (<see cref="IEmbeddingModel.Embed"/>); one longer than the model reads is refused by its index, never cut.
    /// </summary>
    async Task Embeddings(HttpContext context)
    {
        var body = await Body(context);
        var model = EmbedderOf(body);
        if (!body.TryGetProperty("input", out var input)) throw new ApiError(400, "'input' is required: a string, an array of strings or of token ids.", "input");
        var inputs = EmbeddingInputs(input, model);
        string format = body.TryGetProperty("encoding_format", out var f) && f.ValueKind != JsonValueKind.Null
            ? f.ValueKind == JsonValueKind.String ? f.GetString()! : throw new ApiError(400, "'encoding_format' must be a string.", "encoding_format")
            : "float";
        if (format is not ("float" or "base64")) throw new ApiError(400, $"'encoding_format' is '{format}'; expected 'float' or 'base64'.", "encoding_format");
        int width = model.Width;
        if (body.TryGetProperty("dimensions", out var d) && d.ValueKind != JsonValueKind.Null && (d.ValueKind != JsonValueKind.Number || !d.TryGetInt32(out int asked) || asked != width))
            throw new ApiError(400, $"'dimensions' must be {width}, the width of '{model.Name}' (its embeddings are not truncatable).", "dimensions");

        var data = new List<object>();
        int tokens = 0;
        for (int i = 0; i < inputs.Count; i++)
        {
            string field = input.ValueKind == JsonValueKind.Array && input[0].ValueKind != JsonValueKind.Number ? $"input[{i}]" : "input";   // one text or one token list: "input"
            float[] vector;
            try { vector = model.Embed(inputs[i]); }
            catch (ArgumentException e) { throw new ApiError(400, $"{field}: {e.Message}", field); }
            tokens += inputs[i].Length;
            object embedding = format == "float" ? vector : Convert.ToBase64String(System.Runtime.InteropServices.MemoryMarshal.AsBytes(vector.AsSpan()));
            data.Add(new { @object = "embedding", index = i, embedding });
        }
        await context.Response.WriteAsJsonAsync(new { @object = "list", data, model = model.Name, usage = new { prompt_tokens = tokens, total_tokens = tokens } },
            Json, context.RequestAborted);
    }

    /// <summary>The token ids of each input of an embeddings request, refusing a malformed one by its index.</summary>
    static List<int[]> EmbeddingInputs(JsonElement input, IEmbeddingModel model)
    {
        int[] Text(JsonElement element, string field) => StringField(element, field) is { Length: > 0 } text
            ? model.Tokenizer.Encode(text) : throw new ApiError(400, $"'{field}' is empty; an embedding needs text.", field);
        int[] Ids(JsonElement element, string field) => TokenIds(element, field, model) is { Length: > 0 } ids
            ? ids : throw new ApiError(400, $"'{field}' is empty; an embedding needs tokens.", field);
        if (input.ValueKind == JsonValueKind.String) return [Text(input, "input")];
        if (input.ValueKind != JsonValueKind.Array || input.GetArrayLength() == 0)
            throw new ApiError(400, "'input' must be a string or a non-empty array of strings or of token ids.", "input");
        var items = input.EnumerateArray().ToList();
        if (items.All(i => i.ValueKind == JsonValueKind.Number)) return [Ids(input, "input")];
        return [.. items.Select((item, i) => item.ValueKind switch
        {
            JsonValueKind.String => Text(item, $"input[{i}]"),
            JsonValueKind.Array => Ids(item, $"input[{i}]"),
            _ => throw new ApiError(400, $"'input[{i}]' must be a string or an array of token ids.", $"input[{i}]"),
        })];
    }

    /// <summary>POST /tokenize {"content": "...", "add_special": false, "with_pieces": false} → {"tokens": [...]}.</summary>
    async Task Tokenize(HttpContext context)
    {
        var body = await Body(context);
        var model = ModelOf(body);
        if (!body.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
            throw new ApiError(400, "'content' is required and must be a string.", "content");
        string text = StringField(content, "content");
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
        await context.Response.WriteAsJsonAsync(new { content = model.Tokenizer.Decode(TokenIds(tokens, "tokens", model)) }, Json, context.RequestAborted);
    }

    /// <summary>A JSON string's text, refusing one that is not valid Unicode (a lone surrogate) by its field.</summary>
    static string StringField(JsonElement element, string field)
    {
        try { return element.GetString()!; }
        catch (InvalidOperationException) { throw new ApiError(400, $"'{field}' is not valid Unicode text (it holds a lone surrogate).", field); }
    }

    /// <summary>A JSON array of token ids of <paramref name="model"/>'s vocabulary, refusing a bad one by its index.</summary>
    static int[] TokenIds(JsonElement array, string field, IEmbeddingModel model)
    {
        var ids = new List<int>();
        foreach (var token in array.EnumerateArray())
        {
            string at = $"{field}[{ids.Count}]";
            if (token.ValueKind != JsonValueKind.Number || !token.TryGetInt32(out int id) || id < 0 || id >= model.Tokenizer.VocabSize)
                throw new ApiError(400, $"{at} must be a token id from 0 to {model.Tokenizer.VocabSize - 1}.", at);
            ids.Add(id);
        }
        return [.. ids];
    }

    async Task ChatCompletions(HttpContext context)
    {
        var request = OpenAiProtocol.Chat(await Body(context));
        var (model, adapter) = Target(request.Model);
        int[] prompt = ChatPrompt(model, request.Shape, request.Messages, "messages");
        await Respond(context, model, prompt, request.Sampling, chat: true, request.Shape, adapter, request.Model);
    }

    /// <summary>
    /// The prompt a chat-shaped request (chat, Responses, Messages) is answered from, refusing tools — offered, or turns of
    /// them in the conversation — that the model's tokenizer cannot write; <paramref name="conversationField"/> names where
    /// the turns came from, <paramref name="messagePrefix"/> starts the message as the API starts its errors.
    /// </summary>
    static int[] ChatPrompt(ServedModel model, AnswerShape shape, IReadOnlyList<ChatMessage> turns, string conversationField, string messagePrefix = "Model")
    {
        if (shape.NeedsToolTokens(turns) && !model.Template.SupportsTools)
            throw new ApiError(400, $"{messagePrefix} '{model.Name}' cannot take tools: its tokenizer has no tool-call tokens (it was trained before tool calls existed).",
                shape.Calls ? "tools" : conversationField);
        return shape.Prompt(model.Template, turns);
    }

    async Task Completions(HttpContext context)
    {
        var request = OpenAiProtocol.Completion(await Body(context));
        var (model, adapter) = Target(request.Model);
        int[] prompt = [model.Tokenizer.BosId, .. model.Tokenizer.Encode(request.Prompt)];
        await Respond(context, model, prompt, request.Sampling, chat: false, AnswerShape.Free, adapter, request.Model);
    }

    async Task Respond(HttpContext context, ServedModel model, int[] prompt, RequestSampling sampling, bool chat, AnswerShape shape,
        Inference.Cpu.CpuAdapter? adapter, string name) =>
        await Run(context, model, prompt, sampling, chat, shape, async (choices, outcomes, usage) =>
        {
            var json = new CompletionJson(model, sampling, chat, shape, name);
            object Usage(BatchResult[] results)
            {
                var used = usage(results);
                return new
                {
                    prompt_tokens = used.Prompt, completion_tokens = used.Completion, total_tokens = used.Prompt + used.Completion,
                    prompt_tokens_details = new { cached_tokens = used.Cached },
                };
            }
            if (sampling.Stream) await EventStream.WriteAsync(context, choices, outcomes, json, chat, sampling.IncludeUsage, Usage);
            else
            {
                var results = await outcomes;
                await context.Response.WriteAsJsonAsync(json.Whole(results, Usage(results)), Json, context.RequestAborted);
            }
        }, adapter: adapter);

    /// <summary>Writes one API's answer from a request's queued generations: its rows, their outcomes, and the token counts of finished results (counted in the metrics once).</summary>
    delegate Task Answer(RequestChoices choices, Task<BatchResult[]> outcomes, Func<BatchResult[], TokenUsage> usage);

    /// <summary>
    /// Queues a request's choices on its model's batcher (all or none; a full queue is a 429) and hands them to
    /// <paramref name="answer"/>, the writer of one API's shape; generations still running when it returns are stopped.
    /// </summary>
    async Task Run(HttpContext context, ServedModel model, int[] prompt, RequestSampling sampling, bool chat, AnswerShape shape, Answer answer, RequestFields? fields = null,
        Inference.Cpu.CpuAdapter? adapter = null)
    {
        Interlocked.Increment(ref _generating);
        try
        {
            var arrived = System.Diagnostics.Stopwatch.StartNew();
            using var choices = new RequestChoices(model, prompt, sampling, chat, shape, _options.RequestTimeoutSeconds, context.RequestAborted, _stopping.Token,
                onFirstToken: () => _metrics.FirstToken(model.Name, arrived.Elapsed), fields, adapter);
            var scheduler = _schedulers[model.Name];
            int n = choices.Rows.Count;
            if (n > scheduler.QueueLimit)
                throw new ApiError(400, $"'n' is {n}; this server queues at most {scheduler.QueueLimit} choices per model (--max-queue), so this request could never be taken.", "n");
            // A request's choices are queued together or not at all; the limit counts choices (each takes a slot to decode).
            var queued = scheduler.TryEnqueueAll(choices.Rows)
                ?? throw new ApiError(429, $"The server is busy: {scheduler.Waiting} choices are waiting for model '{model.Name}' and --max-queue allows {scheduler.QueueLimit}; " +
                                           $"this request needs room for {n}. Retry shortly.", code: "rate_limit_exceeded", type: "rate_limit_error") { RetryAfterSeconds = 1 };
            var outcomes = choices.Outcomes(queued);
            TokenUsage Usage(BatchResult[] results)
            {
                var used = new TokenUsage(prompt.Length, results.Sum(r => r.Generation.Tokens.Length), results[0].Timings?.CachedTokens ?? 0);
                _metrics.Generated(model.Name, used.Prompt, used.Completion, used.Cached, arrived.Elapsed);
                return used;
            }
            try { await answer(choices, outcomes, Usage); }
            finally
            {
                // Leaving before the generations ended (the client went away, a write failed): stop them, so their slots
                // come free now rather than when they would have finished.
                if (!outcomes.IsCompleted) choices.Cancel();
            }
        }
        finally { Interlocked.Decrement(ref _generating); }
    }
}
