using System.Text.Json;
using System.Text.RegularExpressions;

namespace GptSharp.Tokenization;

/// <summary>A piece of a rendered conversation: its text, whether it is markup (special tokens allowed) or message
/// content (always plain text), and whether the model learns it (an assistant's words and the end of its turn).</summary>
public readonly record struct ChatPiece(string Text, bool Markup, bool Learn);

/// <summary>
/// The chat formats of the common open model families, rendered as their own Jinja templates render a conversation
/// (with tools, for the families whose templates take them: Qwen2.5 and Qwen3 — tools listed in the system turn, calls as
/// <c>&lt;tool_call&gt;</c> JSON, results in <c>&lt;tool_response&gt;</c> — and Llama 3.1/3.2 — tools in the first user
/// turn, calls as <c>{"name", "parameters"}</c> JSON, results in <c>ipython</c> turns): ChatML (Qwen2/2.5, SmolLM2; with the family's default system prompt where its template has one),
/// Qwen3's ChatML (an empty think block before the last answer; prompts in its non-thinking mode, as
/// <c>enable_thinking=false</c> writes them), Llama 3, Llama 3.1/3.2 (a system turn with the knowledge cut-off and a
/// fixed date), and Gemma 3. Hugging Face's Jinja templates
/// cannot run here (no maintained Jinja engine exists for .NET), so a template is recognised by its markers and its
/// family rendered in C#; the tests render the published templates with a Jinja engine and compare.
/// </summary>
public static class ChatFormats
{
    public const string GptSharp = "gptsharp", ChatMl = "chatml", Qwen3 = "qwen3", Llama3 = "llama3", Llama31 = "llama3.1", Gemma = "gemma";
    public static IReadOnlyList<string> All { get; } = [GptSharp, ChatMl, Qwen3, Llama3, Llama31, Gemma];

    /// <summary>The date Llama 3.1 and 3.2 templates write when none is given; fixed, so a rendered conversation
    /// does not change from day to day.</summary>
    public const string Llama31Date = "26 Jul 2024";

    /// <summary>The end-of-turn token of a family (the answer stops there).</summary>
    public static string EndOfTurn(string format) => format switch
    {
        ChatMl or Qwen3 => "<|im_end|>",
        Llama3 or Llama31 => "<|eot_id|>",
        Gemma => "<end_of_turn>",
        _ => SpecialTokens.End,
    };

    /// <summary>
    /// The family of a <c>chat_template</c>, and its default system prompt (ChatML templates that add one when the
    /// conversation has none); null when the template is none of the families.
    /// </summary>
    public static (string Format, string? DefaultSystem)? Recognise(string template)
    {
        if (template == ChatTemplate.Jinja) return (GptSharp, null);
        if (template.Contains("<|im_start|>"))
        {
            if (template.Contains("<think>")) return (Qwen3, null);
            var fallback = Regex.Match(template, @"<\|im_start\|>system\\n(?<text>[^'""{}]+?)<\|im_end\|>");
            return (ChatMl, fallback.Success ? Regex.Unescape(fallback.Groups["text"].Value) : null);
        }
        if (template.Contains("<|start_header_id|>")) return (template.Contains("Cutting Knowledge Date") ? Llama31 : Llama3, null);
        if (template.Contains("<start_of_turn>")) return (Gemma, null);
        return null;
    }

    /// <summary>Whether a family's template writes tools and tool turns (Qwen's ChatML, Qwen3, Llama 3.1/3.2).</summary>
    public static bool WritesTools(string format) => format is ChatMl or Qwen3 or Llama31;

