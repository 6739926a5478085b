using GptSharp.Runtime;
using System.ComponentModel;
using System.Net;
using GptSharp.Serving;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class ServeSettings : CommonSettings
{
    [CommandOption("-r|--run-dir")] [Description("Runs to serve, comma-separated; each as folder (named by it) or name=folder.")]
    public string RunDir { get; init; } = "runs/speedrun/sft";
    [CommandOption("--host")] [Description("Address or host name to bind (default 127.0.0.1: this machine only; 0.0.0.0 for every interface). One that does not parse or resolve is an error.")]
    public string Host { get; init; } = "127.0.0.1";
    [CommandOption("--port")] [Description("TCP port, 1 to 65535 (0: any free port).")]
    public int Port { get; init; } = 8000;
    [CommandOption("--api-key")] [Description("Require Authorization: Bearer KEY (or x-api-key: KEY) on every request but the web chat page and /health (default: none, no key required).")]
    public string? ApiKey { get; init; }
    [CommandOption("--max-concurrent")] [Description("Requests decoded at once per model (KV-cache slots); further requests wait for a free slot.")]
    public int MaxConcurrent { get; init; } = 4;
    [CommandOption("--max-queue")] [Description("Choices that may wait per model (a request of n choices takes n places, all or none); a request that does not fit is answered 429 with Retry-After, one with more choices than this 400.")]
    public int MaxQueue { get; init; } = 64;
    [CommandOption("--allowed-hosts")] [Description("Host header names to serve besides localhost and --host, comma-separated (* for any). Guards against DNS rebinding (default: localhost and --host only).")]
    public string? AllowedHosts { get; init; }
    [CommandOption("--no-prefix-cache")] [Description("Do not reuse the KV cache of an earlier request whose tokens a new prompt starts with.")]
    public bool NoPrefixCache { get; init; }
    [CommandOption("--request-timeout")] [Description("Seconds a generation may run before it is stopped with a 408 (0: no limit).")]
    public double RequestTimeout { get; init; } = 600;
    [CommandOption("--shutdown-grace")] [Description("On Ctrl+C or SIGTERM, seconds running generations may go on before they are stopped.")]
    public double ShutdownGrace { get; init; } = 10;
    [CommandOption("--stored-responses")] [Description("Responses API answers kept for previous_response_id (oldest evicted first; 0 stores none).")]
    public int StoredResponses { get; init; } = 1000;
    [CommandOption("--adapters")] [Description("LoRA runs served on a base's weights held once, comma-separated: name=folder (on the one GPT served) or base:name=folder; each is served as base:name. Needs the CPU engine (default: none).")]
    public string? Adapters { get; init; }
    [CommandOption("--admin-key")] [Description("Allow POST and DELETE /v1/adapters (load and unload adapters while serving) with Authorization: Bearer KEY (default: none, adapters fixed at start).")]
    public string? AdminKey { get; init; }
    [CommandOption("--pooling")] [Description("How a BERT run's embeddings are read from its final hidden states: mean (over the input's tokens) or cls.")]
    public string Pooling { get; init; } = "mean";
    [CommandOption("--allow-nonfinite")] [Description("Load weights that hold NaN or infinity instead of refusing them.")]
    public bool AllowNonFinite { get; init; }
    [CommandOption("--engine")] [Description("What decodes: auto (default: the CPU engine on a CPU), torch, cpu, cpu-f16, cpu-bf16, cpu-q8_0 or cpu-q4_0 (see generate --engine).")]
    public string Engine { get; init; } = GptSharp.Inference.Cpu.DecodeEngine.Auto;
    [CommandOption("--kv")] [Description("How the CPU engine caches keys and values: f32, f16 or q8_0 (blocks of 32 bytes with a scale: about half of f16's memory; heads must be whole blocks). Default: f32 beside cpu, f16 beside the smaller formats.")]
    public string? Kv { get; init; }
    [CommandOption("--draft")] [Description("Speculative decoding of every request without a grammar or tools: none, or ngram (prompt lookup; the same tokens greedy, the same distribution sampled; the CPU engine only). Default: none.")]
    public string Draft { get; init; } = "none";
    [CommandOption("--draft-tokens")] [Description("Tokens drafted per request and step with --draft ngram at first, 1 to 16; doubled (to 16) while its drafts are all taken. Default 4.")]
    public int DraftTokens { get; init; } = 4;
    [CommandOption("--prefill-chunk")] [Description("Prompt tokens read between two decode steps (as llama.cpp's batch size): smaller lets a new prompt's first token and the running answers in sooner, larger reads long prompts faster. Default 256.")]
    public int PrefillChunk { get; init; } = 256;

    public ServerOptions Options() => new(Host, Port, ApiKey, MaxConcurrent: MaxConcurrent, MaxQueue: MaxQueue,
        AllowedHosts: AllowedHosts?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
        PrefixCache: !NoPrefixCache, RequestTimeoutSeconds: RequestTimeout, ShutdownGraceSeconds: ShutdownGrace, StoredResponses: StoredResponses, AdminKey: AdminKey,
        PromptLookupTokens: Draft == "ngram" ? DraftTokens : 0, PrefillChunk: PrefillChunk);

    public override ValidationResult Validate()
    {
        if (GptSharp.Inference.Cpu.DecodeEngine.Problem(Engine) is { } engineProblem) return ValidationResult.Error(engineProblem);
        if (GptSharp.Inference.Cpu.DecodeEngine.KvProblem(Kv, Engine) is { } kvProblem) return ValidationResult.Error(kvProblem);
        if (Pooling is not ("mean" or "cls")) return ValidationResult.Error($"--pooling '{Pooling}': expected mean or cls.");
        if (Draft is not ("none" or "ngram")) return ValidationResult.Error($"--draft '{Draft}': expected none or ngram (the server drafts by prompt lookup; a draft model is for generate and chat).");
        if (DraftTokens is < 1 or > GptSharp.Inference.SpeculativeDecoding.MaxDraftTokens) return ValidationResult.Error($"--draft-tokens {DraftTokens}: expected 1 to {GptSharp.Inference.SpeculativeDecoding.MaxDraftTokens}.");
        try
        {
            Options().Validate();
            return ValidationResult.Success();
        }
        catch (ArgumentException e)
        {
            return ValidationResult.Error(e.Message);
        }
    }
}

