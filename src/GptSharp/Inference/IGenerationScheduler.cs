namespace GptSharp.Inference;

/// <summary>Takes generation requests for one model from many callers and decodes them in batches.</summary>
public interface IGenerationScheduler : IAsyncDisposable
{
    /// <summary>
    /// Queues a generation unless the queue is full (then null). The task ends with the row's result; a row that cannot
    /// be generated at all ends with an <see cref="ArgumentException"/> result, and a client that cancelled with a
    /// cancelled result.
    /// </summary>
    Task<BatchResult>? TryEnqueue(BatchRow row);

    /// <summary>Requests waiting for room in a batch now.</summary>
    int Waiting { get; }

    /// <summary>Requests being decoded now.</summary>
    int Running { get; }

    /// <summary>The most requests decoded at once.</summary>
    int Capacity { get; }
}

public static class GenerationSchedulerExtensions
{
    /// <summary>Queues a generation; a full queue is an <see cref="InvalidOperationException"/>.</summary>
    public static Task<BatchResult> Enqueue(this IGenerationScheduler scheduler, BatchRow row) =>
        scheduler.TryEnqueue(row) ?? throw new InvalidOperationException($"The generation queue is full ({scheduler.Waiting} requests wait).");
}

/// <summary>Where one request's time went.</summary>
/// <param name="PromptTokens">Prompt tokens run through the model (the cached ones excluded).</param>
/// <param name="CachedTokens">Prompt tokens whose keys and values were reused from an earlier request.</param>
/// <param name="QueueMilliseconds">From queueing to its first prompt token entering the model.</param>
/// <param name="PrefillMilliseconds">Running its prompt, up to its first token.</param>
/// <param name="DecodeMilliseconds">From its first token to its last.</param>
public sealed record DecodeTimings(int PromptTokens, int CachedTokens, double QueueMilliseconds, double PrefillMilliseconds, double DecodeMilliseconds);
