using GptSharp.Tokenization;
using GptSharp.Inference;

namespace GptSharp.Serving;

/// <summary>
/// A terminal conversation with one model: history, a system prompt, a temperature, and the commands <c>/reset</c>,
/// <c>/system TEXT</c>, <c>/temp X</c>, <c>/quit</c>. History that no longer fits the context loses its oldest turns.
/// </summary>
/// With <paramref name="tools"/>, the system turn offers them, the model's calls run while it answers, and the call and
/// the tool's result are shown in brackets: <c>[calculator 12 × 34 → 408]</c>.
/// <param name="speculation">A drafter for speculative decoding of answers without tools (null: one token a pass).</param>
public sealed class ChatSession(ServedModel model, string? system = null, double temperature = 0.7, int maxTokens = 128, ToolBox? tools = null, Speculation? speculation = null)
{
    readonly List<ChatMessage> _history = [];

    public IReadOnlyList<ChatMessage> History => _history;
    public string? System { get; private set; } = system;
    public double Temperature { get; private set; } = temperature;

    /// <summary>
    /// Handles one input line: a command, or a user message whose answer is streamed to <paramref name="write"/>.
    /// Cancelling <paramref name="cancellation"/> stops the answer (what was said so far stays in the history).
    /// Returns false for <c>/quit</c>.
    /// </summary>
    public bool Handle(string line, Action<string> write, CancellationToken cancellation = default, long? seed = null)
    {
        line = line.Trim();
        if (line.Length == 0) return true;
        if (line == "/quit") return false;
        if (line == "/reset") { _history.Clear(); write("(history cleared)\n"); return true; }
        if (line == "/system" || line.StartsWith("/system ", StringComparison.Ordinal))
        {
            System = line[7..].Trim() is { Length: > 0 } text ? text : null;
            write(System is null ? "(no system prompt)\n" : "(system prompt set)\n");
            return true;
        }
        if (line == "/temp" || line.StartsWith("/temp ", StringComparison.Ordinal))
        {
            if (double.TryParse(line[5..].Trim(), global::System.Globalization.CultureInfo.InvariantCulture, out double t) && t is >= 0 and <= 2) Temperature = t;
            else write("(temperature must be a number from 0 to 2)\n");
            write($"(temperature {Temperature})\n");
            return true;
        }
        if (line.StartsWith('/')) { write("(commands: /reset, /system TEXT, /temp X, /quit)\n"); return true; }

        _history.Add(new ChatMessage(ChatRoles.User, line));
        int[] prompt = Prompt();
        var answer = new global::System.Text.StringBuilder();
        try
        {
            var options = new SamplingOptions(Temperature: Temperature, TopK: 50, MaxNewTokens: Math.Max(1, Math.Min(maxTokens, model.ContextLength - prompt.Length)),
                Seed: seed ?? Random.Shared.NextInt64(), StopTokens: [model.Tokenizer.EndId, model.Tokenizer.BosId]);
            if (tools is null) model.Generate(prompt, options, piece => { write(piece); answer.Append(piece); }, cancellation, speculation);
            else
            {
                var shown = new ToolTurnText(model.Tokenizer, write);
                var generation = model.Decoder.Generate(prompt, options, shown.Add, cancellation: cancellation, interject: tools.Interjection(model.Tokenizer));
                shown.Finish();
                // The history keeps the call and the tool's answer as their own turns, as the model wrote and read them.
                var turns = ToolBox.Messages(model.Tokenizer, generation.Tokens);
                _history.AddRange(turns.Take(turns.Count - 1));
                answer.Append(turns[^1].Content);
            }
        }
        catch (OperationCanceledException)
        {
            write(" (stopped)");
        }
        write("\n");
        _history.Add(new ChatMessage(ChatRoles.Assistant, answer.ToString()));
        return true;
    }

    /// <summary>The prompt for the history, dropping the oldest turns until the prompt leaves room for an answer.</summary>
    int[] Prompt()
    {
        int room = Math.Min(maxTokens, model.ContextLength / 4);
        while (true)
        {
            IReadOnlyList<ChatMessage> messages = (System is null ? [] : new List<ChatMessage> { new(ChatRoles.System, System) }).Concat(_history).ToList();
            int[] prompt = model.Template.RenderPrompt(tools is null ? messages : tools.Offer(messages));
            if (prompt.Length + room <= model.ContextLength) return prompt;
            if (_history.Count <= 1) return prompt[^(model.ContextLength - room)..]; // one message longer than the window: keep its end
            _history.RemoveRange(0, Math.Min(2, _history.Count - 1));
        }
    }
}
