using GptSharp.Runs;
using System.Text.Json;
using GptSharp.Data;
using GptSharp.Models;
using GptSharp.Tokenization;
using GptSharp.Training;
using TorchSharp;

namespace GptSharp.Alignment;

/// <summary>What an SFT run reports besides the trainer's result.</summary>
/// <param name="TrainableParameters">Parameters the optimiser changed (all of them, or only the LoRA adapters).</param>
/// <param name="Dropped">Conversations (training and held-out) left out because no assistant token falls within the context.</param>
public sealed record SftReport(TrainingResult Training, int TrainConversations, int HeldOutConversations, int Truncated, long TrainableParameters, int Dropped);

/// <summary>
/// Supervised fine-tuning: start from a pretrained run's weights and train on conversations with the loss on assistant
/// tokens only, through the same trainer as pretraining. Held-out loss is measured on assistant tokens of held-out
/// conversations.
/// </summary>
public static class SftRun
{
    /// <param name="fromRun">The pretrained run whose checkpoint initialises the model.</param>
    /// <param name="train">Training conversations.</param>
    /// <param name="heldOut">Held-out conversations for the validation loss.</param>
    public static SftReport Execute(string fromRun, IReadOnlyList<IReadOnlyList<ChatMessage>> train, IReadOnlyList<IReadOnlyList<ChatMessage>> heldOut,
        TrainingConfig training, string runDirectory, bool resume, string device = "cpu",
        Action<Gpt, int>? onStart = null, Action<StepMetrics>? onStep = null, CancellationToken cancellation = default, LoraConfig? lora = null)
    {
        training.Validate();
        if (heldOut.Count == 0) throw new InvalidDataException("SFT needs at least one held-out conversation for its validation loss.");
        var (model, pretrained) = Checkpoint.LoadModel(fromRun);
        using var _ = model;
        long trainable = lora is null ? model.ParameterCount : Lora.Attach(model, lora);
        var torchDevice = torch.device(device);
        model.to(torchDevice);
        var tokenizer = GptTokenizer.Load(pretrained.Tokenizer);
        var template = new ChatTemplate(tokenizer);
        int t = model.Config.ContextLength;
        var trainChats = Trainable(train.Select(template.Render).ToList(), t, "training");
        var heldChats = Trainable(heldOut.Select(template.Render).ToList(), t, "held-out");
        int dropped = train.Count - trainChats.Count + heldOut.Count - heldChats.Count;

        var (start, position) = Checkpoint.StartingPoint(runDirectory, resume);

        torch.manual_seed(training.Seed);
        using var world = DataParallel.Join(training.BatchSize, training.ShardOptimizerState);
        var source = new ChatBatchSource(trainChats, training.BatchSize, t, tokenizer.PadId, training.Seed, position, world?.Rank ?? 0, world?.Size ?? 1);
        var validation = heldChats.Chunk(training.BatchSize).Take(training.EvalBatches)
            .Select(rows => ChatBatchSource.Pack(rows, t, tokenizer.PadId)).ToList();
        var trainer = new Trainer<TokenBatch>(model, training, runDirectory, pretrained.Tokenizer, Pretraining.Objective(model, torchDevice), source,
            Pretraining.ValidationLoss(model, validation, torchDevice)) { OnStep = onStep, Parallel = world is null ? null : new DataParallel(world) { ShardOptimizerState = training.ShardOptimizerState } };
        bool root = world?.IsRoot ?? true;
        if (resume) trainer.Resume();
        else if (root)
        {
            Checkpoint.WriteRunConfig(runDirectory, new
            {
                objective = "sft", from = Path.GetFullPath(fromRun), model = model.Config, training, lora, tokenizer = pretrained.Tokenizer,
                trainConversations = trainChats.Count, heldOutConversations = heldChats.Count, truncated = source.Truncated, dropped,
            });
        }
        onStart?.Invoke(model, start);
        var result = trainer.Run(start, cancellation: cancellation);
        if (root) LossPlot.Write(runDirectory, "Supervised fine-tuning (assistant tokens)");
        return new SftReport(result, trainChats.Count, heldChats.Count, source.Truncated, trainable, dropped);
    }

    /// <summary>The conversations with at least one assistant token within the context; none at all is an error that says why.</summary>
    static List<RenderedChat> Trainable(List<RenderedChat> chats, int contextLength, string which)
    {
        var kept = chats.Where(c => ChatBatchSource.HasTrainableToken(c, contextLength)).ToList();
        if (kept.Count == 0)
            throw new InvalidDataException($"No {which} conversation has an assistant token within the context of {contextLength} tokens " +
                $"(all {chats.Count} dropped): shorten the system and user turns, or fine-tune a model with a longer context.");
        return kept;
    }
}
