using GptSharp.Runs;
using GptSharp.Training;
using GptSharp.Data;
using GptSharp.Tokenization;
using TorchSharp;

namespace GptSharp.Encoders;

/// <summary>What a BERT pretraining run reports: the trainer's result and the held-out masked-token loss and accuracy.</summary>
public sealed record BertPretrainReport(TrainingResult Training, MaskedLmScore HeldOut, int TrainExamples, int HeldOutExamples);

/// <summary>
/// Masked-LM pretraining of a BERT encoder on corpora (embedded names or files): texts cut into context-sized examples,
/// a fixed held-out share of documents (1% by default), BERT's masking, and the shared trainer (checkpoints, resume, metrics, plot).
/// </summary>
public static class BertPretrainRun
{
    /// <summary>The optimiser settings <c>bert pretrain</c> and <c>bert finetune</c> use unless told otherwise (BERT's Adam β₂ 0.999, weight decay 0.01).</summary>
    public static TrainingConfig Defaults { get; } = new()
        { Steps = 1000, BatchSize = 32, LearningRate = 1e-3, WarmupSteps = 50, WeightDecay = 0.01, Beta2 = 0.999, EvalEvery = 200, CheckpointEvery = 250 };

    /// <param name="options">The run folder, resume, device; <see cref="RunOptions.UntilStep"/> stops there (with a checkpoint) on the full run's schedule.</param>
    public static BertPretrainReport Execute(BertConfig config, TrainingConfig training, MaskingConfig masking, IReadOnlyList<string> corpora,
        string tokenizerName, RunOptions options, int maxDocuments = int.MaxValue, double heldOutFraction = 0.01)
    {
        var (runDirectory, resume, device, onStep, cancellation) = options;
        options.RejectLora("BERT pretraining");
        int? untilStep = options.UntilStep;
        training.Validate();
        var tokenizer = GptTokenizer.Load(tokenizerName);
        config = config with { VocabSize = tokenizer.VocabSize };
        config.Validate();
        var (train, heldOut) = Examples(corpora, tokenizer, config.ContextLength, training.Seed, maxDocuments, heldOutFraction);
        if (heldOut.Count == 0) throw new InvalidDataException($"No held-out examples: give more documents, or a larger held-out share than {heldOutFraction:P1}.");
        var masker = new MlmMasker(tokenizer.VocabSize, tokenizer.MaskId, tokenizer.Spec.SpecialTokens.Values, masking);
        BertForMaskedLm? built = null;
        List<EncoderBatch> validation = [];
        var outcome = TrainingRun.Execute(new RunSetup(runDirectory, training, resume, tokenizerName, "BERT masked-LM pretraining", device), run =>
        {
            var model = built = new BertForMaskedLm(config);
            model.to(run.Device);
            var source = new MlmBatchSource(train, masker, training.BatchSize, tokenizer.PadId, training.Seed, run.Position, run.Rank, run.Processes);
            var validationRandom = new Random((int)(training.Seed & 0x7fffffff));
            validation = heldOut.Chunk(training.BatchSize).Take(training.EvalBatches)
                .Select(rows => MlmBatchSource.Pack(rows, masker, tokenizer.PadId, validationRandom)).ToList();
            return new RunObjective<EncoderBatch>(model, config, MaskedLm.Objective(model, run.Device), source,
                () => MaskedLm.Evaluate(model, validation, run.Device).Loss, new
                {
                    objective = "masked-lm", model = config, training, masking, corpora, tokenizer = run.Tokenizer,
                    trainExamples = train.Count, heldOutExamples = heldOut.Count,
                });
        }, onStep: onStep, cancellation: cancellation, untilStep: untilStep);
        using var trained = built!;
        trained.eval();
        var score = MaskedLm.Evaluate(trained, validation, torch.device(device));
        return new BertPretrainReport(outcome.Training, score, train.Count, heldOut.Count);
    }

    /// <summary>Examples from each document of the corpora; a document goes wholly to train or held-out (fixed per seed).</summary>
    public static (List<EncoderExample> Train, List<EncoderExample> HeldOut) Examples(IReadOnlyList<string> corpora, GptTokenizer tokenizer,
        int contextLength, long seed, int maxDocuments = int.MaxValue, double heldOutFraction = 0.01)
    {
        var train = new List<EncoderExample>();
        var heldOut = new List<EncoderExample>();
        foreach (string corpus in corpora)
        {
            string name = Path.GetFileName(corpus);
            int index = 0;
            foreach (var document in Corpus.Read(corpus).Take(maxDocuments))
            {
                var target = ShardBuilder.IsValidation(seed, name, index++, heldOutFraction) ? heldOut : train;
                target.AddRange(EncoderExamples.FromText(document.Text, tokenizer, contextLength));
            }
        }
        return (train, heldOut);
    }

    /// <summary>Loads a masked-LM run's model and the tokenizer it was trained with.</summary>
    public static (BertForMaskedLm Model, GptTokenizer Tokenizer) Load(string runDirectory)
    {
        var model = new BertForMaskedLm(Checkpoint.ReadConfig<BertConfig>(runDirectory));
        Checkpoint.LoadWeights(model, Checkpoint.WeightsPath(runDirectory));
        model.eval();
        return (model, GptTokenizer.Load(Checkpoint.ReadState(runDirectory).Tokenizer));
    }
}
