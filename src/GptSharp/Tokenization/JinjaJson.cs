using System.Text;
using System.Text.Json;

namespace GptSharp.Tokenization;

/// <summary>
/// JSON as chat templates' <c>tojson</c> filter writes it (Hugging Face's Jinja engines): <c>", "</c> and <c>": "</c>
/// between items, keys in their given order, non-ASCII text kept as is, and with an indent one item per line. Tool
/// definitions and call arguments must be written byte for byte so, or the prompt differs from the one the model learnt.
/// </summary>
public static class JinjaJson
{
    public static string ToJson(JsonElement value, int? indent = null)
    {
        var text = new StringBuilder();
        Write(text, value, indent, 0);
        return text.ToString();
    }

    static void Write(StringBuilder text, JsonElement value, int? indent, int depth)
    {
        switch (value.ValueKind)
        {
            case JsonValueKind.Object:
                Items(text, value.EnumerateObject().Select(p => (Action)(() =>
                {
                    String(text, p.Name);
                    text.Append(": ");
                    Write(text, p.Value, indent, depth + 1);
                })).ToList(), '{', '}', indent, depth);
                break;
            case JsonValueKind.Array:
                Items(text, value.EnumerateArray().Select(v => (Action)(() => Write(text, v, indent, depth + 1))).ToList(), '[', ']', indent, depth);
                break;
            case JsonValueKind.String: String(text, value.GetString()!); break;
            default: text.Append(value.GetRawText()); break;   // numbers, true, false, null as written
        }
    }

    static void Items(StringBuilder text, List<Action> items, char open, char close, int? indent, int depth)
    {
        text.Append(open);
        if (items.Count == 0) { text.Append(close); return; }
        for (int i = 0; i < items.Count; i++)
        {
            if (indent is { } n) text.Append(i == 0 ? "\n" : ",\n").Append(' ', n * (depth + 1));
            else if (i > 0) text.Append(", ");
            items[i]();
        }
        if (indent is { } m) text.Append('\n').Append(' ', m * depth);
        text.Append(close);
    }

    static void String(StringBuilder text, string value)
    {
        text.Append('"');
        foreach (char c in value)
            text.Append(c switch
            {
                '"' => "\\\"", '\\' => "\\\\", '\n' => "\\n", '\r' => "\\r", '\t' => "\\t", '\b' => "\\b", '\f' => "\\f",
                < ' ' => $"\\u{(int)c:x4}",
                _ => c.ToString(),
            });
        text.Append('"');
    }
}