/// <summary><c>gptsharp serve</c>: the OpenAI- and Anthropic-compatible APIs and the web chat.</summary>
sealed class ServeCommand : AsyncCommand<ServeSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, ServeSettings s, CancellationToken cancellation)
    {
        var options = s.Options();
        var bind = options.BindAddress(); // before loading weights: a mistyped host fails at once
        TorchRuntime.Initialize(s.Threads);
        var specs = s.RunDir.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        // A BERT run is served for /v1/embeddings only; every other run is a GPT.
        var pooling = Enum.Parse<GptSharp.Encoders.Pooling>(s.Pooling, ignoreCase: true);
        var encoders = specs.Where(spec => ServedEncoder.IsEncoderRun(ServedModel.NameAndPath(spec).Path)).Select(spec => ServedEncoder.Load(spec, pooling)).ToList();
        var models = specs.Where(spec => !ServedEncoder.IsEncoderRun(ServedModel.NameAndPath(spec).Path)).Select(spec => ServedModel.Load(spec, s.AllowNonFinite, s.Engine, GptSharp.Inference.Cpu.DecodeEngine.Kv(s.Kv))).ToList();
        foreach (string spec in (s.Adapters ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int equals = spec.IndexOf('=');
            if (equals <= 0) throw new ArgumentException($"--adapters '{spec}': expected name=folder or base:name=folder.");
            string target = spec[..equals];
            int colon = target.IndexOf(':');
            var model = colon > 0 ? models.FirstOrDefault(m => m.Name == target[..colon]) ?? throw new ArgumentException($"--adapters '{spec}': no served run is named '{target[..colon]}'.")
                : models.Count == 1 ? models[0] : throw new ArgumentException($"--adapters '{spec}': several runs are served; name the base as base:name=folder.");
            var adapter = model.LoadAdapter(colon > 0 ? target[(colon + 1)..] : target, spec[(equals + 1)..]);
            AnsiConsole.MarkupLine($"Adapter {Markup.Escape($"{model.Name}:{adapter.Name}")}: {adapter.Parameters:N0} values beside the base's weights.");
        }
        await using var server = new GptServer(models, options, encoders);
        await server.StartAsync(cancellation);
        if (server.ExposedWithoutKey)
            AnsiConsole.MarkupLine($"[yellow]Warning:[/] listening on {Markup.Escape(bind.ToString())}, beyond this machine, without --api-key: anyone who can reach it can use it.");
        AnsiConsole.MarkupLine($"Serving {Markup.Escape(string.Join(", ", models.SelectMany(m => m.Adapters.Keys.Select(a => $"{m.Name}:{a}").Prepend(m.Name)).Concat(encoders.Select(e => $"{e.Name} (embeddings)"))))} at [link]{Markup.Escape(server.Address)}[/] " +
                               $"(web chat at /, OpenAI API at /v1{(s.ApiKey is null ? "" : ", API key required")}). Ctrl+C stops.");
        await server.WaitForShutdownAsync(cancellation);
        foreach (var model in models) model.Dispose();
        foreach (var encoder in encoders) encoder.Dispose();
        return 0;
    }
}
