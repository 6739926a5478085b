using GptSharp.Training;
using static TorchSharp.torch;

namespace GptSharp.Alignment;

/// <summary>
/// What PPO, GRPO and distillation share as batch sources: when the queue of minibatches is empty, the previous
/// rollout's tensors are freed and one new rollout is sampled and cut into minibatches, whose tensors this owns until
/// then. A rollout's randomness comes from the run's seed and the rollout's number, so a resumed run samples the same.
/// </summary>
public abstract class RolloutExperience<TBatch> : IBatchSource<TBatch>, IDisposable
{
    readonly Queue<TBatch> _queue = new();
    readonly List<Tensor> _owned = [];

    /// <summary>The next rollout's number (and whatever else a resume needs), as text.</summary>
    public abstract string Position { get; }

    public TBatch Next()
    {
        if (_queue.Count == 0)
        {
            Release();
            RolloutOnce();
        }
        return _queue.Dequeue();
    }

    /// <summary>Samples one rollout and <see cref="Enqueue"/>s its minibatches.</summary>
    protected abstract void RolloutOnce();

    protected void Enqueue(TBatch batch) => _queue.Enqueue(batch);

    /// <summary>Keeps <paramref name="t"/> alive past the rollout's dispose scope, until the next rollout.</summary>
    protected Tensor Own(Tensor t)
    {
        var kept = t.DetachFromDisposeScope();
        _owned.Add(kept);
        return kept;
    }

    /// <summary>The rollout's own random stream: prompts chosen, minibatches shuffled.</summary>
    protected static Random RolloutRandom(long seed, int iteration) => new((int)((seed * 31 + iteration) & 0x7fffffff));

    void Release()
    {
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }

    public void Dispose()
    {
        Release();
        GC.SuppressFinalize(this);
    }
}
