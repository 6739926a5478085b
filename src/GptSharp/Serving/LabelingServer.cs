using System.Net;
using System.Text.Json;
using GptSharp.Alignment;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace GptSharp.Serving;

/// <summary>
/// The labeling page for people: <c>/</c> shows one prompt with its answers (keys 1–9 pick the best, T a tie, B all
/// bad, U undo) and the progress; <c>GET /api/next</c>, <c>POST /api/judge</c> and <c>POST /api/undo</c> drive a
/// <see cref="LabelingSession"/>, whose log is on disk before each answer returns. After every judgment the comparisons
/// so far are rewritten (atomically) as preference JSONL for <c>reward</c> and <c>dpo</c>. Listens on loopback only.
/// </summary>
public sealed class LabelingServer : IAsyncDisposable
{
    static readonly JsonSerializerOptions Json = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
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
        _app.Use(async (context, next) =>
        {
            // Loopback names only (no DNS rebinding) and JSON posts only (no cross-site form posts).
            string host = context.Request.Host.Host;
            if (host is not ("localhost" or "127.0.0.1" or "[::1]" or "::1"))
            {
                context.Response.StatusCode = StatusCodes.Status421MisdirectedRequest;
                return;
            }
            if (HttpMethods.IsPost(context.Request.Method) && context.Request.ContentType?.StartsWith("application/json", StringComparison.OrdinalIgnoreCase) != true)
            {
                context.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
                return;
            }
            await next(context);
        });
        _app.MapGet("/", (HttpContext context) =>
        {
            context.Response.Headers["X-Frame-Options"] = "DENY";
            context.Response.Headers.ContentSecurityPolicy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " +
                                                             "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
            return Results.Content(Page(), "text/html; charset=utf-8");
        });
        _app.MapGet("/api/next", () => Results.Json(State(), Json));
        _app.MapPost("/api/judge", (JudgeRequest request) =>
        {
            try { _session.Judge(request.Item ?? "", request.Choice ?? ""); }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                return Results.Json(new { error = e.Message }, Json, statusCode: StatusCodes.Status400BadRequest);
            }
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
