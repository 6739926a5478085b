using GptSharp.Encoders;
using GptSharp.Evaluation;
using GptSharp.Runs;
using GptSharp.Runtime;
using System.ComponentModel;
using GptSharp.Data;
using GptSharp.Training;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

/// <summary>Training options the BERT trainers share.</summary>
abstract class BertTrainingSettings : TrainingSettings
{
    [CommandOption("-r|--run-dir")] [Description("Folder for checkpoints, metrics.jsonl and loss.png.")]
    public string RunDir { get; init; } = "runs/bert";
    protected override TrainingConfig StageDefaults => BertPretrainRun.Defaults;

    public void Report(Action<double, string?> progress, StepMetrics m)
    {
        progress(m.Step, $"loss {m.Loss:F3} lr {m.LearningRate:E1}");
        if (Quiet && (m.Step % 10 == 0 || m.ValLoss is not null))
            Console.WriteLine($"step {m.Step}: loss {m.Loss:F4}, lr {m.LearningRate:E2}" + (m.ValLoss is double v ? $", held-out loss {v:F4}" : ""));
    }
}

sealed class BertPretrainSettings : BertTrainingSettings
{
    [CommandOption("--preset")] [Description("tiny, small or base.")]
    public string Preset { get; init; } = "tiny";
    [CommandOption("--corpus")] [Description("Embedded corpora or files, comma-separated (tang, songci, sotu, moby-dick, spam, brown).")]
    public string Corpus { get; init; } = "tang";
    [CommandOption("--tokenizer")] [Description("Tokenizer folder (from `tokenizer train`), gpt2 or cl100k_base.")]
    public string Tokenizer { get; init; } = "runs/tokenizer";
    [CommandOption("--context")] [Description("Context length in tokens (default: the preset's).")]
    public int? ContextLength { get; init; }
    [CommandOption("--dropout")] [Description("Dropout rate (default: the preset's, 0.1 as in BERT).")]
    public double? Dropout { get; init; }
    [CommandOption("--whole-word")] [Description("Mask whole words (one Chinese character, or an English word with all its tokens).")]
    public bool WholeWord { get; init; }
    [CommandOption("--mask-probability")] [Description("Share of tokens chosen for prediction (of them 80% masked, 10% random, 10% kept).")] public double MaskProbability { get; init; } = 0.15;
    [CommandOption("--max-documents")] [Description("Read at most this many documents per corpus.")]
    public int MaxDocuments { get; init; } = int.MaxValue;
    [CommandOption("--val-fraction")] [Description("Share of documents held out for the masked-token loss and accuracy.")]
    public double HeldOut { get; init; } = 0.01;
}

/// <summary><c>gptsharp bert pretrain</c>: masked-LM pretraining; reports held-out masked-token loss and accuracy.</summary>
sealed class BertPretrainCommand : Command<BertPretrainSettings>
{
    public override int Execute(CommandContext context, BertPretrainSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var preset = BertConfig.Preset(s.Preset, 8);
        var config = preset with { ContextLength = s.ContextLength ?? preset.ContextLength, Dropout = s.Dropout ?? preset.Dropout };
        var training = s.Training().Validate();
        var masking = new MaskingConfig { Probability = s.MaskProbability, WholeWord = s.WholeWord }.Validate();
        BertPretrainReport report = null!;
        ProgressDisplay.Run("bert pretrain", training.Steps, "steps", s.Quiet, (Action<double, string?> progress) =>
            report = BertPretrainRun.Execute(config, training, masking, s.Corpus.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                TokenizerReference.Resolve(s.Tokenizer, keepIn: Path.Combine(s.RunDir, "source-tokenizer")),
                new RunOptions(s.RunDir) { Resume = s.Resume, Device = runtime.Device, OnStep = m => s.Report(progress, m), Cancellation = cancellation }, s.MaxDocuments, s.HeldOut));
        AnsiConsole.MarkupLine($"Done: {report.Training.StepsDone} steps in {report.Training.Seconds:F0} s on {report.TrainExamples:N0} examples; " +
                               $"held-out ({report.HeldOutExamples:N0} examples, {report.HeldOut.MaskedTokens:N0} masked tokens): loss {report.HeldOut.Loss:F3}, " +
                               $"masked-token accuracy {100 * report.HeldOut.Accuracy:F1}%. Checkpoint in {Markup.Escape(Path.Combine(s.RunDir, Checkpoint.Folder))}.");
        return 0;
    }
}

sealed class BertFillMaskSettings : CommonSettings
{
    [CommandOption("-r|--run-dir")] [Description("A `bert pretrain` run.")]
    public string RunDir { get; init; } = "runs/bert";
    [CommandOption("--text")] [Description("Text with one or more <|mask|>.")]
    public string Text { get; init; } = "";
    [CommandOption("--top-k")] [Description("Fillers shown per mask.")]
    public int TopK { get; init; } = 5;
}