    /// <summary>
    /// Renders a conversation in a family's format; <paramref name="bos"/> is the BOS token text (Llama 3, Gemma start with
    /// it); <paramref name="tools"/> the offered tools as OpenAI function definitions (<c>{"type": "function", "function": {...}}</c>),
    /// written as the family's template writes them.
    /// </summary>
    public static List<ChatPiece> Render(string format, string? defaultSystem, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, string? bos,
        IReadOnlyList<JsonElement>? tools = null)
    {
        tools = tools is { Count: > 0 } ? tools : null;
        if (!WritesTools(format) && (tools is not null || messages.Any(m => m.ToolCall is not null || m.Role == ChatRoles.Tool)))
            throw new NotSupportedException($"Tools and tool turns are not supported in the {format} chat format (its template has none).");
        var pieces = new List<ChatPiece>();
        void Markup(string text) => pieces.Add(new ChatPiece(text, true, false));
        void Content(string text, bool learn = false) { if (text.Length > 0) pieces.Add(new ChatPiece(text, false, learn)); }
        void End(string text, bool learn) => pieces.Add(new ChatPiece(text, true, learn));
        switch (format)
        {
            case ChatMl:
            case Qwen3:
            {
                int start = 0;
                bool hasSystem = messages.Count > 0 && messages[0].Role == ChatRoles.System;
                if (tools is not null)
                {
                    // The template's tools block is one string: markup (it names <tool_call>), the definitions inside it as the template writes them.
                    string system = hasSystem ? messages[0].Content : format == ChatMl ? defaultSystem ?? "" : "";
                    Markup("<|im_start|>system\n" + (format == Qwen3 ? (hasSystem ? system + "\n\n" : "") : system + "\n\n")
                           + "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>"
                           + string.Concat(tools.Select(t => "\n" + JinjaJson.ToJson(t)))
                           + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n");
                    start = hasSystem ? 1 : 0;
                }
                else if (hasSystem) { System(messages[0].Content); start = 1; }
                else if (format == ChatMl && defaultSystem is not null) System(defaultSystem);
                int lastQuery = Enumerable.Range(0, messages.Count).LastOrDefault(i => messages[i].Role == ChatRoles.User, messages.Count - 1);
                for (int i = start; i < messages.Count; i++)
                {
                    var m = messages[i];
                    bool assistant = m.Role == ChatRoles.Assistant;
                    if (m.Role == ChatRoles.Tool)
                    {
                        // Results of consecutive calls share one user turn.
                        if (i == 0 || messages[i - 1].Role != ChatRoles.Tool) Markup("<|im_start|>user");
                        Markup("\n<tool_response>\n");
                        Content(m.Content);
                        Markup("\n</tool_response>");
                        if (i == messages.Count - 1 || messages[i + 1].Role != ChatRoles.Tool) Markup("<|im_end|>\n");
                        continue;
                    }
                    if (assistant && m.ToolCall is { } call)
                    {
                        string content = format == Qwen3 ? Thinking(m.Content).Content : m.Content;
                        bool think = format == Qwen3 && i > lastQuery && (i == messages.Count - 1 || Thinking(m.Content).Reasoning.Length > 0);
                        Markup("<|im_start|>assistant" + (format == Qwen3 ? "\n" : content.Length > 0 ? "\n" : ""));
                        if (think)
                        {
                            End("<think>\n", true);
                            Content(Thinking(m.Content).Reasoning.Trim('\n'), learn: true);
                            End("\n</think>\n\n", true);
                            content = content.TrimStart('\n');
                        }
                        Content(content, learn: true);
                        string opening = format == Qwen3 ? (content.Length > 0 ? "\n" : "") : "\n";
                        End($"{opening}<tool_call>\n{{\"name\": \"{call.Name}\", \"arguments\": {Arguments(call.Arguments)}}}\n</tool_call>", true);
                        End("<|im_end|>", true);
                        Markup("\n");
                        continue;
                    }
                    Markup($"<|im_start|>{m.Role}\n");
                    if (assistant && format == Qwen3)
                    {
                        var (content, reasoning) = Thinking(m.Content);
                        if (i > lastQuery && (i == messages.Count - 1 || reasoning.Length > 0))
                        {
                            End("<think>\n", true);
                            Content(reasoning.Trim('\n'), learn: true);
                            End("\n</think>\n\n", true);
                            Content(content.TrimStart('\n'), learn: true);
                        }
                        else Content(content, learn: true);
                    }
                    else Content(m.Content, learn: assistant);
                    End("<|im_end|>", assistant);
                    Markup("\n");
                }
                // Qwen3 answers without visible reasoning here: its template's enable_thinking=false prompt, an empty think block.
                if (addGenerationPrompt) Markup(format == Qwen3 ? "<|im_start|>assistant\n<think>\n\n</think>\n\n" : "<|im_start|>assistant\n");
                break;

                void System(string text)
                {
                    Markup("<|im_start|>system\n");
                    Content(text);
                    Markup("<|im_end|>\n");
                }
            }
            case Llama31:
            {
                // Llama 3.1 and 3.2: a system turn always, with the knowledge cut-off and a date, then the system prompt.
                Markup(bos + "<|start_header_id|>system<|end_header_id|>\n\n");
                Content((tools is null ? "" : "Environment: ipython\n") + $"Cutting Knowledge Date: December 2023\nToday Date: {Llama31Date}\n\n"
                        + (messages.Count > 0 && messages[0].Role == ChatRoles.System ? messages[0].Content.Trim() : ""));
                End("<|eot_id|>", false);
                var rest = messages.SkipWhile((m, i) => i == 0 && m.Role == ChatRoles.System).ToList();
                if (tools is not null)
                {
                    // The tools go into the first user turn, before its text.
                    if (rest.Count == 0 || rest[0].Role != ChatRoles.User)
                        throw new ArgumentException("Llama 3.1's template puts the tools in the first user message: the conversation must start with one.", nameof(messages));
                    Markup("<|start_header_id|>user<|end_header_id|>\n\n");
                    Content("Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n"
                            + "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n"
                            + string.Concat(tools.Select(t => JinjaJson.ToJson(t, indent: 4) + "\n\n")) + rest[0].Content.Trim());
                    End("<|eot_id|>", false);
                    rest.RemoveAt(0);
                }
                foreach (var m in rest)
                {
                    bool assistant = m.Role == ChatRoles.Assistant;
                    if (m.Role == ChatRoles.Tool)
                    {
                        // The template writes a tool's result with tojson: a string result is quoted.
                        Markup("<|start_header_id|>ipython<|end_header_id|>\n\n");
                        Content(JinjaJson.ToJson(JsonSerializer.SerializeToElement(m.Content)));
                        End("<|eot_id|>", false);
                        continue;
                    }
                    if (m.ToolCall is { } call)
                    {
                        // The template writes the call alone: the message's text is not shown.
                        Markup("<|start_header_id|>assistant<|end_header_id|>\n\n");
                        Content($"{{\"name\": \"{call.Name}\", \"parameters\": {Arguments(call.Arguments)}}}", learn: true);
                        End("<|eot_id|>", true);
                        continue;
                    }
                    Markup($"<|start_header_id|>{m.Role}<|end_header_id|>\n\n");
                    Content(m.Content.Trim(), learn: assistant);
                    End("<|eot_id|>", assistant);
                }
                if (addGenerationPrompt) Markup("<|start_header_id|>assistant<|end_header_id|>\n\n");
                break;
            }
            case Llama3:
                for (int i = 0; i < messages.Count; i++)
                {
                    bool assistant = messages[i].Role == ChatRoles.Assistant;
                    Markup((i == 0 ? bos : "") + $"<|start_header_id|>{messages[i].Role}<|end_header_id|>\n\n");
                    Content(messages[i].Content.Trim(), learn: assistant);
                    End("<|eot_id|>", assistant);
                }
                if (addGenerationPrompt) Markup("<|start_header_id|>assistant<|end_header_id|>\n\n");
                break;
            case Gemma:
            {
                Markup(bos ?? "");
                string prefix = "";
                var turns = messages;
                if (messages.Count > 0 && messages[0].Role == ChatRoles.System) (prefix, turns) = (messages[0].Content + "\n\n", [.. messages.Skip(1)]);
                for (int i = 0; i < turns.Count; i++)
                {
                    if ((turns[i].Role == ChatRoles.User) != (i % 2 == 0))
                        throw new ArgumentException("Gemma's conversations alternate user and assistant turns, starting with the user.", nameof(messages));
                    bool assistant = turns[i].Role == ChatRoles.Assistant;
                    Markup($"<start_of_turn>{(assistant ? "model" : turns[i].Role)}\n");
                    Content((i == 0 ? prefix : "") + turns[i].Content.Trim(), learn: assistant);
                    End("<end_of_turn>", assistant);
                    Markup("\n");
                }
                if (addGenerationPrompt) Markup("<start_of_turn>model\n");
                break;
            }
            default:
                throw new ArgumentException($"Unknown chat format '{format}': expected one of {string.Join(", ", All)}.", nameof(format));
        }
        return pieces;
    }

    /// <summary>A call's arguments as the templates write them: the JSON object through <c>tojson</c> (an empty or unparsable text as <c>{}</c>).</summary>
    static string Arguments(string arguments)
    {
        if (string.IsNullOrWhiteSpace(arguments)) return "{}";
        try { using var parsed = JsonDocument.Parse(arguments); return JinjaJson.ToJson(parsed.RootElement); }
        catch (JsonException) { return JinjaJson.ToJson(JsonSerializer.SerializeToElement(arguments)); }
    }

    /// <summary>Qwen3: an answer written as "&lt;think&gt;reasoning&lt;/think&gt;content" splits into its content and reasoning.</summary>
    static (string Content, string Reasoning) Thinking(string text)
    {
        int close = text.IndexOf("</think>", StringComparison.Ordinal);
        if (close < 0) return (text, "");
        string content = text[(text.LastIndexOf("</think>", StringComparison.Ordinal) + "</think>".Length)..].TrimStart('\n');
        string before = text[..close].TrimEnd('\n');
        int open = before.LastIndexOf("<think>", StringComparison.Ordinal);
        return (content, (open < 0 ? before : before[(open + "<think>".Length)..]).TrimStart('\n'));
    }
}
