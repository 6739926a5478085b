using GptSharp.Runtime;
using System.ComponentModel;
using GptSharp.Interop;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class ExportGgufSettings : CommonSettings
{
    [CommandOption("-r|--run-dir")] [Description("The run to export (GPT-2 or Llama layout).")]
    public string RunDir { get; init; } = "runs/speedrun/sft";
    [CommandOption("--out")] [Description("The .gguf file to write.")]
    public string Out { get; init; } = "runs/model.gguf";
    [CommandOption("--type")] [Description("Storage of the weight matrices: f16 (half the size), q8_0 (8-bit blocks of 32, about a quarter), q4_0 (4-bit blocks of 32, about an eighth) or f32 (exact). Vectors are always f32.")]
    public string Type { get; init; } = "f16";

    public override ValidationResult Validate() => Type is "f16" or "f32" or "q8_0" or "q4_0"
        ? base.Validate()
        : ValidationResult.Error($"--type must be f16, q8_0, q4_0 or f32, not '{Type}'.");
}

/// <summary><c>gptsharp export gguf</c>: a run as one GGUF file for llama.cpp, LLamaSharp, Ollama.</summary>
sealed class ExportGgufCommand : Command<ExportGgufSettings>
{
    public override int Execute(CommandContext context, ExportGgufSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        Gguf.Export(s.RunDir, s.Out, s.Type switch { "f32" => GgmlType.F32, "q8_0" => GgmlType.Q8_0, "q4_0" => GgmlType.Q4_0, _ => GgmlType.F16 });
        AnsiConsole.MarkupLine($"Wrote {Markup.Escape(s.Out)} ({new FileInfo(s.Out).Length / 1e6:F1} MB, {s.Type}).");
        return 0;
    }
}
