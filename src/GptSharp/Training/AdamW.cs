using GptSharp.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace GptSharp.Training;

/// <summary>
/// AdamW with decoupled weight decay on matrices only. Written here rather than taken from TorchSharp so that its
/// state (step, first and second moments per parameter) is saved in a checkpoint as safetensors and restored exactly,
/// and can later be sharded across processes.
/// </summary>
public sealed class AdamW : IDisposable
{
    readonly (string Name, Parameter Parameter)[] _parameters;
    readonly Tensor[] _exp_avg, _exp_avg_sq;
    readonly TrainingConfig _config;

    public AdamW(IEnumerable<(string Name, Parameter Parameter)> parameters, TrainingConfig config)
    {
        _parameters = [.. parameters.Where(p => p.Parameter.requires_grad)];
        _config = config;
        _exp_avg = [.. _parameters.Select(p => zeros_like(p.Parameter).DetachFromDisposeScope())];
        _exp_avg_sq = [.. _parameters.Select(p => zeros_like(p.Parameter).DetachFromDisposeScope())];
    }

    /// <summary>Optimiser steps taken so far.</summary>
    public long StepCount { get; private set; }

    public IEnumerable<Parameter> Parameters => _parameters.Select(p => p.Parameter);

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
            if (grad is null) continue;
            double decay = _config.WeightDecay > 0 && p.dim() >= 2 ? 1 - lr * _config.WeightDecay : 1;
            if (FusedAdamW.Applies(p, grad, _exp_avg[i], _exp_avg_sq[i]))
            {
                FusedAdamW.Update(p, grad, _exp_avg[i], _exp_avg_sq[i], new FusedAdamW.Coefficients(
                    (float)gradScale, (float)decay, (float)_config.Beta1, (float)_config.Beta2, (float)(lr / bias1),
                    (float)(1 / Math.Sqrt(bias2)), (float)_config.Epsilon));
                continue;
            }
            if (gradScale != 1) grad = grad * gradScale;
            if (decay != 1) p.mul_(decay);
            _exp_avg[i].lerp_(grad, 1 - _config.Beta1);
            _exp_avg_sq[i].mul_(_config.Beta2).addcmul_(grad, grad, value: 1 - _config.Beta2);
            var denominator = _exp_avg_sq[i].sqrt().mul_(1 / Math.Sqrt(bias2)).add_(_config.Epsilon);
            p.addcdiv_(_exp_avg[i], denominator, value: -lr / bias1);
        }
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
    public double GradNorm()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        double sumOfSquares = 0;
        foreach (var (_, p) in _parameters)
        {
            var grad = p.grad;
            if (grad is null) continue;
            sumOfSquares += FusedAdamW.Applies(p, grad, grad, grad) ? FusedAdamW.SumOfSquares(grad) : grad.square().sum().ToDouble();
        }
        return Math.Sqrt(sumOfSquares);
    }

    public void Save(string path) => SafeTensors.Save(path,
        _parameters.Select((p, i) => (p.Name, i)).SelectMany(x => new[] { ($"{x.Name}.exp_avg", _exp_avg[x.i]), ($"{x.Name}.exp_avg_sq", _exp_avg_sq[x.i]) })
            .ToDictionary(x => x.Item1, x => x.Item2),
        new Dictionary<string, string> { ["step"] = StepCount.ToString() });

    public void Load(string path)
    {
        var (tensors, metadata) = SafeTensors.Load(path);
        using var noGrad = no_grad();
        for (int i = 0; i < _parameters.Length; i++)
        {
            string name = _parameters[i].Name;
            _exp_avg[i].copy_(Required(tensors, $"{name}.exp_avg", path, _exp_avg[i].shape));
            _exp_avg_sq[i].copy_(Required(tensors, $"{name}.exp_avg_sq", path, _exp_avg_sq[i].shape));
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
        foreach (var t in _exp_avg) t.Dispose();
        foreach (var t in _exp_avg_sq) t.Dispose();
    }
}
