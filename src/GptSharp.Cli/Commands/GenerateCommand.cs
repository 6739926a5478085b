using GptSharp.Runs;
using GptSharp.Runtime;
using System.ComponentModel;
using GptSharp.Inference;
using GptSharp.Tokenization;
using Spectre.Console.Cli;
using TorchSharp;

namespace GptSharp.Cli.Commands;

sealed class GenerateSettings : DraftingSettings
{
    [CommandOption("-r|--run-dir")] [Description("A trained run folder (its checkpoint/ is loaded).")]
    public string RunDir { get; init; } = "runs/pretrain";
    [CommandOption("-p|--prompt")] [Description("Text to continue (after <|bos|>). Empty: start a new document.")]
    public string Prompt { get; init; } = "";
    [CommandOption("--max-tokens")] [Description("Tokens to generate at most.")] public int MaxTokens { get; init; } = 64;
    [CommandOption("--engine")] [Description("What decodes: auto (the CPU engine on a CPU, else libtorch), torch, cpu (F32 weights, equal to libtorch up to rounding), cpu-f16, cpu-bf16, cpu-q8_0 or cpu-q4_0 (weights packed at load: a half, a quarter or an eighth of the bytes per token, slightly different logits).")]
    public string Engine { get; init; } = GptSharp.Inference.Cpu.DecodeEngine.Auto;
    [CommandOption("--kv")] [Description("How the CPU engine caches keys and values: f32, f16 or q8_0 (blocks of 32 bytes with a scale: about half of f16's memory; heads must be whole blocks). Default: f32 beside cpu, f16 beside the smaller formats.")]
    public string? Kv { get; init; }
    [CommandOption("--temperature")] [Description("0 for greedy.")] public double Temperature { get; init; } = 0.8;
    [CommandOption("--top-k")] [Description("Sample among the k most likely tokens (0: all).")] public int TopK { get; init; } = 50;
    [CommandOption("--top-p")] [Description("Sample among the most likely tokens whose probability sums to p (1: all).")] public double TopP { get; init; } = 0.95;
    [CommandOption("--repetition-penalty")] [Description("Divides the logits of tokens already in the context (1: off).")] public double RepetitionPenalty { get; init; } = 1.0;
    [CommandOption("--seed")] [Description("Seeds the sampler: the same prompt and seed give the same text.")] public long Seed { get; init; } = 1337;
    [CommandOption("-n|--samples")] [Description("How many continuations (seeds seed, seed+1, ...).")]
    public int Samples { get; init; } = 1;
    [CommandOption("--truncate")] [Description("Keep the end of a prompt longer than the context instead of failing.")]
    public bool Truncate { get; init; }
    [CommandOption("--device")] [Description("cpu, cuda, cuda:N or auto.")] public string Device { get; init; } = "cpu";
    [CommandOption("--chat")] [Description("Treat the prompt as a user message in the chat template (for SFT/RLHF runs); stops at <|end|>.")]
    public bool Chat { get; init; }
    [CommandOption("--tools")] [Description("With --chat: offer built-in tools the model may call (calculator); calls run as it answers and show in brackets (default: none).")]
    public string? Tools { get; init; }
    [CommandOption("--best-of")] [Description("Sample N answers and print the one the --reward-model scores highest (with --chat; 1: off).")]
    public int BestOf { get; init; } = 1;
    [CommandOption("--reward-model")] [Description("Reward-model run that chooses among --best-of answers (default: none; needed with --best-of).")]
    public string? Reward { get; init; }

    public override Spectre.Console.ValidationResult Validate()
    {
        if (Drafting && (Tools is not null || BestOf > 1))
            return Spectre.Console.ValidationResult.Error("Speculative decoding (--draft, --draft-model) decodes one plain answer: not with --tools or --best-of.");
        if (BestOf < 1) return Spectre.Console.ValidationResult.Error($"--best-of {BestOf}: N must be >= 1.");
        if (GptSharp.Inference.Cpu.DecodeEngine.Problem(Engine) is { } engineProblem) return Spectre.Console.ValidationResult.Error(engineProblem);
        if (GptSharp.Inference.Cpu.DecodeEngine.KvProblem(Kv, Engine) is { } kvProblem) return Spectre.Console.ValidationResult.Error(kvProblem);
        if (BestOf > 1 && Reward is null) return Spectre.Console.ValidationResult.Error("--best-of needs --reward-model RUN: the reward model that chooses.");
        if (BestOf > 1 && !Chat) return Spectre.Console.ValidationResult.Error("--best-of chooses among chat answers: add --chat.");
        if (Tools is not null && !Chat) return Spectre.Console.ValidationResult.Error("--tools are offered in a chat: add --chat.");
        if (Tools is not null && BestOf > 1) return Spectre.Console.ValidationResult.Error("--tools and --best-of cannot be combined.");
        if (BestOf > 1 && Samples > 1) return Spectre.Console.ValidationResult.Error("--best-of and --samples cannot be combined.");
        return base.Validate();
    }
}

