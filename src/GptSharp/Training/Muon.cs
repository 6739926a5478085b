using static TorchSharp.torch;

namespace GptSharp.Training;

/// <summary>
/// Muon's step for a weight matrix: momentum, then the update's singular values pushed towards 1 by a few
/// Newton–Schulz iterations (an approximate orthogonalisation, cheap in matrix products), so every direction of the
/// matrix moves by about the same amount however small its gradient. Used for the Transformer's hidden matrices;
/// embeddings, the output head, norms and biases stay on AdamW (<see cref="AdamW"/> holds both).
/// </summary>
public static class Muon
{
    /// <summary>The quintic iteration's coefficients: chosen for a steep rise near 0 rather than exact convergence to 1
    /// (the singular values land in roughly [0.7, 1.2], which trains as well and needs only five steps).</summary>
    public const double A = 3.4445, B = -4.7750, C = 2.0315;

    /// <summary>
    /// <paramref name="g"/> (rows × cols) with its singular values mapped towards 1: X ← a·X + (b·XXᵀ + c·(XXᵀ)²)·X,
    /// <paramref name="steps"/> times, from X = g / ‖g‖_F (so every singular value starts ≤ 1). Works on the wide
    /// orientation so that XXᵀ is the smaller square.
    /// </summary>
    public static Tensor Orthogonalize(Tensor g, int steps = 5)
    {
        if (g.dim() != 2) throw new ArgumentException($"Muon orthogonalises matrices; got a tensor of {g.dim()} dimensions.", nameof(g));
        using var scope = NewDisposeScope();
        bool tall = g.shape[0] > g.shape[1];
        var x = (tall ? g.t() : g).div(g.norm().add(1e-7));
        for (int i = 0; i < steps; i++)
        {
            var gram = x.mm(x.t());                      // (r, r), r = the smaller side
            var poly = gram.mul(B).add_(gram.mm(gram), alpha: C);
            x = x.mul(A).add_(poly.mm(x));
        }
        return (tall ? x.t() : x).contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>Scale of an orthogonalised update of a rows × cols matrix: √max(1, rows/cols), so a matrix that maps
    /// to more outputs than it reads moves each output as much as a square one does.</summary>
    public static double Scale(long rows, long cols) => Math.Sqrt(Math.Max(1.0, (double)rows / cols));
}
