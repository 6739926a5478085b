using System.Threading.Channels;
using GptSharp.Inference;

namespace GptSharp.Serving;

/// <summary>
/// Static batching, kept as the baseline the serve bench measures <see cref="ContinuousBatcher"/> against: a single worker takes every waiting request (up to the batch size) and
/// generates them together with <see cref="TokenDecoder"/>, one forward per step for the whole batch; requests that
/// arrive meanwhile form the next batch. A request whose client left is dropped before its batch starts, or stops
/// inside it at the next token. A row that fails fails alone: its request gets the error, the others their answers.
/// </summary>
public sealed class DecodeScheduler : IGenerationScheduler
{
    sealed record Pending(BatchRow Row, TaskCompletionSource<BatchResult> Done);

    readonly ServedModel _model;
    readonly int _maxBatch, _maxQueue;
    readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>();
    readonly Task _worker;
    int _waiting;

    /// <param name="maxQueue">Rows that may wait for a batch; <see cref="TryEnqueueAll"/> refuses a request that would pass it.</param>
    public DecodeScheduler(ServedModel model, int maxBatch, int maxQueue = int.MaxValue)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(maxQueue);
        (_model, _maxBatch, _maxQueue) = (model, maxBatch, maxQueue);
        _worker = Task.Factory.StartNew(Work, TaskCreationOptions.LongRunning).Unwrap();
    }

    /// <summary>How long a new batch waits for more requests when fewer than the batch size are queued.</summary>
    public const int GatherMilliseconds = 5;

    /// <summary>Batches run so far and the most rows one held (for the load bench and tests).</summary>
    public int Batches { get; private set; }
    public int LargestBatch { get; private set; }

    /// <summary>Rows waiting for a batch now.</summary>
    public int Waiting => Volatile.Read(ref _waiting);
    public int Running => Volatile.Read(ref _running);
    public int Capacity => _maxBatch;
    int _running;

    public int QueueLimit => _maxQueue;

    /// <summary>
    /// Queues a request's rows unless fewer than that many places are left of <c>maxQueue</c> (then null). Each task
    /// ends with its row's result; a row that cannot be generated at all ends with an <see cref="ArgumentException"/> result.
    /// </summary>
    public IReadOnlyList<Task<BatchResult>>? TryEnqueueAll(IReadOnlyList<BatchRow> rows) =>
        GenerationSchedulerExtensions.Queue(rows, ref _waiting, _maxQueue, (row, done) => _queue.Writer.TryWrite(new Pending(row, done)), nameof(DecodeScheduler));

    async Task Work()
    {
        while (await _queue.Reader.WaitToReadAsync())
        {
            // Clients that finished together tend to ask again together: give their requests a moment to join.
            if (_queue.Reader.Count < _maxBatch && _maxBatch > 1) await Task.Delay(GatherMilliseconds);
            var batch = new List<Pending>();
            while (batch.Count < _maxBatch && _queue.Reader.TryRead(out var pending))
            {
                Interlocked.Decrement(ref _waiting);
                var empty = new Generation(pending.Row.Prompt, [], FinishReason.Length);
                if (pending.Row.Cancellation.IsCancellationRequested) pending.Done.SetResult(new BatchResult(empty, true));
                else if (_model.Decoder.Problem(pending.Row) is { } problem)
                    pending.Done.SetResult(new BatchResult(empty, false, new ArgumentException(problem)));
                else batch.Add(pending);
            }
            if (batch.Count == 0) continue;
            Batches++;
            LargestBatch = Math.Max(LargestBatch, batch.Count);
            Volatile.Write(ref _running, batch.Count);
            try
            {
                var results = _model.Decoder.Generate([.. batch.Select(p => p.Row)]);
                for (int i = 0; i < batch.Count; i++) batch[i].Done.SetResult(results[i]);
            }
            catch (Exception e)
            {
                foreach (var pending in batch) pending.Done.TrySetException(e);
            }
            Volatile.Write(ref _running, 0);
        }
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _worker;
    }
}
