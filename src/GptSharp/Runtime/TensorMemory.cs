using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace GptSharp.Runtime;

/// <summary>The address of a contiguous CPU tensor's storage, for code that works on it in place (SIMD, MPI).</summary>
static class TensorMemory
{
    public static unsafe nint Address(Tensor t)
    {
        if (t.device_type != TorchSharp.DeviceType.CPU || !t.is_contiguous()) throw new ArgumentException("Expected a contiguous CPU tensor.", nameof(t));
        return (nint)System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));
    }
}
