using Microsoft.Extensions.Hosting;

namespace GptSharp.Serving;

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
