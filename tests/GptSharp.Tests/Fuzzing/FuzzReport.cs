namespace GptSharp.Fuzzing;

/// <summary>What a fuzzing run tried and what broke an invariant (shared by the tests and the bench); with
/// <see cref="ControlMilliseconds"/>, how long the well-formed request sent beside each round took.</summary>
public sealed record FuzzReport(int Cases, IReadOnlyDictionary<string, int> Outcomes, IReadOnlyList<string> Violations, double Seconds,
    IReadOnlyList<double>? ControlMilliseconds = null)
{
    public override string ToString() =>
        $"{Cases} cases in {Seconds:F1} s ({Cases / Math.Max(Seconds, 1e-9):F0}/s): {string.Join(", ", Outcomes.OrderBy(o => o.Key).Select(o => $"{o.Key} ×{o.Value}"))}; " +
        (ControlMilliseconds is { Count: > 0 } control
            ? $"well-formed request beside them: median {Percentile(control, 0.5):F0} ms, p95 {Percentile(control, 0.95):F0} ms, max {control.Max():F0} ms; " : "") +
        $"{Violations.Count} violations{(Violations.Count == 0 ? "" : ":\n" + string.Join("\n", Violations.Take(10)))}";

    static double Percentile(IReadOnlyList<double> values, double share)
    {
        var sorted = values.Order().ToList();
        return sorted[Math.Min(sorted.Count - 1, (int)(share * sorted.Count))];
    }
}
