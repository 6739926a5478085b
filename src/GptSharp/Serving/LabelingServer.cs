using System.Net;
using System.Text.Json;
using GptSharp.Alignment;
using GptSharp.Runtime;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace GptSharp.Serving;

/// <summary>
/// The labeling page for people: <c>/</c> shows one prompt with its answers (keys 1–9 pick the best, T a tie, B all
/// bad, U undo) and the progress; <c>GET /api/next</c>, <c>POST /api/judge</c> and <c>POST /api/undo</c> drive a
/// <see cref="LabelingSession"/>, whose log is on disk before each answer returns. On start and after every judgment the
/// comparisons are rewritten (atomically) from the log as preference JSONL for <c>reward</c> and <c>dpo</c>, so a crash
/// between the two writes is mended by the next start; temporary files a crashed write left are deleted. Listens on
/// loopback only; every error is JSON <c>{"error": "..."}</c>.
/// </summary>
public sealed class LabelingServer : IAsyncDisposable
{
    static readonly JsonSerializerOptions Json = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    static readonly JsonSerializerOptions RequestJson = new(JsonSerializerDefaults.Web);
    readonly WebApplication _app;
    readonly LabelingSession _session;
    readonly string _pairsPath;

    public LabelingServer(LabelingSession session, string pairsPath, int port = 0)
    {
        (_session, _pairsPath) = (session, pairsPath);
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, port));
        _app = builder.Build();
        AtomicFile.RemoveLeftovers(pairsPath);
        WritePairs();
        _app.Use(async (context, next) =>
        {
            // Loopback names only (no DNS rebinding; names are case-insensitive) and JSON posts only (no cross-site form posts).
            string host = context.Request.Host.Host;
            if (!LoopbackNames.Contains(host))
            {
                await Error(context, StatusCodes.Status421MisdirectedRequest, $"The Host '{host}' is not served here: open the page at localhost or 127.0.0.1.");
                return;
            }
            if (HttpMethods.IsPost(context.Request.Method) && context.Request.ContentType?.StartsWith("application/json", StringComparison.OrdinalIgnoreCase) != true)
            {
                await Error(context, StatusCodes.Status415UnsupportedMediaType, "Send the request body as Content-Type: application/json.");
                return;
            }
            try { await next(context); }
            catch (Exception e) when (!context.Response.HasStarted && e is not OperationCanceledException)
            {
                Console.Error.WriteLine($"gptsharp feedback label: {context.Request.Method} {context.Request.Path} failed: {e}");
                await Error(context, StatusCodes.Status500InternalServerError, "Internal error; the judgment log is unchanged unless the reply said otherwise, and the console has the details.");
            }
        });
        _app.MapGet("/", (HttpContext context) =>
        {
            context.Response.Headers["X-Frame-Options"] = "DENY";
            context.Response.Headers.ContentSecurityPolicy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " +
                                                             "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
            return Results.Content(Page(), "text/html; charset=utf-8");
        });
        _app.MapGet("/api/next", () => Results.Json(State(), Json));
        _app.MapPost("/api/judge", async (HttpContext context) =>
        {
            JudgeRequest? request;
            try { request = await JsonSerializer.DeserializeAsync<JudgeRequest>(context.Request.Body, RequestJson, context.RequestAborted); }
            catch (JsonException e) { return BadRequest($"The body is not a judgment {{\"item\": \"ID\", \"choice\": \"0\"|\"tie\"|\"bad\"}}: {e.Message}"); }
            if (request?.Item is null || request.Choice is null) return BadRequest("A judgment needs \"item\" and \"choice\", both strings.");
            try { _session.Judge(request.Item, request.Choice); }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException) { return BadRequest(e.Message); }
            WritePairs();
            return Results.Json(State(), Json);
        });
        _app.MapPost("/api/undo", () =>
        {
            _session.Undo();
            WritePairs();
            return Results.Json(State(), Json);
        });
    }

    static readonly HashSet<string> LoopbackNames = new(["localhost", "127.0.0.1", "[::1]", "::1"], StringComparer.OrdinalIgnoreCase);

    static IResult BadRequest(string message) => Results.Json(new { error = message }, Json, statusCode: StatusCodes.Status400BadRequest);

    static Task Error(HttpContext context, int status, string message)
    {
        context.Response.StatusCode = status;
        return context.Response.WriteAsJsonAsync(new { error = message }, Json);
    }

    sealed record JudgeRequest(string? Item, string? Choice);

    object State()
    {
        var next = _session.Next;
        return new { done = _session.Done, total = _session.Total, item = next is null ? null : new { id = next.Id, prompt = next.Prompt, answers = next.Answers } };
    }

    void WritePairs() => ChatData.WritePreferences(_pairsPath, _session.Pairs());

    /// <summary>The address it listens on, once started.</summary>
    public string Address => _app.Urls.First();

    public Task StartAsync(CancellationToken cancellation = default) => _app.StartAsync(cancellation);

    public Task WaitForShutdownAsync(CancellationToken cancellation = default) => _app.WaitForShutdownAsync(cancellation);

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();

    static string Page()
    {
        using var stream = typeof(LabelingServer).Assembly.GetManifestResourceStream("GptSharp.Serving.label.html")!;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