/// <summary><c>gptsharp bert fill-mask</c>: the top-k fillers, with probabilities, for each mask in a text.</summary>
sealed class BertFillMaskCommand : Command<BertFillMaskSettings>
{
    public override int Execute(CommandContext context, BertFillMaskSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        var (model, tokenizer) = BertPretrainRun.Load(s.RunDir);
        using var _ = model;
        var fillers = FillMask.Predict(model, tokenizer, s.Text, s.TopK);
        var table = new Table().AddColumns("mask", "rank", "token", "probability");
        for (int m = 0; m < fillers.Count; m++)
            for (int k = 0; k < fillers[m].Count; k++)
                table.AddRow((m + 1).ToString(), (k + 1).ToString(), Markup.Escape(fillers[m][k].Text), $"{fillers[m][k].Probability:P1}");
        AnsiConsole.Write(table);
        return 0;
    }
}

sealed class BertFinetuneSettings : BertTrainingSettings
{
    [CommandOption("--from")] [Description("The `bert pretrain` run whose encoder starts the classifier.")]
    public string From { get; init; } = "runs/bert";
    [CommandOption("--data")] [Description("JSON lines with `text` and `label` (default: the embedded spam/ham messages).")]
    public string Data { get; init; } = "spam";
    [CommandOption("--labels")] [Description("The labels, comma-separated (default: those found in the data); any other label is an error.")]
    public string? Labels { get; init; }
    [CommandOption("--scratch")] [Description("Take only --from's shape and tokenizer, not its weights: the same encoder trained on the task alone (what pretraining adds).")]
    public bool Scratch { get; init; }
    [CommandOption("--pooling")] [Description("What the classifier reads: cls (the pooler on [[CLS]], as BERT was published) or mean (the mean of the tokens' final states). Default: cls.")]
    public string Pooling { get; init; } = "cls";
    [CommandOption("--windows")] [Description("Read each text whole, in context-sized windows: each window trains with the text's label, and a text's prediction averages its windows' logits (default: off, a text is its first context − 2 tokens).")]
    public bool Windows { get; init; }

    public override ValidationResult Validate() => Pooling is "cls" or "mean"
        ? base.Validate()
        : ValidationResult.Error($"--pooling '{Pooling}': expected cls or mean.");
}

/// <summary><c>gptsharp bert finetune</c>: a classifier on labelled texts, scored against majority and bag-of-words baselines.</summary>
sealed class BertFinetuneCommand : Command<BertFinetuneSettings>
{
    public override int Execute(CommandContext context, BertFinetuneSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var data = LabeledData.Load(s.Data, s.Labels?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), s.RunSeed);
        var training = s.Training();
        BertFinetuneReport report = null!;
        ProgressDisplay.Run("bert finetune", training.Steps, "steps", s.Quiet, (Action<double, string?> progress) =>
            report = BertFinetuneRun.Execute(s.From, data, training,
                new RunOptions(s.RunDir) { Resume = s.Resume, Device = runtime.Device, OnStep = m => s.Report(progress, m), Cancellation = cancellation }, new FinetuneChoices(s.Scratch, Enum.Parse<Pooling>(s.Pooling, ignoreCase: true), s.Windows)));
        var table = new Table().AddColumns("held-out", "accuracy", $"F1 ({Markup.Escape(report.PositiveLabel)})", "precision", "recall");
        foreach (var (name, score) in new[] { ("BERT", report.Model), ("majority class", report.Majority), ("bag-of-words logistic", report.BagOfWords) })
            table.AddRow(name, $"{score.Accuracy:P1}", $"{score.F1:F3}", $"{score.Precision:F3}", $"{score.Recall:F3}");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"{report.TrainExamples:N0} train / {report.HeldOutExamples:N0} held-out texts; labels {Markup.Escape(string.Join(", ", report.Labels))}. " +
                               $"Checkpoint in {Markup.Escape(Path.Combine(s.RunDir, Checkpoint.Folder))}.");
        return 0;
    }
}

