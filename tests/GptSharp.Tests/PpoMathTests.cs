using GptSharp.Alignment;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

public class PpoMathTests
{
    static float[] Values(Tensor t) => t.to(ScalarType.Float32).data<float>().ToArray();

    [Fact]
    public void GaeMatchesAHandComputedExample()
    {
        using var scope = NewDisposeScope();
        // One response of 3 tokens then padding; γ = 0.9, λ = 0.8.
        var rewards = tensor(new float[] { 1, 0, 2, 5 }).reshape(1, 4);
        var values = tensor(new float[] { 0.5f, 1, 1.5f, 9 }).reshape(1, 4);
        var mask = tensor(new float[] { 1, 1, 1, 0 }).reshape(1, 4);
        var (advantages, returns) = PpoMath.Gae(rewards, values, mask, gamma: 0.9, lambda: 0.8);
        // t=2: δ = 2 + 0 − 1.5 = 0.5, A = 0.5
        // t=1: δ = 0 + 0.9·1.5 − 1 = 0.35, A = 0.35 + 0.72·0.5 = 0.71
        // t=0: δ = 1 + 0.9·1 − 0.5 = 1.4, A = 1.4 + 0.72·0.71 = 1.9112
        Assert.Equal(new[] { 1.9112f, 0.71f, 0.5f, 0f }, Values(advantages), new FloatTolerance(1e-5f));
        Assert.Equal(new[] { 2.4112f, 1.71f, 2.0f, 0f }, Values(returns), new FloatTolerance(1e-5f));
    }

    [Fact]
    public void KlEstimatorsMatchTheirDefinitions()
    {
        using var scope = NewDisposeScope();
        var logp = tensor(new float[] { -1.0f, -2.0f });
        var refLogp = tensor(new float[] { -1.5f, -1.0f });
        Assert.Equal(new[] { 0.5f, -1.0f }, Values(PpoMath.Kl(logp, refLogp, KlEstimator.K1)), new FloatTolerance(1e-6f));
        // k3 = (r − 1) − log r with r = exp(ref − logp): r = e^−0.5 and e^1
        float[] k3 = [(float)(Math.Exp(-0.5) - 1 + 0.5), (float)(Math.Exp(1) - 1 - 1)];
        Assert.Equal(k3, Values(PpoMath.Kl(logp, refLogp, KlEstimator.K3)), new FloatTolerance(1e-6f));
        Assert.All(Values(PpoMath.Kl(logp, refLogp, KlEstimator.K3)), v => Assert.True(v >= 0));
    }

    [Fact]
    public void TokenRewardsPutTheScoreOnTheLastResponseToken()
    {
        using var scope = NewDisposeScope();
        var kl = tensor(new float[] { 0.1f, 0.2f, 0.3f, 0.4f }).reshape(1, 4);
        var mask = tensor(new float[] { 1, 1, 1, 0 }).reshape(1, 4);
        var rewards = PpoMath.TokenRewards(kl, tensor(new float[] { 2f }), mask, klCoefficient: 0.5);
        Assert.Equal(new[] { -0.05f, -0.1f, -0.15f + 2f, 0f }, Values(rewards), new FloatTolerance(1e-6f));
    }

    [Fact]
    public void ClippedPolicyLossMatchesHandValues()
    {
        using var scope = NewDisposeScope();
        // ratios e^0.5 ≈ 1.6487 (A=+1: clipped to 1.2), e^-0.5 ≈ 0.6065 (A=+2: unclipped smaller), 1 (A=−1)
        var logp = tensor(new float[] { 0.5f, -0.5f, 0f });
        var old = tensor(new float[] { 0f, 0f, 0f });
        var advantages = tensor(new float[] { 1f, 2f, -1f });
        var mask = tensor(new float[] { 1, 1, 1 });
        var (loss, clipFraction) = PpoMath.PolicyLoss(logp, old, advantages, mask, clip: 0.2);
        double expected = -(1.2 * 1 + Math.Exp(-0.5) * 2 + 1 * -1) / 3;
        Assert.Equal(expected, loss.item<float>(), 5);
        Assert.Equal(1 / 3.0, clipFraction.item<float>(), 5);
    }

    [Fact]
    public void ClippedValueLossTakesTheWorseOfTheTwo()
    {
        using var scope = NewDisposeScope();
        var values = tensor(new float[] { 2.0f, 0.0f });
        var oldValues = tensor(new float[] { 1.0f, 0.0f });
        var returns = tensor(new float[] { 2.0f, 1.0f });
        var mask = tensor(new float[] { 1, 1 });
        // first: unclipped (2−2)² = 0, clipped 1.2 → (1.2−2)² = 0.64 → 0.64; second: (0−1)² = 1 both → 1
        Assert.Equal(0.5 * (0.64 + 1) / 2, PpoMath.ValueLoss(values, oldValues, returns, mask, clip: 0.2).item<float>(), 5);
    }

    [Fact]
    public void WhiteningAndEntropy()
    {
        using var scope = NewDisposeScope();
        var x = tensor(new float[] { 1, 2, 3, 100 }).reshape(1, 4);
        var mask = tensor(new float[] { 1, 1, 1, 0 }).reshape(1, 4);
        var white = PpoMath.Whiten(x, mask);
        Assert.Equal(0.0, PpoMath.MaskedMean(white, mask).item<float>(), 5);
        Assert.Equal(1.0, PpoMath.MaskedMean(white.pow(2), mask).item<float>(), 4);
        Assert.Equal(0f, Values(white)[3]);
        var uniform = zeros(1, 2, 4); // uniform over 4 tokens: entropy ln 4
        Assert.Equal(Math.Log(4), PpoMath.Entropy(uniform, ones(1, 2)).item<float>(), 5);
    }

}
