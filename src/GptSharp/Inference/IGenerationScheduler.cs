namespace GptSharp.Inference;

/// <summary>Takes generation requests for one model from many callers and decodes them in batches.</summary>
public interface IGenerationScheduler : IAsyncDisposable
{
    /// <summary>
    /// Queues the rows of one request (its choices) all together, or none of them when the queue has no room for all
    /// (then null): the queue limit counts rows. Each task ends with its row's result; a row that cannot be generated at
    /// all ends with an <see cref="ArgumentException"/> result, and a client that cancelled with a cancelled result.
    /// </summary>
    IReadOnlyList<Task<BatchResult>>? TryEnqueueAll(IReadOnlyList<BatchRow> rows);

    /// <summary>Rows (choices) waiting for room in a batch now.</summary>
    int Waiting { get; }

    /// <summary>The most rows that may wait at once; a request with more choices than this can never be queued.</summary>
    int QueueLimit { get; }

    /// <summary>Rows being decoded now.</summary>
    int Running { get; }

    /// <summary>The most rows decoded at once.</summary>
    int Capacity { get; }
}

public static class GenerationSchedulerExtensions
{
    /// <summary>Queues one row unless the queue is full (then null).</summary>
    public static Task<BatchResult>? TryEnqueue(this IGenerationScheduler scheduler, BatchRow row) => scheduler.TryEnqueueAll([row])?[0];

    /// <summary>Queues a generation; a full queue is an <see cref="InvalidOperationException"/>.</summary>
    public static Task<BatchResult> Enqueue(this IGenerationScheduler scheduler, BatchRow row) =>
        scheduler.TryEnqueue(row) ?? throw new InvalidOperationException($"The generation queue is full ({scheduler.Waiting} rows wait).");

    /// <summary>
    /// A scheduler's queueing: reserves room for all of <paramref name="rows"/> in a queue of at most <paramref name="limit"/>
    /// rows (none when they do not all fit: null), then hands each row to <paramref name="write"/>, which returns false
    /// once the scheduler is closed.
    /// </summary>
    internal static IReadOnlyList<Task<BatchResult>>? Queue(IReadOnlyList<BatchRow> rows, ref int waiting, int limit,
        Func<BatchRow, TaskCompletionSource<BatchResult>, bool> write, string owner)
    {
        while (true)
        {
            int now = Volatile.Read(ref waiting);
            if (rows.Count > limit - now) return null;
            if (Interlocked.CompareExchange(ref waiting, now + rows.Count, now) == now) break;
        }
        var tasks = new List<Task<BatchResult>>(rows.Count);
        foreach (var row in rows)
        {
            var done = new TaskCompletionSource<BatchResult>(TaskCreationOptions.RunContinuationsAsynchronously);
            if (!write(row, done))
            {
                Interlocked.Decrement(ref waiting);
                done.SetException(new ObjectDisposedException(owner));
            }
            tasks.Add(done.Task);
        }
        return tasks;
    }
}

/// <summary>Where one request's time went.</summary>
/// <param name="PromptTokens">Prompt tokens run through the model (the cached ones excluded).</param>
/// <param name="CachedTokens">Prompt tokens whose keys and values were reused from an earlier request.</param>
/// <param name="QueueMilliseconds">From queueing to its first prompt token entering the model.</param>
/// <param name="PrefillMilliseconds">Running its prompt, up to its first token.</param>
/// <param name="DecodeMilliseconds">From its first token to its last.</param>
public sealed record DecodeTimings(int PromptTokens, int CachedTokens, double QueueMilliseconds, double PrefillMilliseconds, double DecodeMilliseconds);
