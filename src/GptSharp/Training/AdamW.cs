using GptSharp.Runs;
using GptSharp.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace GptSharp.Training;

/// <summary>
/// AdamW with decoupled weight decay on matrices only, and with <see cref="OptimizerKind.Muon"/> Muon for the
/// Transformer blocks' weight matrices (their first moment is Muon's momentum). Written here rather than taken from
/// TorchSharp so that its state (step, moments per parameter) is saved in a checkpoint as safetensors and restored
/// exactly, and can be sharded across data-parallel processes (ZeRO-1, <see cref="Shard"/>: whole tensors per process,
/// so Muon's owner holds each matrix's whole gradient).
/// </summary>
public sealed class AdamW : IOptimizerState, IDisposable
{
    readonly (string Name, Parameter Parameter)[] _parameters;
    readonly Tensor?[] _exp_avg, _exp_avg_sq; // null where another process owns the parameter (ZeRO-1)
    readonly TrainingConfig _config;
    readonly bool[] _muon;   // updated by Muon rather than AdamW
    int[]? _owner; // the process that updates each parameter; null: this process updates all
    int _rank;

    public AdamW(IEnumerable<(string Name, Parameter Parameter)> parameters, TrainingConfig config)
    {
        _parameters = [.. parameters.Where(p => p.Parameter.requires_grad)];
        _config = config;
        _muon = [.. _parameters.Select(p => config.Optimizer == OptimizerKind.Muon && IsBlockMatrix(p.Name, p.Parameter))];
        // Allocated at first use, so that a sharded process never holds (or leaves in its heap) the others' moments.
        _exp_avg = new Tensor?[_parameters.Length];
        _exp_avg_sq = new Tensor?[_parameters.Length];
    }

    /// <summary>Parameter <paramref name="i"/>'s moments, zeros the first time.</summary>
    (Tensor ExpAvg, Tensor ExpAvgSq) Moments(int i)
    {
        if (_exp_avg[i] is null)
        {
            if (!Owns(i)) throw new InvalidOperationException($"Optimiser state for '{_parameters[i].Name}' is kept by process {OwnerOf(i)}, not this one.");
            using var noGrad = no_grad();
            _exp_avg[i] = zeros_like(_parameters[i].Parameter).DetachFromDisposeScope();
            _exp_avg_sq[i] = zeros_like(_parameters[i].Parameter).DetachFromDisposeScope();
        }
        return (_exp_avg[i]!, _exp_avg_sq[i]!);
    }

    /// <summary>A weight matrix inside a Transformer block (<c>h.N.…</c>), not an adapter: what Muon updates.</summary>
    public static bool IsBlockMatrix(string name, Tensor parameter) =>
        parameter.dim() == 2 && !name.Contains("lora_", StringComparison.Ordinal) &&
        System.Text.RegularExpressions.Regex.IsMatch(name, @"(^|\.)h\.\d+\.");

    /// <summary>Names of the parameters Muon updates.</summary>
    public IEnumerable<string> MuonParameters => _parameters.Where((_, i) => _muon[i]).Select(p => p.Name);

    /// <summary>Optimiser steps taken so far.</summary>
    public long StepCount { get; private set; }

    public IEnumerable<Parameter> Parameters => _parameters.Select(p => p.Parameter);

    /// <summary>The process that keeps the moments of, and updates, parameter <paramref name="index"/> (0 when unsharded).</summary>
    public int OwnerOf(int index) => _owner?[index] ?? 0;

    public bool IsSharded => _owner is not null;

    bool Owns(int index) => _owner is null || _owner[index] == _rank;

    /// <summary>
    /// ZeRO-1: from now on this process keeps optimiser state for, and updates, only its share of the parameters — a
    /// contiguous run of whole tensors holding about 1/<paramref name="size"/> of the elements; the other moments are freed.
    /// After each <see cref="Step"/> the owners must share their updated parameters (see <see cref="DataParallel"/>).
    /// </summary>
    public void Shard(int rank, int size)
    {
        long total = _parameters.Sum(p => p.Parameter.numel()), before = 0;
        _owner = new int[_parameters.Length];
        _rank = rank;
        for (int i = 0; i < _parameters.Length; i++)
        {
            long size_i = _parameters[i].Parameter.numel();
            // By where the tensor's middle falls: non-decreasing, so each process owns one contiguous run.
            _owner[i] = (int)Math.Min(size - 1, (before + size_i / 2) * size / Math.Max(1, total));
            before += size_i;
            if (_owner[i] != rank) ReleaseState(i);
        }
    }

