using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Models;

/// <summary>
/// Keys and values for a fixed number of independent sequences ("slots"), each with its own length, preallocated to the
/// context length: (Slots, KvHeads, ContextLength, HeadDim) per layer. Before each forward pass <see cref="Select"/> says
/// which slots its rows are; a row's tokens go at its own slot's length, at its own positions, and it attends to its own
/// slot's tokens only. So sequences can join and leave a running batch at any step (continuous batching), and a slot
/// that finished keeps its keys for a later request that starts with the same tokens (prefix caching).
/// </summary>
public sealed class SlotKvCache : IAttentionCache, IDisposable
{
    readonly Tensor[] _keys, _values;
    readonly int[] _lengths;
    readonly Device _device;
    int[] _selected = [];
    int _stepTokens;
    Tensor? _slotIndex;   // (B) the selected slots, when they are not one contiguous run

    public SlotKvCache(GptConfig config, int slots, Device? device = null, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
        _device = device ?? CPU;
        Slots = slots;
        Capacity = config.ContextLength;
        _lengths = new int[slots];
        _keys = new Tensor[config.Layers];
        _values = new Tensor[config.Layers];
        for (int layer = 0; layer < config.Layers; layer++)
        {
            _keys[layer] = zeros([slots, config.KvHeads, config.ContextLength, config.HeadDim], dtype, _device).DetachFromDisposeScope();
            _values[layer] = zeros([slots, config.KvHeads, config.ContextLength, config.HeadDim], dtype, _device).DetachFromDisposeScope();
        }
    }

    public int Slots { get; }
    public int Capacity { get; }

    /// <summary>Tokens stored in <paramref name="slot"/>.</summary>
    public int LengthOf(int slot) => _lengths[slot];

    /// <summary>Keeps only the first <paramref name="length"/> tokens of <paramref name="slot"/> (0 empties it).</summary>
    public void Truncate(int slot, int length)
    {
        if (length < 0 || length > _lengths[slot])
            throw new ArgumentOutOfRangeException(nameof(length), length, $"Slot {slot} holds {_lengths[slot]} tokens.");
        _lengths[slot] = length;
    }

    /// <summary>
    /// The slots the rows of the next forward pass are, in row order. Several rows feed one token each; one row may
    /// feed several (a prompt, or a chunk of one).
    /// </summary>
    public void Select(params int[] slots)
    {
        if (slots.Length == 0) throw new ArgumentException("Select at least one slot.", nameof(slots));
        if (slots.Distinct().Count() != slots.Length) throw new ArgumentException("A slot is selected twice.", nameof(slots));
        foreach (int slot in slots) ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)slot, (uint)Slots, nameof(slots));
        _selected = slots;
        _slotIndex?.Dispose();
        _slotIndex = Contiguous ? null : tensor(slots.Select(s => (long)s).ToArray(), device: _device).DetachFromDisposeScope();
    }

    bool Contiguous => _selected.Select((s, i) => s - i).Distinct().Count() == 1;

    public int Length => _selected.Max(s => _lengths[s]);
    public Tensor? StepPositions { get; private set; }
    public Tensor? StepMask { get; private set; }

    public void BeginStep(int t)
    {
        if (_selected.Length == 0) throw new InvalidOperationException("Select the slots of the rows before a forward pass.");
        if (t > 1 && _selected.Length > 1) throw new InvalidOperationException("Only a single row may feed several tokens at once.");
        foreach (int slot in _selected)
            if (_lengths[slot] + t > Capacity)
                throw new InvalidOperationException($"KV cache slot {slot} is full: {_lengths[slot]} + {t} tokens exceed the context length {Capacity}.");
        DisposeStep();
        _stepTokens = t;
        using var scope = NewDisposeScope();
        var starts = tensor(_selected.Select(s => (long)_lengths[s]).ToArray(), device: _device);     // (B)
        var positions = starts.unsqueeze(1) + arange(t, dtype: ScalarType.Int64, device: _device);   // (B, T)
        var keys = arange(Length + t, dtype: ScalarType.Int64, device: _device);                      // (K)
        // A query sees its own slot's keys up to its own position; beyond that lie other requests' leftovers or nothing.
        var mask = keys.view(1, 1, -1) <= positions.unsqueeze(2);                                      // (B, T, K)
        StepPositions = positions.MoveToOuterDisposeScope().DetachFromDisposeScope();
        StepMask = mask.unsqueeze(1).MoveToOuterDisposeScope().DetachFromDisposeScope();
    }

    public (Tensor Keys, Tensor Values) Append(int layer, Tensor keys, Tensor values)
    {
        int b = _selected.Length, t = (int)keys.shape[2], length = Length + t;
        if (b == 1)
        {
            int slot = _selected[0];
            _keys[layer].narrow(0, slot, 1).narrow(2, _lengths[slot], t).copy_(keys);
            _values[layer].narrow(0, slot, 1).narrow(2, _lengths[slot], t).copy_(values);
        }
        else
        {
            // One token per row, each at its own slot's length: keys[slot_i, :, length_i, :] = new key of row i.
            using var scope = NewDisposeScope();
            var slots = TensorIndex.Tensor(_slotIndex ?? arange(_selected[0], _selected[0] + b, dtype: ScalarType.Int64, device: _device));
            var at = TensorIndex.Tensor(StepPositions!.select(1, 0));
            _keys[layer].index_put_(keys.select(2, 0), slots, TensorIndex.Colon, at);
            _values[layer].index_put_(values.select(2, 0), slots, TensorIndex.Colon, at);
        }
        return _slotIndex is null
            ? (_keys[layer].narrow(0, _selected[0], b).narrow(2, 0, length), _values[layer].narrow(0, _selected[0], b).narrow(2, 0, length))
            : (_keys[layer].narrow(2, 0, length).index_select(0, _slotIndex), _values[layer].narrow(2, 0, length).index_select(0, _slotIndex));
    }

    public void Advance(int t)
    {
        foreach (int slot in _selected) _lengths[slot] += _stepTokens;
        DisposeStep();
    }

    void DisposeStep()
    {
        StepPositions?.Dispose();
        StepMask?.Dispose();
        (StepPositions, StepMask) = (null, null);
    }

    public void Dispose()
    {
        foreach (var t in _keys) t.Dispose();
        foreach (var t in _values) t.Dispose();
        _slotIndex?.Dispose();
        DisposeStep();
    }
}
