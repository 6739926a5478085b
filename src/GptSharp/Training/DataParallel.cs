using GptSharp.Interop;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace GptSharp.Training;

/// <summary>
/// Data parallelism across MPI processes: each process trains on its own share of every batch; after backward the
/// gradients are averaged in place (flattened into buckets, summed by all-reduce, divided by the world size), so every
/// process takes the same optimiser step and the parameters stay identical — checked by a checksum now and then.
/// </summary>
public sealed class DataParallel(MpiWorld world, long bucketElements = 4 << 20)
{
    public MpiWorld World => world;

    /// <summary>
    /// The MPI world when this process runs under <c>mpirun</c> with several processes (else null), after checking that
    /// the global batch divides among them.
    /// </summary>
    public static MpiWorld? Join(int globalBatch)
    {
        var world = MpiWorld.FromEnvironment();
        if (world is not null && globalBatch % world.Size != 0)
        {
            world.Dispose();
            throw new ArgumentException($"--batch-size {globalBatch} must be divisible by the {world.Size} MPI processes.");
        }
        return world;
    }

    public unsafe void AverageGradients(IEnumerable<Parameter> parameters)
    {
        using var noGrad = no_grad();
        var grads = parameters.Select(p => p.grad).OfType<Tensor>().ToList();
        for (int start = 0; start < grads.Count;)
        {
            using var scope = NewDisposeScope();
            var bucket = new List<Tensor>();
            long elements = 0;
            while (start < grads.Count && (bucket.Count == 0 || elements + grads[start].numel() <= bucketElements))
            {
                elements += grads[start].numel();
                bucket.Add(grads[start++]);
            }
            var flat = cat([.. bucket.Select(g => g.flatten())]).contiguous();
            // MPI reads host memory: a GPU bucket goes through a CPU copy (Open MPI builds without CUDA support).
            var host = flat.device_type == TorchSharp.DeviceType.CPU ? flat : flat.cpu();
            world.AllReduceSum((float*)TensorMemory.Address(host), (int)host.numel());
            if (!ReferenceEquals(host, flat)) flat.copy_(host);
            flat.div_(world.Size);
            long offset = 0;
            foreach (var g in bucket)
            {
                g.copy_(flat.narrow(0, offset, g.numel()).view_as(g));
                offset += g.numel();
            }
        }
    }

    /// <summary>The mean of a value across processes.</summary>
    public double Average(double value)
    {
        Span<double> buffer = [value];
        world.AllReduceSum(buffer);
        return buffer[0] / world.Size;
    }

    /// <summary>Throws if the processes' parameters differ (their checksums are not all equal).</summary>
    public void CheckInSync(IEnumerable<Parameter> parameters, int step)
    {
        double checksum;
        using (no_grad()) checksum = parameters.Sum(p => p.to(ScalarType.Float64).sum().item<double>());
        Span<double> values = [checksum, checksum * checksum];
        world.AllReduceSum(values);
        double mean = values[0] / world.Size, variance = values[1] / world.Size - mean * mean;
        if (variance > 1e-12 * Math.Max(1, mean * mean))
            throw new InvalidOperationException($"Data-parallel processes diverged by step {step}: rank {world.Rank}'s parameter checksum is {checksum:R}, the mean {mean:R}.");
    }
}
