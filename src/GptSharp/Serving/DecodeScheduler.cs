using System.Threading.Channels;
using GptSharp.Inference;

namespace GptSharp.Serving;

/// <summary>
/// Batches the requests for one model: a single worker takes every waiting request (up to the batch size) and
/// generates them together with <see cref="BatchGenerator"/>, one forward per step for the whole batch; requests that
/// arrive meanwhile form the next batch. A request whose client left is dropped before its batch starts, or stops
/// inside it at the next token.
/// </summary>
public sealed class DecodeScheduler : IAsyncDisposable
{
    sealed record Pending(BatchRow Row, TaskCompletionSource<(Generation Generation, bool Cancelled)> Done);

    readonly ServedModel _model;
    readonly int _maxBatch;
    readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>();
    readonly Task _worker;

    public DecodeScheduler(ServedModel model, int maxBatch)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        (_model, _maxBatch) = (model, maxBatch);
        _worker = Task.Factory.StartNew(Work, TaskCreationOptions.LongRunning).Unwrap();
    }

    /// <summary>How long a new batch waits for more requests when fewer than the batch size are queued.</summary>
    public const int GatherMilliseconds = 5;

    /// <summary>Batches run so far and the most rows one held (for the load bench and tests).</summary>
    public int Batches { get; private set; }
    public int LargestBatch { get; private set; }

    /// <summary>Queues a generation; the task ends with it (Cancelled when its cancellation token fired).</summary>
    public Task<(Generation Generation, bool Cancelled)> Enqueue(BatchRow row)
    {
        var done = new TaskCompletionSource<(Generation, bool)>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_queue.Writer.TryWrite(new Pending(row, done))) done.SetException(new ObjectDisposedException(nameof(DecodeScheduler)));
        return done.Task;
    }

    async Task Work()
    {
        while (await _queue.Reader.WaitToReadAsync())
        {
            // Clients that finished together tend to ask again together: give their requests a moment to join.
            if (_queue.Reader.Count < _maxBatch && _maxBatch > 1) await Task.Delay(GatherMilliseconds);
            var batch = new List<Pending>();
            while (batch.Count < _maxBatch && _queue.Reader.TryRead(out var pending))
            {
                if (pending.Row.Cancellation.IsCancellationRequested) pending.Done.SetResult((new Generation(pending.Row.Prompt, [], FinishReason.Length), true));
                else batch.Add(pending);
            }
            if (batch.Count == 0) continue;
            Batches++;
            LargestBatch = Math.Max(LargestBatch, batch.Count);
            try
            {
                var results = BatchGenerator.Generate(_model.Model, [.. batch.Select(p => p.Row)]);
                for (int i = 0; i < batch.Count; i++) batch[i].Done.SetResult(results[i]);
            }
            catch (Exception e)
            {
                foreach (var pending in batch) pending.Done.TrySetException(e);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _worker;
    }
}