/// <summary><c>gptsharp generate</c>: sample continuations from a trained model, streamed token by token.</summary>
sealed class GenerateCommand : Command<GenerateSettings>
{
    public override int Execute(CommandContext context, GenerateSettings s, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(s.Threads, s.Device);
        var (model, state) = Checkpoint.LoadModel(s.RunDir);
        using var _ = model;
        model.to(torch.device(runtime.Device));
        var tokenizer = GptTokenizer.Load(state.Tokenizer);
        var tools = s.Tools is null ? null : ToolBox.Named(s.Tools);
        if (tools is not null && !new ChatTemplate(tokenizer).SupportsTools)
            throw new ArgumentException($"--tools: {s.RunDir}'s tokenizer has no tool-call tokens (it was trained before they existed); train a new tokenizer and model to use tools.");
        IReadOnlyList<ChatMessage> messages = [new ChatMessage(ChatRoles.User, s.Prompt)];
        int[] prompt = s.Chat
            ? new ChatTemplate(tokenizer).RenderPrompt(tools is null ? messages : tools.Offer(messages))
            : [tokenizer.BosId, .. tokenizer.Encode(s.Prompt)];
        var options = new SamplingOptions(s.Temperature, s.TopK, s.TopP, s.RepetitionPenalty, s.MaxTokens, s.Seed,
            StopTokens: [tokenizer.BosId, tokenizer.EosId, tokenizer.EndId], TruncatePrompt: s.Truncate);
        using var generator = TokenDecoder.Create(model, s.Engine, GptSharp.Inference.Cpu.DecodeEngine.Kv(s.Kv));
        if (generator.Engine is { } engine && GptSharp.Inference.Cpu.DecodeEngine.SlowPathWarning(engine.Format) is { } warning) Console.Error.WriteLine(warning);
        if (s.BestOf > 1) return BestOf(s, generator, tokenizer, prompt, options, runtime.Device);
        using var speculation = s.Speculation(tokenizer, generator);
        for (int sample = 0; sample < s.Samples; sample++)
        {
            if (s.Samples > 1) Console.WriteLine($"--- sample {sample + 1} (seed {s.Seed + sample})");
            if (!s.Chat) Console.Write(s.Prompt);
            if (tools is not null)
            {
                var shown = new GptSharp.Serving.ToolTurnText(tokenizer, Console.Write);
                var answer = generator.Generate(prompt, options with { Seed = s.Seed + sample }, shown.Add, cancellation: cancellation, interject: tools.Interjection(tokenizer));
                shown.Finish();
                Console.WriteLine();
                if (!s.Quiet) Console.Error.WriteLine($"[{answer.Tokens.Length} tokens, {answer.Inserted?.Count(i => i) ?? 0} written by tools, finished: {answer.Finish}]");
                continue;
            }
            var pending = new List<int>(); // bytes of a character split across tokens wait for the rest
            long started = System.Diagnostics.Stopwatch.GetTimestamp(), firstToken = 0, lastToken = 0;
            void Show(int token)
            {
                lastToken = System.Diagnostics.Stopwatch.GetTimestamp();
                if (firstToken == 0) firstToken = lastToken;
                if (tokenizer.IsSpecial(token)) return;
                pending.Add(token);
                string text = tokenizer.Decode(pending);
                if (text.EndsWith('\uFFFD') && pending.Count < 4) return;
                Console.Write(text);
                pending.Clear();
            }
            var sampleOptions = options with { Seed = s.Seed + sample };
            SpeculationStats? stats = null;
            Generation result;
            if (speculation is null) result = generator.Generate(prompt, sampleOptions, Show, cancellation: cancellation);
            else (result, stats) = generator.Generate(prompt, sampleOptions, speculation.Drafter, speculation.Tokens, Show, cancellation: cancellation);
            if (pending.Count > 0) Console.Write(tokenizer.Decode(pending));
            Console.WriteLine();
            if (!s.Quiet) Console.Error.WriteLine($"[{result.Tokens.Length} tokens, finished: {result.Finish}; {Timing(started, firstToken, lastToken, result.Tokens.Length)}" +
                (stats is null ? "]" : $"; {stats.Passes} passes, {stats.Accepted} of {stats.Drafted} drafted tokens taken]"));
        }
        return 0;
    }

    /// <summary>What a user compares engines by: the wait for the first token (packing the weights for the CPU engine and
    /// reading the prompt included) and the decode rate after it.</summary>
    static string Timing(long started, long firstToken, long lastToken, int tokens)
    {
        if (firstToken == 0) return "no token";
        string first = $"first token after {System.Diagnostics.Stopwatch.GetElapsedTime(started, firstToken).TotalMilliseconds:F0} ms";
        double after = System.Diagnostics.Stopwatch.GetElapsedTime(firstToken, lastToken).TotalSeconds;
        return tokens > 1 && after > 0 ? $"{first}, then {(tokens - 1) / after:F1} tok/s" : first;
    }

    /// <summary>The simplest use of a reward model: sample N answers in one batch, print the one it scores highest.</summary>
    static int BestOf(GenerateSettings s, TokenDecoder generator, GptTokenizer tokenizer, int[] prompt, SamplingOptions options, string device)
    {
        using var reward = GptSharp.Alignment.RewardModel.Load(s.Reward!);
        reward.to(torch.device(device));
        reward.eval();
        var answers = generator.Generate(Enumerable.Repeat(prompt, s.BestOf).ToList(), options); // row i samples with seed + i
        var completions = GptSharp.Alignment.Rewards.Describe(tokenizer, [.. Enumerable.Repeat(s.Prompt, s.BestOf)], [.. Enumerable.Repeat(prompt, s.BestOf)],
            [.. answers.Select(a => a.Tokens)], [.. answers.Select(a => a.Finish != FinishReason.Stop)]);
        double[] scores = GptSharp.Alignment.Rewards.FromModel(reward, tokenizer)(completions);
        int best = Array.IndexOf(scores, scores.Max());
        if (!s.Quiet)
            for (int i = 0; i < completions.Count; i++)
                Console.Error.WriteLine($"[{(i == best ? "*" : " ")} seed {s.Seed + i}, reward {scores[i]:F3}] {completions[i].Answer.Replace('\n', ' ')}");
        Console.WriteLine(completions[best].Answer);
        return 0;
    }
}
