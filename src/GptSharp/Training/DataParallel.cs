using GptSharp.Runtime;
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
    /// ZeRO-1: each process keeps AdamW's moments for, and updates, only its share of the parameters, then sends the
    /// updated values to the others (<see cref="BroadcastUpdatedParameters"/>): optimiser memory ÷ the world size.
    /// </summary>
    public bool ShardOptimizerState { get; init; }

    /// <summary>
    /// The MPI world when this process runs under <c>mpirun</c> with several processes (else null), after checking that
    /// the global batch divides among them (and that a sharded optimiser has processes to shard across).
    /// </summary>
    public static MpiWorld? Join(int globalBatch, bool shardOptimizerState = false)
    {
        var world = MpiWorld.FromEnvironment();
        if (world is null && shardOptimizerState)
            throw new ArgumentException("--zero1 shards the optimiser state across the processes of mpirun, and this is a single process: start it with mpirun -np N, or drop --zero1.");
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
        foreach (var bucket in Buckets(grads))
        {
            using var scope = NewDisposeScope();
            var flat = cat([.. bucket.Select(g => g.flatten())]).contiguous();
            // MPI reads host memory: a GPU bucket goes through a CPU copy (Open MPI builds without CUDA support).
            var host = flat.device_type == TorchSharp.DeviceType.CPU ? flat : flat.cpu();
            world.AllReduceSum((float*)TensorMemory.Address(host), (int)host.numel());
            if (!ReferenceEquals(host, flat)) flat.copy_(host);
            flat.div_(world.Size);
            Unflatten(flat, bucket);
        }
    }

    /// <summary>
    /// ZeRO-1, after backward: each owner receives the sum of its parameters' gradients (a reduce per bucket, half an
    /// all-reduce's traffic) and averages them; the other processes' copies of those gradients are left stale and unused.
    /// </summary>
    public unsafe void ReduceGradientsToOwners(AdamW optimizer)
    {
        using var noGrad = no_grad();
        for (int owner = 0; owner < world.Size; owner++)
        {
            var grads = optimizer.OwnedBy(owner).Select(i => optimizer.ParameterAt(i).grad).OfType<Tensor>().ToList();
            foreach (var bucket in Buckets(grads))
            {
                using var scope = NewDisposeScope();
                var flat = cat([.. bucket.Select(g => g.flatten())]).cpu().contiguous();
                world.ReduceSum((float*)TensorMemory.Address(flat), (int)flat.numel(), owner);
                if (world.Rank != owner) continue;
                flat.div_(world.Size);
                Unflatten(flat, bucket);
            }
        }
    }

    /// <summary>The global gradient norm when each process holds the averaged gradients of its own share only.</summary>
    public double ShardedGradNorm(AdamW optimizer)
    {
        double[] squares = optimizer.GradSquares();
        world.AllReduceSum(squares);
        return Math.Sqrt(squares.Sum());
    }

    /// <summary>ZeRO-1, after every step: each owner broadcasts the parameters it updated, bucket by bucket.</summary>
    public unsafe void BroadcastUpdatedParameters(AdamW optimizer)
    {
        using var noGrad = no_grad();
        for (int owner = 0; owner < world.Size; owner++)
        {
            var owned = optimizer.OwnedBy(owner).Select(optimizer.ParameterAt).ToList();
            foreach (var bucket in Buckets(owned))
            {
                using var scope = NewDisposeScope();
                var flat = (world.Rank == owner ? cat([.. bucket.Select(p => p.flatten())]) : empty(bucket.Sum(p => p.numel()))).cpu().contiguous();
                world.Broadcast((float*)TensorMemory.Address(flat), (int)flat.numel(), owner);
                if (world.Rank == owner) continue;
                Unflatten(flat, bucket);
            }
        }
    }

    /// <summary>
    /// ZeRO-1 checkpoint, on every process but the root: sends the moments of this process's parameters to the root,
    /// in the order the root's <see cref="AdamW.Save"/> asks for them (<see cref="ReceiveOptimizerState"/>).
    /// </summary>
    public unsafe void SendOptimizerState(AdamW optimizer)
    {
        foreach (int i in optimizer.SaveOrder().Where(i => optimizer.OwnerOf(i) == world.Rank))
        {
            using var scope = NewDisposeScope();
            var (m, v) = optimizer.StateAt(i);
            var hostM = m.cpu().contiguous();
            var hostV = v.cpu().contiguous();
            world.Send((float*)TensorMemory.Address(hostM), (int)hostM.numel(), 0, 2 * i);
            world.Send((float*)TensorMemory.Address(hostV), (int)hostV.numel(), 0, 2 * i + 1);
        }
    }

    /// <summary>ZeRO-1 checkpoint, on the root: receives parameter <paramref name="index"/>'s moments from its owner (CPU tensors).</summary>
    public unsafe (Tensor ExpAvg, Tensor ExpAvgSq) ReceiveOptimizerState(AdamW optimizer, int index)
    {
        var parameter = optimizer.ParameterAt(index);
        int owner = optimizer.OwnerOf(index), count = (int)parameter.numel();
        var m = empty_like(parameter, device: CPU);
        var v = empty_like(parameter, device: CPU);
        world.Receive((float*)TensorMemory.Address(m), count, owner, 2 * index);
        world.Receive((float*)TensorMemory.Address(v), count, owner, 2 * index + 1);
        return (m, v);
    }

    /// <summary>Copies a flat buffer back into the tensors it was concatenated from, in order.</summary>
    static void Unflatten(Tensor flat, IEnumerable<Tensor> bucket)
    {
        long offset = 0;
        foreach (var t in bucket)
        {
            t.copy_(flat.narrow(0, offset, t.numel()).view_as(t));
            offset += t.numel();
        }
    }

    /// <summary>Consecutive tensors grouped into buckets of up to the bucket size (a larger tensor alone).</summary>
    IEnumerable<List<Tensor>> Buckets(IReadOnlyList<Tensor> tensors)
    {
        for (int start = 0; start < tensors.Count;)
        {
            var bucket = new List<Tensor>();
            long elements = 0;
            while (start < tensors.Count && (bucket.Count == 0 || elements + tensors[start].numel() <= bucketElements))
            {
                elements += tensors[start].numel();
                bucket.Add(tensors[start++]);
            }
            yield return bucket;
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
