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
    /// <summary>The optimiser settings <c>sft</c> uses unless told otherwise: a smaller rate than pretraining, few steps.</summary>
    public static TrainingConfig Defaults { get; } = new() { Steps = 400, LearningRate = 1e-3, WarmupSteps = 20, EvalEvery = 100, CheckpointEvery = 100 };

    /// <param name="fromRun">The pretrained run whose checkpoint initialises the model.</param>
    /// <param name="train">Training conversations.</param>
    /// <param name="heldOut">Held-out conversations for the validation loss.</param>
    public static SftReport Execute(string fromRun, IReadOnlyList<IReadOnlyList<ChatMessage>> train, IReadOnlyList<IReadOnlyList<ChatMessage>> heldOut,
        TrainingConfig training, RunOptions options, Action<Gpt, int>? onStart = null)
    {
        var (runDirectory, resume, device, onStep, cancellation) = options;
        var lora = options.Lora;
        training.Validate();
        if (heldOut.Count == 0) throw new InvalidDataException("SFT needs at least one held-out conversation for its validation loss.");
        var (model, pretrained) = Checkpoint.LoadModel(fromRun);
        using var _ = model;
        long trainable = lora is null ? model.ParameterCount : Lora.Attach(model, lora);
        var tokenizer = GptTokenizer.Load(pretrained.Tokenizer);
        var template = new ChatTemplate(tokenizer);
        int t = model.Config.ContextLength;
        var trainChats = Trainable(train.Select(template.Render).ToList(), t, "training");
        var heldChats = Trainable(heldOut.Select(template.Render).ToList(), t, "held-out");
        int dropped = train.Count - trainChats.Count + heldOut.Count - heldChats.Count;

        ChatBatchSource? source = null;
        var outcome = TrainingRun.Execute(new RunSetup(runDirectory, training, resume, pretrained.Tokenizer, "Supervised fine-tuning (assistant tokens)", device), run =>
        {
            model.to(run.Device);
            source = new ChatBatchSource(trainChats, training.BatchSize, t, tokenizer.PadId, training.Seed, run.Position, run.Rank, run.Processes);
            var validation = heldChats.Chunk(training.BatchSize).Take(training.EvalBatches)
                .Select(rows => ChatBatchSource.Pack(rows, t, tokenizer.PadId)).ToList();
            return new RunObjective<TokenBatch>(model, model.Config, Pretraining.Objective(model, run.Device), source,
                Pretraining.ValidationLoss(model, validation, run.Device), new
                {
                    objective = "sft", from = RunFolder.Reference(runDirectory, fromRun), model = model.Config, training, lora, tokenizer = run.Tokenizer,
                    trainConversations = trainChats.Count, heldOutConversations = heldChats.Count, truncated = source.Truncated, dropped,
                });
        }, (start, _) => onStart?.Invoke(model, start), onStep, cancellation);
        return new SftReport(outcome.Training, trainChats.Count, heldChats.Count, source!.Truncated, trainable, dropped);
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
