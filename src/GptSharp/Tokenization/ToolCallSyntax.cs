using System.Text.Json;

namespace GptSharp.Tokenization;

/// <summary>Qwen's tool-call markers (added tokens in its vocabulary).</summary>
public static class QwenToolCall
{
    public const string Open = "<tool_call>", Close = "</tool_call>";
}

/// <summary>
/// How a chat format writes a tool call in an answer, so that one can be constrained, streamed and read back: the token
/// that opens it (none for Llama 3.1, whose call is the answer's JSON), the text before a tool's arguments (which names the
/// tool), the text after them, and the token that closes it (Qwen's <c>&lt;/tool_call&gt;</c>).
/// GptSharp: <c>&lt;|tool_call|&gt;name {args}</c>; Qwen: <c>&lt;tool_call&gt;\n{"name": "n", "arguments": {args}}\n&lt;/tool_call&gt;</c>;
/// Llama 3.1/3.2: <c>{"name": "n", "parameters": {args}}</c>.
/// </summary>
public sealed class ToolCallSyntax
{
    readonly Func<string, string> _before;

    ToolCallSyntax(string format, int openToken, int closeToken, Func<string, string> before, string after) =>
        (Format, OpenToken, CloseToken, _before, After) = (format, openToken, closeToken, before, after);

    public string Format { get; }
    /// <summary>The token that opens a call, or −1 when the call is the answer itself.</summary>
    public int OpenToken { get; }
    /// <summary>The token that closes a call before the turn ends, or −1.</summary>
    public int CloseToken { get; }
    /// <summary>The text after a call's arguments.</summary>
    public string After { get; }

    /// <summary>The text before a tool's arguments, which names it.</summary>
    public string Before(string name) => _before(name);

    /// <summary>The syntax of a tokenizer's chat format, or null when the format writes no tool calls.</summary>
    public static ToolCallSyntax? For(GptTokenizer tokenizer)
    {
        string format = tokenizer.Spec.ChatFormat ?? ChatFormats.GptSharp;
        return format switch
        {
            ChatFormats.GptSharp when tokenizer.HasSpecialToken(SpecialTokens.ToolCall) => new(format, tokenizer.SpecialId(SpecialTokens.ToolCall), -1, name => name + " ", ""),
            ChatFormats.ChatMl or ChatFormats.Qwen3 when tokenizer.Spec.SpecialTokens.TryGetValue(QwenToolCall.Open, out int open)
                && tokenizer.Spec.SpecialTokens.TryGetValue(QwenToolCall.Close, out int close) =>
                new(format, open, close, name => $"\n{{\"name\": \"{name}\", \"arguments\": ", "}\n"),
            ChatFormats.Llama31 => new(format, -1, -1, name => $"{{\"name\": \"{name}\", \"parameters\": ", "}"),
            _ => null,
        };
    }

    /// <summary>Where the call begins in an answer's tokens (its opening token; for Llama 3.1 the answer's start when the answer is a call), or −1.</summary>
    public int Start(GptTokenizer tokenizer, IReadOnlyList<int> tokens)
    {
        if (OpenToken >= 0)
        {
            for (int i = 0; i < tokens.Count; i++) if (tokens[i] == OpenToken) return i;
            return -1;
        }
        return Read(tokenizer, tokens) is null ? -1 : 0;
    }

    /// <summary>The call an answer's tokens make (its name and its arguments as JSON text), or null when it makes none or it was cut before its end.</summary>
    public (string Name, string Arguments)? Read(GptTokenizer tokenizer, IReadOnlyList<int> tokens)
    {
        int start = OpenToken >= 0 ? Start(tokenizer, tokens) : 0;
        if (start < 0) return null;
        var body = tokens.Skip(OpenToken >= 0 ? start + 1 : 0).TakeWhile(t => t != tokenizer.EndId && t != CloseToken).Where(t => !tokenizer.IsSpecial(t)).ToList();
        string text = tokenizer.Decode(body);
        if (Format == ChatFormats.GptSharp)
        {
            var call = ToolCall.Parse(text);
            return (call.Name, call.Arguments.Length == 0 ? "{}" : call.Arguments);
        }
        // Qwen and Llama write the call as a JSON object naming the tool and holding its arguments.
        try
        {
            using var json = JsonDocument.Parse(text.Trim());
            var root = json.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String) return null;
            var arguments = root.TryGetProperty(Format == ChatFormats.Llama31 ? "parameters" : "arguments", out var a) || root.TryGetProperty("arguments", out a) ? a.GetRawText() : "{}";
            return (name.GetString()!, arguments);
        }
        catch (JsonException) { return null; }
    }
}