    /// <summary>Indices of the parameters process <paramref name="rank"/> owns.</summary>
    public IEnumerable<int> OwnedBy(int rank) => Enumerable.Range(0, _parameters.Length).Where(i => OwnerOf(i) == rank);

    /// <summary>Elements of optimiser state this process keeps (both moments of the parameters it owns).</summary>
    public long StateElements => 2 * Enumerable.Range(0, _parameters.Length).Where(Owns).Sum(i => _parameters[i].Parameter.numel());

    internal Parameter ParameterAt(int index) => _parameters[index].Parameter;
    internal (Tensor ExpAvg, Tensor ExpAvgSq) StateAt(int index) => Moments(index);

    /// <summary>
    /// The parameters in the order <see cref="Save"/> asks for their moments (the file's name order): a sharded owner
    /// sends its moments to the root in this order.
    /// </summary>
    public IReadOnlyList<int> SaveOrder() =>
        [.. Enumerable.Range(0, _parameters.Length).OrderBy(i => $"{_parameters[i].Name}.exp_avg", StringComparer.Ordinal)];

    void ReleaseState(int i)
    {
        _exp_avg[i]?.Dispose();
        _exp_avg_sq[i]?.Dispose();
        _exp_avg[i] = _exp_avg_sq[i] = null;
    }

    /// <summary>
    /// Applies one update at learning rate <paramref name="lr"/> from the gradients now held by the parameters, each
    /// multiplied by <paramref name="gradScale"/> first (how gradient clipping is applied without a pass of its own).
    /// </summary>
    public void Step(double lr, double gradScale = 1)
    {
        StepCount++;
        double bias1 = 1 - Math.Pow(_config.Beta1, StepCount), bias2 = 1 - Math.Pow(_config.Beta2, StepCount);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        for (int i = 0; i < _parameters.Length; i++)
        {
            var p = _parameters[i].Parameter;
            var grad = p.grad;
            if (grad is null || !Owns(i)) continue;
            if (_muon[i])
            {
                MuonStep(i, grad, lr * _config.MuonLearningRate / _config.LearningRate, gradScale);
                continue;
            }
            double decay = _config.WeightDecay > 0 && p.dim() >= 2 ? 1 - lr * _config.WeightDecay : 1;
            var (m, v) = Moments(i);
            if (FusedAdamW.Applies(p, grad, m, v))
            {
                FusedAdamW.Update(p, grad, m, v, new FusedAdamW.Coefficients(
                    (float)gradScale, (float)decay, (float)_config.Beta1, (float)_config.Beta2, (float)(lr / bias1),
                    (float)(1 / Math.Sqrt(bias2)), (float)_config.Epsilon));
                continue;
            }
            if (gradScale != 1) grad = grad * gradScale;
            if (decay != 1) p.mul_(decay);
            m.lerp_(grad, 1 - _config.Beta1);
            v.mul_(_config.Beta2).addcmul_(grad, grad, value: 1 - _config.Beta2);
            var denominator = v.sqrt().mul_(1 / Math.Sqrt(bias2)).add_(_config.Epsilon);
            p.addcdiv_(m, denominator, value: -lr / bias1);
        }
    }

    /// <summary>Nesterov momentum, orthogonalised, scaled by the matrix's shape; weight decay as AdamW's (decoupled).</summary>
    void MuonStep(int i, Tensor grad, double lr, double gradScale)
    {
        var p = _parameters[i].Parameter;
        var (momentum, _) = Moments(i);
        if (gradScale != 1) grad = grad * gradScale;
        momentum.lerp_(grad, 1 - _config.MuonMomentum);
        var nesterov = grad.lerp(momentum, _config.MuonMomentum);
        using var update = Muon.Orthogonalize(nesterov);
        if (_config.WeightDecay > 0) p.mul_(1 - lr * _config.WeightDecay);
        p.add_(update, alpha: -lr * Muon.Scale(p.shape[0], p.shape[1]));
    }

    /// <summary>Drops the gradients, so that the next backward writes them afresh instead of adding to zeros.</summary>
    public void ZeroGrad()
    {
        foreach (var (_, p) in _parameters)
        {
            using var grad = p.grad;
            p.grad = null;
        }
    }

    /// <summary>The L2 norm of all parameters' gradients together (0 when none has one).</summary>
    public double GradNorm() => Math.Sqrt(GradSquares().Sum());

