namespace GptSharp.Fuzzing;

/// <summary>What a fuzzing run tried and what broke an invariant (shared by the tests and the bench).</summary>
public sealed record FuzzReport(int Cases, IReadOnlyDictionary<string, int> Outcomes, IReadOnlyList<string> Violations, double Seconds)
{
    public override string ToString() =>
        $"{Cases} cases in {Seconds:F1} s ({Cases / Math.Max(Seconds, 1e-9):F0}/s): {string.Join(", ", Outcomes.OrderBy(o => o.Key).Select(o => $"{o.Key} ×{o.Value}"))}; " +
        $"{Violations.Count} violations{(Violations.Count == 0 ? "" : ":\n" + string.Join("\n", Violations.Take(10)))}";
}
