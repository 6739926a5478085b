using GptSharp.Inference;
using Prometheus;

namespace GptSharp.Serving;

/// <summary>
/// What <c>GET /metrics</c> reports, in Prometheus' text format (prometheus-net, one registry per server): requests by
/// endpoint and status, prompt/generated/cached tokens, queue length and slot use per model, and histograms of time to
/// first token and request duration.
/// </summary>
public sealed class ServerMetrics
{
    readonly CollectorRegistry _registry = Metrics.NewCustomRegistry();
    readonly Counter _requests, _promptTokens, _completionTokens, _cachedTokens;
    readonly Histogram _firstToken, _duration;

    public ServerMetrics(IReadOnlyDictionary<string, IGenerationScheduler> schedulers)
    {
        var factory = Metrics.WithCustomRegistry(_registry);
        _requests = factory.CreateCounter("gptsharp_requests_total", "HTTP requests answered, by path and status.", ["path", "status"]);
        _promptTokens = factory.CreateCounter("gptsharp_prompt_tokens_total", "Prompt tokens of answered requests.", ["model"]);
        _completionTokens = factory.CreateCounter("gptsharp_completion_tokens_total", "Tokens generated.", ["model"]);
        _cachedTokens = factory.CreateCounter("gptsharp_cached_prompt_tokens_total", "Prompt tokens reused from the prefix cache.", ["model"]);
        var buckets = Histogram.ExponentialBuckets(0.005, 2, 14);   // 5 ms … 41 s
        _firstToken = factory.CreateHistogram("gptsharp_time_to_first_token_seconds", "From a request's arrival to its first generated token.",
            new HistogramConfiguration { LabelNames = ["model"], Buckets = buckets });
        _duration = factory.CreateHistogram("gptsharp_request_duration_seconds", "From a generation request's arrival to its last token.",
            new HistogramConfiguration { LabelNames = ["model"], Buckets = buckets });
        var waiting = factory.CreateGauge("gptsharp_queue_length", "Choices (rows) waiting for a free slot; a request of n choices counts n, as --max-queue does.", ["model"]);
        var running = factory.CreateGauge("gptsharp_slots_busy", "Choices (rows) being decoded.", ["model"]);
        var slots = factory.CreateGauge("gptsharp_slots", "Choices (rows) a model decodes at once.", ["model"]);
        _registry.AddBeforeCollectCallback(() =>
        {
            foreach (var (model, scheduler) in schedulers)
            {
                waiting.WithLabels(model).Set(scheduler.Waiting);
                running.WithLabels(model).Set(scheduler.Running);
                slots.WithLabels(model).Set(scheduler.Capacity);
            }
        });
    }

    public void Request(string path, int status) => _requests.WithLabels(path, status.ToString()).Inc();

    public void FirstToken(string model, TimeSpan elapsed) => _firstToken.WithLabels(model).Observe(elapsed.TotalSeconds);

    public void Generated(string model, int promptTokens, int completionTokens, int cachedTokens, TimeSpan elapsed)
    {
        _promptTokens.WithLabels(model).Inc(promptTokens);
        _completionTokens.WithLabels(model).Inc(completionTokens);
        _cachedTokens.WithLabels(model).Inc(cachedTokens);
        _duration.WithLabels(model).Observe(elapsed.TotalSeconds);
    }

    public Task WriteAsync(Stream stream, CancellationToken cancellation) => _registry.CollectAndExportAsTextAsync(stream, cancellation);
}
