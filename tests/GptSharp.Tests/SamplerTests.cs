using GptSharp.Inference;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

/// <summary>
/// The sampler's two paths — C# over CPU float32 logits in place, libtorch for other tensors — draw from the same
/// distribution: the one the options define (penalties, mask, temperature, top-k, top-p), computed here by hand.
/// </summary>
public class SamplerTests
{
    public static TheoryData<int, double, int> Options => new() { { 0, 1.0, 0 }, { 5, 1.0, 1 }, { 0, 0.8, 2 }, { 6, 0.7, 3 } };

    [Theory]
    [MemberData(nameof(Options))]
    public void BothPathsDrawFromTheDistributionTheOptionsDefine(int topK, double topP, int salt)
    {
        const int vocab = 12, draws = 12000;
        var random = new Random(salt);
        float[] logits = [.. Enumerable.Range(0, vocab).Select(_ => (float)(random.NextDouble() * 4 - 2))];
        int[] context = [1, 2, 2];
        int[] produced = [2, 3];
        bool[] allowed = [.. Enumerable.Range(0, vocab).Select(k => k != 4)];
        var options = new SamplingOptions(Temperature: 0.7, TopK: topK, TopP: topP, RepetitionPenalty: 1.3, PresencePenalty: 0.2, FrequencyPenalty: 0.1);

        // By hand: penalties, mask, temperature, top-k, then top-p over the probabilities renormalised among the top k.
        double[] x = [.. logits.Select(v => (double)v)];
        foreach (int t in context.Distinct()) x[t] = x[t] > 0 ? x[t] / 1.3 : x[t] * 1.3;
        foreach (var g in produced.GroupBy(t => t)) x[g.Key] -= 0.2 + 0.1 * g.Count();
        x[4] = double.NegativeInfinity;
        var order = Enumerable.Range(0, vocab).OrderByDescending(k => x[k]).ToList();
        var keep = new bool[vocab];
        var topKept = order.Take(topK == 0 ? vocab : topK).ToList();
        double total = topKept.Sum(k => Math.Exp(x[k] / 0.7)), before = 0;
        for (int i = 0; i < topKept.Count; i++)
        {
            int k = topKept[i];
            keep[k] = !double.IsNegativeInfinity(x[k]) && (i == 0 || before < topP);
            before += Math.Exp(x[k] / 0.7) / total;
        }
        double kept = Enumerable.Range(0, vocab).Where(k => keep[k]).Sum(k => Math.Exp(x[k] / 0.7));
        double[] expected = [.. Enumerable.Range(0, vocab).Select(k => keep[k] ? Math.Exp(x[k] / 0.7) / kept : 0)];

        double[] Frequencies(Tensor row)
        {
            var counts = new double[vocab];
            var sampling = new SamplingRandom(salt);
            for (int i = 0; i < draws; i++) counts[Sampler.Sample(row, context, options, sampling, produced, allowed)]++;
            return [.. counts.Select(c => c / draws)];
        }
        using var scope = NewDisposeScope();
        var inPlace = Frequencies(tensor(logits));                        // float32 on the CPU: the C# path
        var torchPath = Frequencies(tensor(logits).to(ScalarType.Float64)); // any other tensor: libtorch's ops
        for (int k = 0; k < vocab; k++)
        {
            if (expected[k] == 0)
            {
                Assert.Equal(0, inPlace[k]);
                Assert.Equal(0, torchPath[k]);
                continue;
            }
            // 4.5 standard errors of a frequency from 12,000 draws.
            double tolerance = 4.5 * Math.Sqrt(expected[k] * (1 - expected[k]) / draws) + 1e-9;
            Assert.InRange(inPlace[k], expected[k] - tolerance, expected[k] + tolerance);
            Assert.InRange(torchPath[k], expected[k] - tolerance, expected[k] + tolerance);
        }
    }

    [Fact]
    public void TheSameSeedDrawsTheSameTokensAndAnotherSeedOthers()
    {
        using var scope = NewDisposeScope();
        var logits = tensor(Enumerable.Range(0, 50).Select(k => (float)Math.Sin(k)).ToArray());
        var options = new SamplingOptions(Temperature: 1.0);
        int[] Draw(long seed)
        {
            var random = new SamplingRandom(seed);
            return [.. Enumerable.Range(0, 40).Select(_ => Sampler.Sample(logits, [], options, random))];
        }
        Assert.Equal(Draw(7), Draw(7));
        Assert.NotEqual(Draw(7), Draw(8));
    }
}
