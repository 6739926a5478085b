using System.Diagnostics;
using Spectre.Console;

namespace GptSharp.Cli;

/// <summary>
/// Shows long work as a Spectre.Console progress bar with rate and ETA on a terminal; with --quiet, or when output
/// is not a terminal, prints a plain line every few seconds instead.
/// </summary>
static class ProgressDisplay
{
    /// <summary>
    /// Runs <paramref name="work"/>, which reports units done through the callback it is given. A NaN
    /// <paramref name="total"/> means the amount of work is not known in advance: count and rate are shown, no ETA.
    /// </summary>
    public static T Run<T>(string title, double total, string unit, bool quiet, Func<Action<double>, T> work) =>
        Run(title, total, unit, quiet, (Action<double, string?> report) => work(done => report(done, null)));

    /// <summary>As above, with a status text (e.g. the latest loss) shown beside the rate.</summary>
    public static T Run<T>(string title, double total, string unit, bool quiet, Func<Action<double, string?>, T> work)
    {
        bool interactive = !quiet && AnsiConsole.Profile.Capabilities.Interactive && !Console.IsOutputRedirected;
        var watch = Stopwatch.StartNew();
        string Rate(double done) => $"{done / Math.Max(1e-9, watch.Elapsed.TotalSeconds):N0} {unit}/s";
        bool known = !double.IsNaN(total);
        if (!interactive)
        {
            var lastPrint = TimeSpan.Zero;
            var result = work((done, status) =>
            {
                if (watch.Elapsed - lastPrint < TimeSpan.FromSeconds(5) && !(known && done >= total)) return;
                lastPrint = watch.Elapsed;
                double eta = done > 0 ? watch.Elapsed.TotalSeconds * (total - done) / done : double.NaN;
                Console.WriteLine(known
                    ? $"{title}: {done:N0}/{total:N0} {unit} ({100 * done / Math.Max(1, total):F1}%), {Rate(done)}, ETA {FormatSeconds(eta)}{(status is null ? "" : ", " + status)}"
                    : $"{title}: {done:N0} {unit}, {Rate(done)}{(status is null ? "" : ", " + status)}");
            });
            Console.WriteLine($"{title}: done in {FormatSeconds(watch.Elapsed.TotalSeconds)}");
            return result;
        }
        T value = default!;
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(context =>
            {
                var task = context.AddTask(title, maxValue: known ? Math.Max(1, total) : 1);
                task.IsIndeterminate = !known;
                value = work((done, status) =>
                {
                    if (known) task.Value = Math.Min(done, total);
                    task.Description = $"{title} [grey]{Markup.Escape(Rate(done))}{(status is null ? "" : " " + Markup.Escape(status))}[/]";
                });
                task.Value = task.MaxValue;
            });
        return value;
    }

    static string FormatSeconds(double seconds) =>
        double.IsNaN(seconds) || double.IsInfinity(seconds) ? "?" : TimeSpan.FromSeconds(Math.Round(seconds)).ToString(@"h\:mm\:ss");
}
