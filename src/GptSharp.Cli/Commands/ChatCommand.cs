using GptSharp.Runtime;
using System.ComponentModel;
using GptSharp.Serving;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class ChatSettings : DraftingSettings
{
    [CommandOption("-r|--run-dir")] [Description("An SFT, PPO (its policy folder) or DPO run.")]
    public string RunDir { get; init; } = "runs/speedrun/sft";
    [CommandOption("--temperature")] [Description("Sampling temperature (0: greedy); /temp changes it in the chat.")] public double Temperature { get; init; } = 0.7;
    [CommandOption("--max-tokens")] [Description("Longest answer, in tokens.")] public int MaxTokens { get; init; } = 128;
    [CommandOption("--system")] [Description("System prompt (default: none).")]
    public string? System { get; init; }
    [CommandOption("--tools")] [Description("Offer built-in tools the model may call while it answers (calculator); the model must have learned to call them (the speedrun's sft-tools stage teaches the calculator; default: none).")]
    public string? Tools { get; init; }
    [CommandOption("--engine")] [Description("What decodes: auto (the CPU engine on a CPU, else libtorch), torch, cpu (F32 weights, equal to libtorch up to rounding), cpu-f16, cpu-bf16, cpu-q8_0 or cpu-q4_0 (weights packed at load: a half, a quarter or an eighth of the bytes per token, slightly different logits).")]
    public string Engine { get; init; } = GptSharp.Inference.Cpu.DecodeEngine.Auto;
    [CommandOption("--kv")] [Description("How the CPU engine caches keys and values: f32, f16 or q8_0 (blocks of 32 bytes with a scale: about half of f16's memory; heads must be whole blocks). Default: f32 beside cpu, f16 beside the smaller formats.")]
    public string? Kv { get; init; }

    public override Spectre.Console.ValidationResult Validate() => GptSharp.Inference.Cpu.DecodeEngine.Problem(Engine) is { } problem
        ? Spectre.Console.ValidationResult.Error(problem)
        : GptSharp.Inference.Cpu.DecodeEngine.KvProblem(Kv, Engine) is { } kvProblem ? Spectre.Console.ValidationResult.Error(kvProblem)
        : Drafting && Tools is not null ? Spectre.Console.ValidationResult.Error("Speculative decoding (--draft, --draft-model) decodes plain answers: not with --tools.")
        : base.Validate();
}

/// <summary><c>gptsharp chat</c>: a streaming REPL over <see cref="ChatSession"/>; Ctrl+C stops the current answer, not the program.</summary>
sealed class ChatCommand : Command<ChatSettings>
{
    public override int Execute(CommandContext context, ChatSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        using var model = ServedModel.Load(s.RunDir, engine: s.Engine, kv: GptSharp.Inference.Cpu.DecodeEngine.Kv(s.Kv));
        if (model.Decoder.Engine is { } engine && GptSharp.Inference.Cpu.DecodeEngine.SlowPathWarning(engine.Format) is { } warning) Console.Error.WriteLine(warning);
        var tools = s.Tools is null ? null : GptSharp.Inference.ToolBox.Named(s.Tools);
        if (tools is not null && !model.Template.SupportsTools)
            throw new ArgumentException($"--tools: {s.RunDir}'s tokenizer has no tool-call tokens (it was trained before they existed); train a new tokenizer and model to use tools.");
        using var speculation = s.Speculation(model.Tokenizer, model.Decoder);
        var session = new ChatSession(model, s.System, s.Temperature, s.MaxTokens, tools, speculation);
        CancellationTokenSource? answering = null;
        Console.CancelKeyPress += (_, e) =>
        {
            if (answering is { } current) { e.Cancel = true; current.Cancel(); }
        };
        Console.WriteLine($"Chatting with {model.Name} (context {model.ContextLength} tokens). /reset, /system TEXT, /temp X, /quit; Ctrl+C stops an answer.");
        while (true)
        {
            Console.Write("> ");
            string? line = Console.ReadLine();
            if (line is null) return 0;
            using var current = answering = new CancellationTokenSource();
            try
            {
                if (!session.Handle(line, Console.Write, current.Token)) return 0;
            }
            finally
            {
                answering = null;
            }
        }
    }
}
