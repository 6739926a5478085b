using System.ComponentModel;
using GptSharp.Interop;
using GptSharp.Serving;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class ServeSettings : CommonSettings
{
    [CommandOption("-r|--run-dir")] [Description("Runs to serve, comma-separated; each as folder (named by it) or name=folder.")]
    public string RunDir { get; init; } = "runs/speedrun/sft";
    [CommandOption("--host")] [Description("Address to bind (default 127.0.0.1: this machine only; 0.0.0.0 to widen).")]
    public string Host { get; init; } = "127.0.0.1";
    [CommandOption("--port")] public int Port { get; init; } = 8000;
    [CommandOption("--api-key")] [Description("Require Authorization: Bearer KEY on /v1 requests.")]
    public string? ApiKey { get; init; }
    [CommandOption("--max-concurrent")] [Description("Requests decoded together in one batch; further requests wait for the next.")]
    public int MaxConcurrent { get; init; } = 4;
}

/// <summary><c>gptsharp serve</c>: the OpenAI-compatible API and the web chat.</summary>
sealed class ServeCommand : AsyncCommand<ServeSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, ServeSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        var models = s.RunDir.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(ServedModel.Load).ToList();
        await using var server = new GptServer(models, new ServerOptions(s.Host, s.Port, s.ApiKey, MaxConcurrent: s.MaxConcurrent));
        await server.StartAsync(cancellation);
        AnsiConsole.MarkupLine($"Serving {Markup.Escape(string.Join(", ", models.Select(m => m.Name)))} at [link]{Markup.Escape(server.Address)}[/] " +
                               $"(web chat at /, OpenAI API at /v1{(s.ApiKey is null ? "" : ", API key required")}). Ctrl+C stops.");
        await server.WaitForShutdownAsync(cancellation);
        foreach (var model in models) model.Dispose();
        return 0;
    }
}
