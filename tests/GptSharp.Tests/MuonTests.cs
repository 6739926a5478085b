using GptSharp.Models;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

/// <summary>Muon: the Newton–Schulz orthogonalisation against a hand computation, and which parameters it updates.</summary>
public class MuonTests
{
    [Fact]
    public void OrthogonalizeIsTheNewtonSchulzIterationComputedByHand()
    {
        double[,] g = { { 1, 2, 0.5 }, { -1, 0.3, 2 } };   // wide: XXᵀ is 2 × 2
        // By hand: X = G / ‖G‖_F, then five times X ← aX + (b·A + c·A²)X with A = XXᵀ.
        double norm = Math.Sqrt(g.Cast<double>().Sum(v => v * v));
        var x = new double[2, 3];
        for (int i = 0; i < 2; i++) for (int j = 0; j < 3; j++) x[i, j] = g[i, j] / (norm + 1e-7);
        for (int step = 0; step < 5; step++)
        {
            var a = new double[2, 2];
            for (int i = 0; i < 2; i++) for (int k = 0; k < 2; k++) for (int j = 0; j < 3; j++) a[i, k] += x[i, j] * x[k, j];
            var poly = new double[2, 2];
            for (int i = 0; i < 2; i++)
                for (int k = 0; k < 2; k++)
                {
                    double square = 0;
                    for (int m = 0; m < 2; m++) square += a[i, m] * a[m, k];
                    poly[i, k] = Muon.B * a[i, k] + Muon.C * square;
                }
            var next = new double[2, 3];
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 3; j++)
                {
                    next[i, j] = Muon.A * x[i, j];
                    for (int m = 0; m < 2; m++) next[i, j] += poly[i, m] * x[m, j];
                }
            x = next;
        }
        using var scope = NewDisposeScope();
        var input = tensor(g.Cast<double>().ToArray(), [2, 3], ScalarType.Float64);
        var result = Muon.Orthogonalize(input);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++) Assert.Equal(x[i, j], result[i, j].item<double>(), 12);
        // A tall matrix is worked on transposed: its result is the transposed result.
        Assert.True(Muon.Orthogonalize(input.t().contiguous()).allclose(result.t(), rtol: 0, atol: 1e-12));
        // Singular values of a random matrix end near 1 whatever their spread before.
        manual_seed(3);
        var spread = randn(32, 64, ScalarType.Float64) * linspace(0.01, 10, 64, ScalarType.Float64);
        var singular = linalg.svdvals(Muon.Orthogonalize(spread));
        Assert.InRange(singular.min().item<double>(), 0.5, 1.0);
        Assert.InRange(singular.max().item<double>(), 1.0, 1.3);
        Assert.Throws<ArgumentException>(() => Muon.Orthogonalize(zeros(4)));
    }

    [Fact]
    public void MuonUpdatesTheBlocksMatricesAndAdamWTheRest()
    {
        manual_seed(1);
        using var model = new Gpt(GptConfig.Gpt2(vocab: 40, context: 8, layers: 1, heads: 2, width: 16));
        var config = new TrainingConfig { Optimizer = OptimizerKind.Muon, LearningRate = 1e-2, MuonLearningRate = 0.05, WeightDecay = 0 };
        using var optimizer = new AdamW(model.named_parameters().Select(p => (p.name, p.parameter)), config);
        var muon = optimizer.MuonParameters.ToHashSet();
        Assert.Contains("h.0.attn.c_attn.weight", muon);
        Assert.Contains("h.0.mlp.c_proj.weight", muon);
        Assert.DoesNotContain("wte.weight", muon);
        Assert.DoesNotContain("wpe.weight", muon);
        Assert.DoesNotContain("h.0.ln_1.weight", muon);
        Assert.DoesNotContain("h.0.attn.c_attn.bias", muon);

        using var scope = NewDisposeScope();
        var tokens = randint(0, 40, [4, 8]);
        Gpt.Loss(model.forward(tokens), randint(0, 40, [4, 8])).backward();
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var before = parameters.ToDictionary(p => p.Key, p => p.Value.detach().clone());
        var grads = parameters.ToDictionary(p => p.Key, p => p.Value.grad!.clone());
        optimizer.Step(1e-2);

        // First step: Nesterov momentum is the gradient times (1 − μ²), which the orthogonalisation does not see.
        var attn = "h.0.attn.c_attn.weight";   // (48, 16): tall, scaled by √3
        var expected = before[attn] - 0.05 * Math.Sqrt(3) * Muon.Orthogonalize(grads[attn]);
        Assert.True(parameters[attn].detach().allclose(expected, rtol: 1e-4, atol: 1e-6), "Muon's update of c_attn");
        // AdamW's first step moves each weight by lr against the sign of its gradient.
        var embedding = parameters["wte.weight"].detach() - before["wte.weight"];
        var moved = grads["wte.weight"].abs() > 1e-5;
        Assert.True(embedding.masked_select(moved).allclose(-1e-2 * grads["wte.weight"].sign().masked_select(moved), rtol: 1e-3, atol: 1e-6), "AdamW's update of wte");
    }
}
