using GptSharp.Cli.Commands;
using Spectre.Console.Cli;

namespace GptSharp.Cli;

/// <summary>Every command of <c>gptsharp</c>, its description and examples: one place read by the program and by the
/// generated reference (<see cref="CliReference"/>).</summary>
public static class CommandTree
{
    public static void Configure(IConfigurator config)
    {
        config.SetApplicationName("gptsharp");
        config.SetHelpProvider(new DefaultsHelpProvider(config.Settings));
        config.SetExceptionHandler((exception, _) => ErrorReport.Print(exception));
        config.SetInterceptor(new CommandLineCheck.Interceptor());
        config.AddCommand<SpeedrunCommand>("speedrun").WithDescription("The main job on the embedded data, stage by stage; reruns skip finished stages.")
            .WithExample("speedrun", "--run-dir", "runs/speedrun");
        config.AddCommand<DoctorCommand>("doctor").WithDescription("Show versions, threads, device, CPU features, the libstdc++ fix and matmul GFLOP/s.");
        config.AddBranch("tokenizer", tokenizer =>
        {
            tokenizer.SetDescription("Train a byte-level BPE tokenizer, or encode and decode text.");
            tokenizer.AddCommand<TokenizerTrainCommand>("train").WithDescription("Train BPE on corpora; writes tokenizer.tiktoken and tokenizer.json.")
                .WithExample("tokenizer", "train", "--corpus", "tang,sotu", "--vocab-size", "8192", "--out", "runs/tokenizer");
            tokenizer.AddCommand<TokenizerEncodeCommand>("encode").WithDescription("Print the token ids (and pieces) of a text.")
                .WithExample("tokenizer", "encode", "--tokenizer", "runs/tokenizer", "--text", "床前明月光");
            tokenizer.AddCommand<TokenizerDecodeCommand>("decode").WithDescription("Print the text of token ids.")
                .WithExample("tokenizer", "decode", "--tokenizer", "runs/tokenizer", "--ids", "256 1024 77");
        });
        config.AddBranch("data", data =>
        {
            data.SetDescription("Turn corpora into token shards.");
            data.AddCommand<DataPrepareCommand>("prepare").WithDescription("Tokenize corpora into train.bin / val.bin / meta.json.")
                .WithExample("data", "prepare", "--corpus", "tang", "--tokenizer", "runs/tokenizer", "--out", "runs/data");
        });
        config.AddCommand<PretrainCommand>("pretrain").WithDescription("Train a GPT on token shards (next-token prediction); --resume continues a run.")
            .WithExample("pretrain", "--preset", "tiny", "--data", "runs/data", "--run-dir", "runs/tiny", "--steps", "2000");
        config.AddCommand<GenerateCommand>("generate").WithDescription("Sample text from a trained run, streamed.")
            .WithExample("generate", "--run-dir", "runs/tiny", "--prompt", "床前明月光", "--max-tokens", "64");
        config.AddCommand<SftCommand>("sft").WithDescription("Supervised fine-tuning of a pretrained run on conversations (loss on assistant tokens only).")
            .WithExample("sft", "--from", "runs/tiny", "--data", "builtin", "--run-dir", "runs/tiny-sft");
        config.AddCommand<RewardCommand>("reward").WithDescription("Train a reward model (GPT + scalar head, Bradley-Terry loss) on preference pairs; reports held-out pairwise accuracy.")
            .WithExample("reward", "--from", "runs/tiny-sft", "--data", "builtin", "--run-dir", "runs/tiny-reward");
        config.AddBranch("feedback", feedback =>
        {
            feedback.SetDescription("Feedback on a policy's own answers: comparisons from a program labeler or from people on a labeling page, and a reward model's agreement with the program.");
            feedback.AddCommand<FeedbackCollectCommand>("collect").WithDescription("Sample K answers per prompt, rank them with the task's program (optional label noise), write every pair ranked apart as preference JSONL.")
                .WithExample("feedback", "collect", "--run-dir", "runs/tiny-sft", "--task", "form", "--out", "runs/feedback.jsonl");
            feedback.AddCommand<FeedbackSampleCommand>("sample").WithDescription("Sample K answers per prompt for people to judge on the labeling page.")
                .WithExample("feedback", "sample", "--run-dir", "runs/tiny-sft", "--prompts", "100", "--out", "runs/label-items.jsonl");
            feedback.AddCommand<FeedbackLabelCommand>("label").WithDescription("The labeling page: people pick the best answer (ties, all bad, undo); every judgment on disk at once.")
                .WithExample("feedback", "label", "--data", "runs/label-items.jsonl");
            feedback.AddCommand<FeedbackAgreementCommand>("agreement").WithDescription("Share of fresh answer pairs a reward model orders as the form program does.")
                .WithExample("feedback", "agreement", "--reward-model", "runs/tiny-reward", "--run-dir", "runs/tiny-sft");
        });
        config.AddCommand<PpoCommand>("ppo").WithDescription("RLHF with PPO: actor from an SFT run, critic from a reward model, KL penalty to the frozen SFT reference.")
            .WithExample("ppo", "--from", "runs/tiny-sft", "--reward-model", "runs/tiny-reward", "--run-dir", "runs/tiny-ppo");
        config.AddCommand<DistillCommand>("distill").WithDescription("On-policy distillation: the student samples answers, a teacher of the same tokenizer grades every token (reverse KL), no reward needed.")
            .WithExample("distill", "--from", "runs/sft", "--teacher", "runs/grpo/policy", "--task", "verse", "--run-dir", "runs/distill");
        config.AddCommand<GrpoCommand>("grpo").WithDescription("RL with verifiable rewards (GRPO, Dr. GRPO, DAPO): G answers per prompt, group-relative advantages, no critic.")
            .WithExample("grpo", "--from", "runs/tiny-sft", "--task", "form", "--run-dir", "runs/tiny-grpo");
        config.AddCommand<DpoCommand>("dpo").WithDescription("Direct Preference Optimization of an SFT run on preference pairs (frozen SFT reference).")
            .WithExample("dpo", "--from", "runs/tiny-sft", "--data", "builtin", "--run-dir", "runs/tiny-dpo");
        config.AddCommand<ServeCommand>("serve").WithDescription("Serve runs over OpenAI's and Anthropic's APIs (/v1/chat/completions, /v1/completions, /v1/responses, /v1/messages, /v1/embeddings, /v1/models) with a web chat at /.")
            .WithExample("serve", "--run-dir", "runs/speedrun/sft,runs/speedrun/ppo/policy", "--port", "8000");
        config.AddCommand<ChatCommand>("chat").WithDescription("Chat in the terminal, streamed, with history; /reset, /system, /temp, /quit; Ctrl+C stops an answer.")
            .WithExample("chat", "--run-dir", "runs/speedrun/sft");
        config.AddCommand<EvalCommand>("eval").WithDescription("Zero- and few-shot accuracy per task and k (multiple choice by log-likelihood), and bits per byte per corpus.")
            .WithExample("eval", "--run-dir", "runs/tiny,runs/tiny-sft", "--tasks", "next-line,author,spam", "--shots", "0,1,2,4,8");
        config.AddCommand<ReportCommand>("report").WithDescription("Write a speedrun's report card: report.md with loss, k-shot, PPO and form-score plots, metrics, commands, timings.")
            .WithExample("report", "--run-dir", "runs/speedrun");
        config.AddBranch("bert", bert =>
        {
            bert.SetDescription("BERT: a bidirectional encoder pretrained by cloze (masked LM), then fine-tuned to classify.");
            bert.AddCommand<BertPretrainCommand>("pretrain").WithDescription("Masked-LM pretraining on corpora; reports held-out masked-token loss and accuracy.")
                .WithExample("bert", "pretrain", "--corpus", "tang", "--tokenizer", "runs/tokenizer", "--run-dir", "runs/bert", "--steps", "1500");
            bert.AddCommand<BertFillMaskCommand>("fill-mask").WithDescription("The top-k fillers with probabilities for each <|mask|> in a text.")
                .WithExample("bert", "fill-mask", "--run-dir", "runs/bert", "--text", "床前明月<|mask|>");
            bert.AddCommand<BertFinetuneCommand>("finetune").WithDescription("Fine-tune a classifier (spam/ham by default); reports accuracy and F1 beside majority and bag-of-words baselines.")
                .WithExample("bert", "finetune", "--from", "runs/bert", "--data", "spam", "--run-dir", "runs/bert-spam");
            bert.AddCommand<BertContrastiveCommand>("contrastive").WithDescription("Train an encoder's vectors on pairs (a poem's first line and the rest, texts of one label, a file); reports held-out recall or 5-NN accuracy before, after and by bag-of-words.")
                .WithExample("bert", "contrastive", "--from", "runs/bert", "--first-lines", "tang", "--run-dir", "runs/bert-lines");
            bert.AddCommand<BertClassifyCommand>("classify").WithDescription("Label probabilities for a text from a fine-tuned classifier.")
                .WithExample("bert", "classify", "--run-dir", "runs/bert-spam", "--text", "Win a free prize now!");
        });
        config.AddCommand<FormScoreCommand>("form-score").WithDescription("Share of sampled poems with a regular form over fixed held-out prompts and seeds; compares runs.")
            .WithExample("form-score", "--run-dir", "runs/tiny-sft,runs/tiny-dpo", "--prompts", "200");
        config.AddCommand<ArithmeticScoreCommand>("arithmetic-score").WithDescription("Exact answers to held-out multi-digit + − × problems, with the calculator offered and without; compares runs.")
            .WithExample("arithmetic-score", "--run-dir", "runs/speedrun/sft,runs/speedrun/grpo-tools/policy");
        config.AddBranch("verse", verse =>
        {
            verse.SetDescription("The rules of regulated verse (rhyme, tones, acrostic) as the verse task checks them.");
            verse.AddCommand<VerseCheckCommand>("check").WithDescription("Each rule's verdict for one poem, strict and graded; --prompt checks its instructions too.")
                .WithExample("verse", "check", "白日依山盡，黃河入海流。/欲窮千里目，更上一層樓。");
            verse.AddCommand<VerseRatesCommand>("rates").WithDescription("How many of the embedded Tang poems of each shape pass each rule and strict.")
                .WithExample("verse", "rates");
        });
        config.AddBranch("export", export =>
        {
            export.SetDescription("Write a run in another tool's format.");
            export.AddCommand<ExportHfCommand>("hf").WithDescription("A GPT-2- or Llama-layout run as a Hugging Face transformers folder (safetensors).")
                .WithExample("export", "hf", "--run-dir", "runs/speedrun/sft", "--out", "runs/hf-sft");
            export.AddCommand<ExportGgufCommand>("gguf").WithDescription("A GPT-2- or Llama-layout run as one GGUF file (f16 or f32) for llama.cpp, LLamaSharp, Ollama.")
                .WithExample("export", "gguf", "--run-dir", "runs/speedrun/sft", "--out", "runs/sft.gguf");
        });
        config.AddBranch("import", import =>
        {
            import.SetDescription("Read another tool's model into a run.");
            import.AddCommand<ImportHfCommand>("hf").WithDescription("A Hugging Face GPT-2 or Llama folder (config.json + model.safetensors) as a GptSharp run.")
                .WithExample("import", "hf", "--from", "runs/hf-sft", "--run-dir", "runs/sft-again");
        });
        config.AddCommand<PlotCommand>("plot").WithDescription("Redraw a run's loss curve (loss.png) from its metrics.jsonl.")
            .WithExample("plot", "--run-dir", "runs/tiny");
        config.AddCommand<CliReferenceCommand>("cli-reference").WithDescription("Write docs/cli.md from every command's --help.").IsHidden();
    }
}
