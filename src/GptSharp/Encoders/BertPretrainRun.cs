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

    /// <param name="untilStep">Stop there (with a checkpoint) on the full run's schedule; resume later.</param>
    public static BertPretrainReport Execute(BertConfig config, TrainingConfig training, MaskingConfig masking, IReadOnlyList<string> corpora,
        string tokenizerName, string runDirectory, bool resume, string device = "cpu", int maxDocuments = int.MaxValue, double heldOutFraction = 0.01,
        Action<StepMetrics>? onStep = null, CancellationToken cancellation = default, int? untilStep = null)
    {
        training.Validate();
        var tokenizer = GptTokenizer.Load(tokenizerName);
        config = config with { VocabSize = tokenizer.VocabSize };
        config.Validate();
        var (train, heldOut) = Examples(corpora, tokenizer, config.ContextLength, training.Seed, maxDocuments, heldOutFraction);
        if (heldOut.Count == 0) throw new InvalidDataException($"No held-out examples: give more documents, or a larger held-out share than {heldOutFraction:P1}.");
        var masker = new MlmMasker(tokenizer.VocabSize, tokenizer.MaskId, tokenizer.Spec.SpecialTokens.Values, masking);
        var torchDevice = torch.device(device);
        torch.manual_seed(training.Seed);
        using var model = new BertForMaskedLm(config);
        model.to(torchDevice);

        var (start, position) = Checkpoint.StartingPoint(runDirectory, resume);
        var source = new MlmBatchSource(train, masker, training.BatchSize, tokenizer.PadId, training.Seed, position);
        var validationRandom = new Random((int)(training.Seed & 0x7fffffff));
        var validation = heldOut.Chunk(training.BatchSize).Take(training.EvalBatches)
            .Select(rows => MlmBatchSource.Pack(rows, masker, tokenizer.PadId, validationRandom)).ToList();
        var trainer = new Trainer<EncoderBatch>(model, config, training, runDirectory, tokenizerName, MaskedLm.Objective(model, torchDevice), source,
            () => MaskedLm.Evaluate(model, validation, torchDevice).Loss) { OnStep = onStep };
        if (resume) trainer.Resume();
        else Checkpoint.WriteRunConfig(runDirectory, new
        {
            objective = "masked-lm", model = config, training, masking, corpora, tokenizer = tokenizerName,
            trainExamples = train.Count, heldOutExamples = heldOut.Count,
        });
        var result = trainer.Run(start, untilStep, cancellation);
        model.eval();
        var score = MaskedLm.Evaluate(model, validation, torchDevice);
        LossPlot.Write(runDirectory, "BERT masked-LM pretraining");
        return new BertPretrainReport(result, score, train.Count, heldOut.Count);
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
