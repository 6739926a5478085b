using GptSharp.Runtime;
using System.ComponentModel;
using GptSharp.Interop;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class ExportHfSettings : CommonSettings
{
    [CommandOption("-r|--run-dir")] [Description("The run to export (GPT-2 or Llama layout).")]
    public string RunDir { get; init; } = "runs/speedrun/sft";
    [CommandOption("--out")] [Description("The Hugging Face folder to write.")]
    public string Out { get; init; } = "runs/hf";
}

/// <summary><c>gptsharp export hf</c>: a run as a Hugging Face transformers folder.</summary>
sealed class ExportHfCommand : Command<ExportHfSettings>
{
    public override int Execute(CommandContext context, ExportHfSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        HuggingFace.Export(s.RunDir, s.Out);
        AnsiConsole.MarkupLine($"Wrote {Markup.Escape(s.Out)}: config.json, generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json, {HuggingFace.TokenizerFolder}/.");
        return 0;
    }
}

sealed class ImportHfSettings : CommonSettings
{
    [CommandOption("--from")] [Description("A Hugging Face folder (GPT-2, Llama, Qwen2 or Qwen3; config.json + model.safetensors or its shards).")]
    public string From { get; init; } = "runs/hf";
    [CommandOption("-r|--run-dir")] [Description("The run folder to create.")]
    public string RunDir { get; init; } = "runs/imported";
    [CommandOption("--tokenizer")] [Description("Tokenizer to record (default: the folder's gptsharp-tokenizer/, else its own tokenizer.json).")]
    public string? Tokenizer { get; init; }
    [CommandOption("--chat-template")] [Description("With the folder's own tokenizer.json: how conversations are written — gptsharp, chatml, qwen3, llama3, llama3.1 or gemma (default: recognised from tokenizer_config.json's chat_template; none for a base model).")]
    public string? ChatTemplate { get; init; }
}

/// <summary><c>gptsharp import hf</c>: a Hugging Face GPT-2 or Llama folder as a GptSharp run.</summary>
sealed class ImportHfCommand : Command<ImportHfSettings>
{
    public override int Execute(CommandContext context, ImportHfSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        // The run keeps its own copy of the tokenizer, so a converted one need not outlive the import.
        var (config, added) = s.Tokenizer is null ? HuggingFace.Import(s.From, s.RunDir, null, s.ChatTemplate)
            : TokenizerReference.Use(s.Tokenizer, tokenizer => HuggingFace.Import(s.From, s.RunDir, tokenizer, s.ChatTemplate));
        AnsiConsole.MarkupLine($"Imported a {HuggingFace.Architecture(config)} model ({config.Layers} layers, width {config.Width}) into {Markup.Escape(s.RunDir)}." +
                               (added > 0 ? $" The tokenizer has {added} more ids than the model had: the embedding grew by {added} rows (each the mean row) — fine-tune before using them." : ""));
        return 0;
    }
}
