using System.Runtime.InteropServices;

namespace GptSharp.Runtime;

/// <summary>
/// Open MPI through a thin P/Invoke layer over <c>libmpi.so.40</c> (Debian's <c>openmpi-bin</c>): the process's rank and
/// the world size under <c>mpirun</c>, in-place sum all-reduce of float and double buffers, sum-reduce to one process, broadcast, point-to-point
/// send and receive of floats, and a barrier. Handles such
/// as MPI_COMM_WORLD are the addresses of Open MPI's exported <c>ompi_mpi_*</c> objects.
/// </summary>
public sealed unsafe class MpiWorld : IDisposable
{
    const string Library = "libmpi.so.40";
    static readonly IntPtr InPlace = 1; // Open MPI's MPI_IN_PLACE
    readonly IntPtr _comm, _float, _double, _sum;
    bool _finalised;

    MpiWorld()
    {
        var library = NativeLibrary.Load(Library);
        _comm = NativeLibrary.GetExport(library, "ompi_mpi_comm_world");
        _float = NativeLibrary.GetExport(library, "ompi_mpi_float");
        _double = NativeLibrary.GetExport(library, "ompi_mpi_double");
        _sum = NativeLibrary.GetExport(library, "ompi_mpi_op_sum");
        Check(MPI_Init(IntPtr.Zero, IntPtr.Zero), "MPI_Init");
        Check(MPI_Comm_rank(_comm, out int rank), "MPI_Comm_rank");
        Check(MPI_Comm_size(_comm, out int size), "MPI_Comm_size");
        (Rank, Size) = (rank, size);
    }

    public int Rank { get; }
    public int Size { get; }
    public bool IsRoot => Rank == 0;

    /// <summary>The world when this process was started by <c>mpirun</c> with more than one process, else null.</summary>
    public static MpiWorld? FromEnvironment()
    {
        if (!int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE"), out int size) || size < 2) return null;
        try
        {
            return new MpiWorld();
        }
        catch (DllNotFoundException e)
        {
            throw new InvalidOperationException($"Started by mpirun with {size} processes, but {Library} could not be loaded: install Open MPI (apt-get install openmpi-bin).", e);
        }
    }

    /// <summary>Sums <paramref name="count"/> floats at <paramref name="buffer"/> across all processes, in place.</summary>
    public void AllReduceSum(float* buffer, int count) => Check(MPI_Allreduce(InPlace, (IntPtr)buffer, count, _float, _sum, _comm), "MPI_Allreduce");

    /// <summary>Sums doubles across all processes, in place.</summary>
    public void AllReduceSum(Span<double> values)
    {
        fixed (double* pointer = values) Check(MPI_Allreduce(InPlace, (IntPtr)pointer, values.Length, _double, _sum, _comm), "MPI_Allreduce");
    }

    /// <summary>Sums floats across all processes into <paramref name="root"/>'s buffer (the others' buffers are left as they were).</summary>
    public void ReduceSum(float* buffer, int count, int root) => Check(Rank == root
        ? MPI_Reduce(InPlace, (IntPtr)buffer, count, _float, _sum, root, _comm)
        : MPI_Reduce((IntPtr)buffer, IntPtr.Zero, count, _float, _sum, root, _comm), "MPI_Reduce");

    /// <summary>Copies <paramref name="count"/> floats at <paramref name="buffer"/> from process <paramref name="root"/> to all others.</summary>
    public void Broadcast(float* buffer, int count, int root) => Check(MPI_Bcast((IntPtr)buffer, count, _float, root, _comm), "MPI_Bcast");

    /// <summary>Sends floats to one process (blocking); <paramref name="tag"/> pairs it with the matching <see cref="Receive"/>.</summary>
    public void Send(float* buffer, int count, int destination, int tag) => Check(MPI_Send((IntPtr)buffer, count, _float, destination, tag, _comm), "MPI_Send");

    /// <summary>Receives floats sent by <paramref name="source"/> with <paramref name="tag"/> (blocking).</summary>
    public void Receive(float* buffer, int count, int source, int tag) =>
        Check(MPI_Recv((IntPtr)buffer, count, _float, source, tag, _comm, IntPtr.Zero /* MPI_STATUS_IGNORE */), "MPI_Recv");

    public void Barrier() => Check(MPI_Barrier(_comm), "MPI_Barrier");

    public void Dispose()
    {
        if (_finalised) return;
        _finalised = true;
        MPI_Finalize();
    }

    static void Check(int code, string call)
    {
        if (code != 0) throw new InvalidOperationException($"{call} failed with MPI error code {code}.");
    }

    [DllImport(Library)] static extern int MPI_Init(IntPtr argc, IntPtr argv);
    [DllImport(Library)] static extern int MPI_Comm_rank(IntPtr comm, out int rank);
    [DllImport(Library)] static extern int MPI_Comm_size(IntPtr comm, out int size);
    [DllImport(Library)] static extern int MPI_Allreduce(IntPtr sendBuffer, IntPtr receiveBuffer, int count, IntPtr datatype, IntPtr op, IntPtr comm);
    [DllImport(Library)] static extern int MPI_Reduce(IntPtr sendBuffer, IntPtr receiveBuffer, int count, IntPtr datatype, IntPtr op, int root, IntPtr comm);
    [DllImport(Library)] static extern int MPI_Bcast(IntPtr buffer, int count, IntPtr datatype, int root, IntPtr comm);
    [DllImport(Library)] static extern int MPI_Send(IntPtr buffer, int count, IntPtr datatype, int destination, int tag, IntPtr comm);
    [DllImport(Library)] static extern int MPI_Recv(IntPtr buffer, int count, IntPtr datatype, int source, int tag, IntPtr comm, IntPtr status);
    [DllImport(Library)] static extern int MPI_Barrier(IntPtr comm);
    [DllImport(Library)] static extern int MPI_Finalize();
}