    /// <summary>
    /// Σ g² per parameter (0 for one without a gradient or, when sharded, owned by another process). Summed in
    /// parameter order, after a sharded run adds the processes' arrays, it gives the same norm to the last bit.
    /// </summary>
    public double[] GradSquares()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var squares = new double[_parameters.Length];
        for (int i = 0; i < _parameters.Length; i++)
        {
            var grad = _parameters[i].Parameter.grad;
            if (grad is null || !Owns(i)) continue;
            squares[i] = FusedAdamW.Applies(_parameters[i].Parameter, grad, grad, grad) ? FusedAdamW.SumOfSquares(grad) : grad.square().sum().ToDouble();
        }
        return squares;
    }

    /// <summary>
    /// Writes every parameter's moments. A sharded optimiser (on the root) gets each other process's moments from
    /// <paramref name="receiveForeign"/>, one parameter at a time in <see cref="SaveOrder"/>, each written then freed — so
    /// the root never holds the whole state.
    /// </summary>
    public void Save(string path, Func<int, (Tensor ExpAvg, Tensor ExpAvgSq)>? receiveForeign = null)
    {
        var index = new Dictionary<string, (int Parameter, bool Squared)>();
        var layout = new List<(string, ScalarType, long[])>();
        for (int i = 0; i < _parameters.Length; i++)
        {
            var p = _parameters[i].Parameter;
            if (!Owns(i) && receiveForeign is null)
                throw new InvalidOperationException($"Optimiser state for '{_parameters[i].Name}' is on another process; save through the data-parallel root.");
            foreach (bool squared in new[] { false, true })
            {
                string name = $"{_parameters[i].Name}.{(squared ? "exp_avg_sq" : "exp_avg")}";
                index[name] = (i, squared);
                layout.Add((name, p.dtype, p.shape));
            }
        }
        (int Parameter, Tensor ExpAvgSq)? pending = null; // a foreign parameter's second moment, received with its first
        SafeTensors.Save(path, layout, name =>
        {
            var (i, squared) = index[name];
            if (Owns(i))
            {
                var (m, v) = Moments(i);
                return (squared ? v : m, false);
            }
            if (pending is { } held && held.Parameter == i && squared)
            {
                pending = null;
                return (held.ExpAvgSq, true);
            }
            if (squared) throw new InvalidOperationException($"'{name}' was asked for before its first moment.");
            var (expAvg, expAvgSq) = receiveForeign!(i);
            pending = (i, expAvgSq);
            return (expAvg, true);
        }, new Dictionary<string, string> { ["step"] = StepCount.ToString(), ["optimizer"] = KindName });
    }

    string KindName => _config.Optimizer == OptimizerKind.Muon ? "muon" : "adamw";

    public void Load(string path)
    {
        var (tensors, metadata) = SafeTensors.Load(path);
        // Muon's momentum and AdamW's first moment share a name but not a meaning: a run resumes with the optimiser it saved.
        string saved = metadata.GetValueOrDefault("optimizer") ?? "adamw";
        if (saved != KindName)
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw new InvalidDataException($"{path}: the run was trained with {saved}; resume it with --optimizer {saved} (not {KindName}).");
        }
        using var noGrad = no_grad();
        for (int i = 0; i < _parameters.Length; i++)
        {
            if (!Owns(i)) continue; // a sharded process reads its own share of the full file
            string name = _parameters[i].Name;
            var (m, v) = Moments(i);
            m.copy_(Required(tensors, $"{name}.exp_avg", path, m.shape));
            v.copy_(Required(tensors, $"{name}.exp_avg_sq", path, v.shape));
        }
        foreach (var t in tensors.Values) t.Dispose();
        StepCount = long.Parse(metadata.GetValueOrDefault("step") ?? throw new InvalidDataException($"{path}: metadata 'step' is missing."));
    }

    static Tensor Required(Dictionary<string, Tensor> tensors, string name, string path, long[] shape)
    {
        if (!tensors.TryGetValue(name, out var t)) throw new InvalidDataException($"{path}: optimizer tensor '{name}' is missing.");
        if (!t.shape.SequenceEqual(shape)) throw new InvalidDataException($"{path}: optimizer tensor '{name}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}].");
        return t;
    }

    public void Dispose()
    {
        for (int i = 0; i < _parameters.Length; i++) ReleaseState(i);
    }
}
