using System.ComponentModel;
using GptSharp.Alignment;
using GptSharp.Inference;
using GptSharp.Interop;
using GptSharp.Serving;
using Spectre.Console.Cli;

namespace GptSharp.Cli.Commands;

sealed class ChatSettings : CommonSettings
{
    [CommandOption("-r|--run-dir")] [Description("An SFT, PPO (its policy folder) or DPO run.")]
    public string RunDir { get; init; } = "runs/speedrun/sft";
    [CommandOption("--temperature")] public double Temperature { get; init; } = 0.7;
    [CommandOption("--max-tokens")] public int MaxTokens { get; init; } = 128;
    [CommandOption("--system")] [Description("System prompt.")]
    public string? System { get; init; }
}

/// <summary>
/// <c>gptsharp chat</c>: a streaming REPL with history. /reset, /system TEXT, /temp X, /quit; Ctrl+C stops the current
/// answer, not the program. History that no longer fits the context drops its oldest turns.
/// </summary>
sealed class ChatCommand : Command<ChatSettings>
{
    public override int Execute(CommandContext context, ChatSettings s, CancellationToken cancellation)
    {
        TorchRuntime.Initialize(s.Threads);
        using var model = ServedModel.Load(s.RunDir);
        string? system = s.System;
        double temperature = s.Temperature;
        var history = new List<ChatMessage>();
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
            if (line is null || line.Trim() == "/quit") return 0;
            line = line.Trim();
            if (line.Length == 0) continue;
            if (line == "/reset") { history.Clear(); Console.WriteLine("(history cleared)"); continue; }
            if (line.StartsWith("/system", StringComparison.Ordinal)) { system = line[7..].Trim() is { Length: > 0 } text ? text : null; Console.WriteLine(system is null ? "(no system prompt)" : "(system prompt set)"); continue; }
            if (line.StartsWith("/temp", StringComparison.Ordinal))
            {
                if (double.TryParse(line[5..].Trim(), System.Globalization.CultureInfo.InvariantCulture, out double t) && t is >= 0 and <= 2) temperature = t;
                Console.WriteLine($"(temperature {temperature})");
                continue;
            }
            if (line.StartsWith('/')) { Console.WriteLine("(unknown command: /reset, /system TEXT, /temp X, /quit)"); continue; }

            history.Add(new ChatMessage(ChatRoles.User, line));
            int[] prompt = Prompt(model, system, history, s.MaxTokens);
            answering = new CancellationTokenSource();
            var answer = new System.Text.StringBuilder();
            try
            {
                var options = new SamplingOptions(Temperature: temperature, TopK: 50, MaxNewTokens: Math.Max(1, Math.Min(s.MaxTokens, model.ContextLength - prompt.Length)),
                    Seed: Random.Shared.NextInt64(), StopTokens: [model.Tokenizer.EndId, model.Tokenizer.BosId]);
                model.Generate(prompt, options, piece => { Console.Write(piece); answer.Append(piece); }, answering.Token);
            }
            catch (OperationCanceledException)
            {
                Console.Write(" (stopped)");
            }
            finally
            {
                answering = null;
            }
            Console.WriteLine();
            history.Add(new ChatMessage(ChatRoles.Assistant, answer.ToString()));
        }
    }

    /// <summary>The prompt for the history, dropping the oldest turns until prompt + answer fit the context.</summary>
    static int[] Prompt(ServedModel model, string? system, List<ChatMessage> history, int answerTokens)
    {
        while (true)
        {
            var messages = (system is null ? [] : new List<ChatMessage> { new(ChatRoles.System, system) }).Concat(history).ToList();
            int[] prompt = model.Template.RenderPrompt(messages);
            if (prompt.Length + Math.Min(answerTokens, 16) <= model.ContextLength || history.Count <= 1)
                return prompt.Length < model.ContextLength ? prompt : prompt[^(model.ContextLength / 2)..];
            history.RemoveRange(0, Math.Min(2, history.Count - 1));
        }
    }
}
