using GptSharp.Runs;
using System.Text.Json;
using GptSharp.Data;
using GptSharp.Models;
using GptSharp.Tokenization;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Alignment;

/// <summary>What a DPO run measured on held-out pairs.</summary>
/// <param name="HeldOutPreferenceAccuracy">Share of held-out pairs whose implicit reward β·(log π/π_ref) is higher for the chosen answer.</param>
public sealed record DpoReport(TrainingResult Training, int TrainPairs, int HeldOutPairs, double HeldOutLoss, double HeldOutPreferenceAccuracy);

/// <summary>
/// Direct Preference Optimization: the policy starts as a copy of the SFT model, a frozen copy is the reference, and
/// the loss is −log σ(β·[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]) with log-probabilities summed over the
/// answer's tokens. The simpler alternative to reward model + PPO, on the same pairs and the same trainer.
/// </summary>
public static class DpoRun
{
    /// <summary>The optimiser settings <c>dpo</c> uses unless told otherwise.</summary>
    public static TrainingConfig Defaults { get; } = new()
        { Steps = 200, BatchSize = 8, LearningRate = 5e-5, WarmupSteps = 10, WeightDecay = 0, EvalEvery = 100, CheckpointEvery = 100 };

    /// <summary>DPO's β unless told otherwise: the strength of the pull toward the reference.</summary>
    public const double DefaultBeta = 0.5;

    public static DpoReport Execute(string fromRun, IReadOnlyList<PreferencePair> train, IReadOnlyList<PreferencePair> heldOut,
        TrainingConfig training, RunOptions options, double beta = DefaultBeta, Action<int>? onStart = null)
    {
        var (runDirectory, resume, device, onStep, cancellation) = options;
        var lora = options.Lora;
        training.Validate();
        if (beta <= 0) throw new ArgumentOutOfRangeException(nameof(beta), beta, "beta must be > 0.");
        if (heldOut.Count == 0) throw new InvalidDataException("DPO needs held-out preference pairs to report on.");
        var (policy, sft) = Checkpoint.LoadModel(fromRun);
        var (reference, _) = Checkpoint.LoadModel(fromRun);
        using var _p = policy;
        using var _r = reference;
        if (lora is not null) Lora.Attach(policy, lora);
        var torchDevice = torch.device(device);
        reference.eval();
        foreach (var parameter in reference.parameters()) parameter.requires_grad = false;

        var tokenizer = GptTokenizer.Load(sft.Tokenizer);
        var template = new ChatTemplate(tokenizer);
        int t = policy.Config.ContextLength;
        DpoBatch Pack(IReadOnlyList<(RenderedChat Chosen, RenderedChat Rejected)> rows) => DpoBatch.Pack(rows, t, tokenizer.PadId);
        var trainPairs = train.Select(p => RewardRun.Render(template, p)).ToList();
        var heldBatches = heldOut.Select(p => RewardRun.Render(template, p)).Chunk(training.BatchSize).Select(rows => Pack(rows)).ToList();

        var outcome = TrainingRun.Execute(new RunSetup(runDirectory, training, resume, sft.Tokenizer, "DPO", device), run =>
        {
            policy.to(run.Device);
            reference.to(run.Device);
            var source = new PairBatchSource<DpoBatch>(trainPairs, training.BatchSize, training.Seed, Pack, run.Position, run.Rank, run.Processes,
                PairBatchSource<DpoBatch>.Groups(train));
            return new RunObjective<DpoBatch>(policy, policy.Config,
                batch => { var (loss, _) = Loss(policy, reference, batch, beta, run.Device); return new ObjectiveOutput(loss, batch.Pairs); },
                source, () => Evaluate(policy, reference, heldBatches.Take(training.EvalBatches).ToList(), beta, run.Device).Loss, new
                {
                    objective = "dpo", beta, from = RunFolder.Reference(runDirectory, fromRun), model = policy.Config, training, tokenizer = run.Tokenizer,
                    trainPairs = train.Count, heldOutPairs = heldOut.Count,
                });
        }, (start, _) => onStart?.Invoke(start), onStep, cancellation);
        policy.eval();
        var (heldLoss, accuracy) = Evaluate(policy, reference, heldBatches, beta, torchDevice);
        return new DpoReport(outcome.Training, train.Count, heldOut.Count, heldLoss, accuracy);
    }

    /// <summary>
    /// Sum of log-probabilities of each row's target tokens (targets of -1 do not count): (2B, T) batch → (2B).
    /// </summary>
    public static Tensor SequenceLogProbabilities(Gpt model, TokenBatch batch, Device device)
    {
        using var scope = NewDisposeScope();
        var inputs = tensor(batch.Inputs, [batch.BatchSize, batch.SequenceLength], device: device);
        var targets = tensor(batch.Targets, [batch.BatchSize, batch.SequenceLength], device: device);
        var mask = targets >= 0;
        var logProbabilities = model.forward(inputs).log_softmax(-1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1);
        return (logProbabilities * mask).sum(-1).MoveToOuterDisposeScope();
    }

    /// <summary>The DPO loss (mean over pairs) and the implicit-reward margins (one a pair).</summary>
    public static (Tensor Loss, Tensor Margins) Loss(Gpt policy, Gpt reference, DpoBatch batch, double beta, Device device)
    {
        using var scope = NewDisposeScope();
        var policyLogp = SequenceLogProbabilities(policy, batch.Rows, device);
        Tensor referenceLogp;
        using (no_grad()) referenceLogp = SequenceLogProbabilities(reference, batch.Rows, device);
        var ratios = policyLogp - referenceLogp;   // [Rows]: each distinct conversation once
        var (chosen, rejected) = (tensor(batch.ChosenRows, device: device), tensor(batch.RejectedRows, device: device));
        var margins = beta * (ratios.index_select(0, chosen) - ratios.index_select(0, rejected));
        var loss = -nn.functional.logsigmoid(margins).mean();
        return (loss.MoveToOuterDisposeScope(), margins.detach().MoveToOuterDisposeScope());
    }

    static (double Loss, double Accuracy) Evaluate(Gpt policy, Gpt reference, IReadOnlyList<DpoBatch> batches, double beta, Device device)
    {
        using var noGrad = no_grad();
        double loss = 0;
        long correct = 0, total = 0;
        foreach (var batch in batches)
        {
            using var scope = NewDisposeScope();
            var (l, margins) = Loss(policy, reference, batch, beta, device);
            int pairs = batch.Pairs;
            loss += l.item<float>() * pairs;
            correct += (margins > 0).sum().item<long>();
            total += pairs;
        }
        return (loss / Math.Max(1, total), correct / (double)Math.Max(1, total));
    }
}

/// <summary>
/// DPO's batch: the distinct conversations of B preference pairs as rows (see <see cref="DistinctPairRows"/>: one
/// prompt's comparisons share their answers, so each is scored once) and for each pair the rows of its chosen and
/// rejected answers.
/// </summary>
public sealed record DpoBatch(TokenBatch Rows, long[] ChosenRows, long[] RejectedRows)
{
    public int Pairs => ChosenRows.Length;

    public static DpoBatch Pack(IReadOnlyList<(RenderedChat Chosen, RenderedChat Rejected)> pairs, int sequenceLength, int padId)
    {
        var distinct = DistinctPairRows.Of(pairs);
        return new DpoBatch(ChatBatchSource.Pack(distinct.Rows, sequenceLength, padId), distinct.ChosenRows, distinct.RejectedRows);
    }
}
