namespace GptSharp.Inference.Cpu;

/// <summary>Work split into parts: part p of n runs on one thread.</summary>
internal interface IPartWork
{
    void Execute(int part, int parts);
}

/// <summary>
/// Threads that stay started for the engine's many small products (dozens per token): the caller runs part 0 itself,
/// each worker one other part, and a finished worker spins briefly for the next call before it sleeps, so a token
/// costs no thread wake-ups while decoding and no CPU while idle. Nothing is allocated per call.
/// </summary>
internal sealed class WorkerPool : IDisposable
{
    readonly Thread[] _threads;
    readonly SemaphoreSlim[] _wake;
    readonly int[] _sleeping;
    IPartWork? _work;
    int _parts;
    int _generation;
    int _pending;
    volatile bool _stopping;

    /// <param name="threads">Threads in all, the caller's included.</param>
    public WorkerPool(int threads)
    {
        Threads = Math.Max(1, threads);
        _threads = new Thread[Threads - 1];
        _wake = [.. Enumerable.Range(0, Threads - 1).Select(_ => new SemaphoreSlim(0))];
        _sleeping = new int[Threads - 1];
        for (int w = 0; w < _threads.Length; w++)
        {
            int index = w;
            _threads[w] = new Thread(() => Loop(index)) { IsBackground = true, Name = $"gptsharp-cpu-{index + 1}" };
            _threads[w].Start();
        }
    }

    public int Threads { get; }

    /// <summary>
    /// Runs the work on the caller alone (<paramref name="parallel"/> false: too small to share) or as
    /// <see cref="Threads"/> parts, one per thread, and returns when all are done. Every worker takes part in every
    /// shared call, so none can lag a call behind.
    /// </summary>
    public void Run(IPartWork work, bool parallel = true)
    {
        int parts = parallel ? Threads : 1;
        if (parts == 1)
        {
            work.Execute(0, 1);
            return;
        }
        _work = work;
        _parts = parts;
        Volatile.Write(ref _pending, parts - 1);
        Interlocked.Increment(ref _generation);
        for (int w = 0; w < _threads.Length; w++)
            if (Interlocked.Exchange(ref _sleeping[w], 0) == 1) _wake[w].Release();
        Exception? error = null;
        try { work.Execute(0, parts); }
        catch (Exception e) { error = e; }
        var spin = new SpinWait();
        while (Volatile.Read(ref _pending) != 0) spin.SpinOnce(sleep1Threshold: -1);
        _work = null;
        if (error is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
        if (_failure is { } failure)
        {
            _failure = null;
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        }
    }

    Exception? _failure;

    void Loop(int w)
    {
        int seen = 0;
        while (true)
        {
            // Spin for the next call (decoding issues them back to back), then sleep until woken. The spin yields the core
            // to any other runnable thread (a server's I/O, another engine), so a busy engine never starves them.
            int spins = 0;
            var spinner = new SpinWait();
            while (Volatile.Read(ref _generation) == seen && !_stopping)
            {
                if (++spins < 2_000) { spinner.SpinOnce(sleep1Threshold: -1); continue; }   // ~1 ms: enough between tokens
                Interlocked.Exchange(ref _sleeping[w], 1);
                if (Volatile.Read(ref _generation) != seen || _stopping)
                {
                    Interlocked.Exchange(ref _sleeping[w], 0);
                    break;
                }
                _wake[w].Wait();
                spins = 0;
                spinner.Reset();
            }
            if (_stopping) return;
            seen = Volatile.Read(ref _generation);
            try { _work!.Execute(w + 1, _parts); }
            catch (Exception e) { _failure = e; }
            Interlocked.Decrement(ref _pending);
        }
    }

    public void Dispose()
    {
        if (_stopping) return;   // a second Dispose finds the threads gone
        _stopping = true;
        for (int w = 0; w < _threads.Length; w++) _wake[w].Release();
        foreach (var thread in _threads) thread.Join();
        foreach (var wake in _wake) wake.Dispose();
    }
}