sealed class BertContrastiveSettings : BertTrainingSettings
{
    [CommandOption("--from")] [Description("The `bert pretrain` run (or an earlier contrastive one) whose encoder starts.")]
    public string From { get; init; } = "runs/bert";
    [CommandOption("--pairs")] [Description("JSON lines pairing `text` with the `positive` text it should sit nearest (optional `group`: pairs of one group are not each other's negatives); 10% held out. Give at most one of --pairs, --first-lines, --same-label. Default: none.")]
    public string? Pairs { get; init; }
    [CommandOption("--first-lines")] [Description("A corpus (embedded name or file) whose documents pair their first line with the rest, as a poem's opening with the poem; its held-out 1% as pretraining holds it out. Default: tang, when neither --pairs nor --same-label is given.")]
    public string? FirstLines { get; init; }
    [CommandOption("--same-label")] [Description("Labelled JSON lines (`text`, `label`; e.g. spam): each text paired with another of its label, scored by 5-NN accuracy on the data's held-out 20%. Default: none.")]
    public string? SameLabel { get; init; }
    [CommandOption("--pooling")] [Description("How a text's vector is read, in training and when served: mean or cls. Default: mean.")]
    public string Pooling { get; init; } = "mean";
    [CommandOption("--temperature")] [Description("Softmax temperature over cosine similarities.")]
    public double? Temperature { get; init; }
    protected override TrainingConfig StageDefaults => ContrastiveRun.Defaults;
    public override IEnumerable<object> Defaults => [.. base.Defaults, new ContrastiveConfig()];

    public override ValidationResult Validate() =>
        new[] { Pairs, FirstLines, SameLabel }.Count(source => source is not null) > 1 ? ValidationResult.Error("Give at most one of --pairs, --first-lines, --same-label: they are three sources of pairs.")
        : Pooling is not ("mean" or "cls") ? ValidationResult.Error($"--pooling '{Pooling}': expected mean or cls.")
        : base.Validate();
}

/// <summary><c>gptsharp bert contrastive</c>: an encoder's vectors trained on pairs; reports what they are worth before, after and by bag-of-words.</summary>
sealed class BertContrastiveCommand : Command<BertContrastiveSettings>
{
    public override int Execute(CommandContext context, BertContrastiveSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var training = s.Training().Validate();
        var contrastive = OptionDefaults.Apply(s, new ContrastiveConfig() with { Pooling = Enum.Parse<Pooling>(s.Pooling, ignoreCase: true) }).Validate();
        var data = s.Pairs is not null ? ContrastiveData.Load(s.Pairs, training.Seed)
            : s.SameLabel is not null ? ContrastiveData.SameLabel(LabeledData.Load(s.SameLabel, null, training.Seed), training.Seed)
            : ContrastiveData.FirstLines(s.FirstLines ?? "tang", training.Seed);
        var (pretrained, tokenizer) = BertPretrainRun.Load(s.From);
        var before = Scored(pretrained, () => EmbeddingScore.Of(pretrained.Encoder, tokenizer, data, contrastive.Pooling));
        ContrastiveReport report = null!;
        ProgressDisplay.Run("bert contrastive", training.Steps, "steps", s.Quiet, (Action<double, string?> progress) =>
            report = ContrastiveRun.Execute(s.From, data, training, contrastive,
                new RunOptions(s.RunDir) { Resume = s.Resume, Device = runtime.Device, OnStep = m => s.Report(progress, m), Cancellation = cancellation }));
        var (trained, _) = BertPretrainRun.Load(s.RunDir);
        var after = Scored(trained, () => EmbeddingScore.Of(trained.Encoder, tokenizer, data, contrastive.Pooling));
        var bagOfWords = EmbeddingScore.Of(null, tokenizer, data);
        var table = new Table().AddColumns("held-out", before.Measure);
        table.AddRow($"BERT before ({Markup.Escape(s.From)})", $"{before.Value:P1}");
        table.AddRow("BERT after contrastive training", $"{after.Value:P1}");
        table.AddRow("bag-of-words vectors", $"{bagOfWords.Value:P1}");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"{report.TrainPairs:N0} train / {report.HeldOutPairs:N0} held-out pairs; held-out contrastive loss {report.HeldOutLoss:F3}. " +
                               $"Checkpoint in {Markup.Escape(Path.Combine(s.RunDir, Checkpoint.Folder))}; serve it with `serve --run-dir {Markup.Escape(s.RunDir)} --pooling {s.Pooling}`.");
        return 0;
    }

    static (string Measure, double Value) Scored(BertForMaskedLm model, Func<(string, double)> score)
    {
        using (model) return score();
    }
}

sealed class BertClassifySettings : CommonSettings
{
    [CommandOption("-r|--run-dir")] [Description("A `bert finetune` run.")]
    public string RunDir { get; init; } = "runs/bert-spam";
    [CommandOption("--text")] [Description("Text to classify.")] public string Text { get; init; } = "";
}

/// <summary><c>gptsharp bert classify</c>: label probabilities for a text.</summary>
sealed class BertClassifyCommand : Command<BertClassifySettings>
{
    public override int Execute(CommandContext context, BertClassifySettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        var (model, config, tokenizer) = BertFinetuneRun.Load(s.RunDir);
        using var _ = model;
        foreach (var (label, probability) in BertFinetuneRun.Classify(model, config, tokenizer, s.Text))
            Console.WriteLine($"{label}\t{probability:P1}");
        return 0;
    }
}
