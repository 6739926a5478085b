using GptSharp.Models;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GptSharp.Inference.Cpu;

/// <summary>How the CPU engine stores a weight matrix: as it trained (F32), halved (F16, BF16), or in 8-bit or 4-bit
/// blocks of 32 with one scale each (Q8_0, Q4_0: GGUF's formats; the scale rounded to F16 as GGUF stores it).</summary>
public enum WeightFormat { F32, F16, BF16, Q8_0, Q4_0 }

/// <summary>
/// A weight matrix [Rows, Cols] in torch's Linear layout (one row per output), packed once for products with a few
/// activation vectors at a time: <c>y[i, r] = W[r] · x[i]</c>. Decoding reads every weight once per token, so the
/// kernels stream the rows four at a time against activations that stay in L1, accumulating in F32.
/// </summary>
public abstract class WeightMatrix
{
    protected WeightMatrix(int rows, int cols) => (Rows, Cols) = (rows, cols);

    public int Rows { get; }
    public int Cols { get; }
    public abstract WeightFormat Format { get; }
    /// <summary>Bytes one full product reads from memory.</summary>
    public abstract long Bytes { get; }

    /// <summary>For rows [rowStart, rowEnd): y[i·Rows + r] = W[r] · x[i·Cols ..] for each of the n activation vectors.
    /// Readies the activations afresh (an allocation): for one-off products; the engine readies them once per product.</summary>
    public void Multiply(float[] x, int n, float[] y, int rowStart, int rowEnd)
    {
        var input = new MatrixInput();
        Prepare(x, n, input);
        Multiply(input, y, rowStart, rowEnd);
    }

    /// <summary>Readies n activation vectors for this format's kernel (once per product, before it is shared out).</summary>
    internal abstract void Prepare(float[] x, int n, MatrixInput input);

    /// <summary>For rows [rowStart, rowEnd): y[i·Rows + r] = W[r] · x[i] for the vectors readied in <paramref name="input"/>.</summary>
    internal abstract void Multiply(MatrixInput input, float[] y, int rowStart, int rowEnd);

    /// <summary>Row r as F32 (an embedding lookup).</summary>
    public abstract void ReadRow(int r, Span<float> destination);

    /// <summary>Packs a row-major F32 matrix; throws naming the shape when the format cannot hold it.</summary>
    public static WeightMatrix Pack(float[] data, int rows, int cols, WeightFormat format, string name)
    {
        if (data.Length != (long)rows * cols) throw new ArgumentException($"{name}: {data.Length} values for a {rows} × {cols} matrix.", nameof(data));
        return format switch
        {
            WeightFormat.F32 => new DenseMatrix<float, F32Values>(data, rows, cols, format),
            WeightFormat.BF16 => new DenseMatrix<ushort, Bf16Values>(HalfWidth.Bf16(data), rows, cols, format),
            WeightFormat.F16 => new DenseMatrix<ushort, F16Values>(HalfWidth.F16(data, name), rows, cols, format),
            WeightFormat.Q8_0 or WeightFormat.Q4_0 when cols % BlockQuantization.Block != 0 => throw new NotSupportedException(
                $"{name}: {format} needs rows whose length divides into blocks of {BlockQuantization.Block}; this one has {cols}. Use f16, bf16 or f32."),
            WeightFormat.Q8_0 => new BlockMatrix(BlockQuantization.Q8_0(data), rows, cols),
            WeightFormat.Q4_0 => new Q4Matrix(BlockQuantization.Q4_0(data), rows, cols),
            _ => throw new ArgumentOutOfRangeException(nameof(format), format, "Unknown weight format."),
        };
    }
}
