using System.Text.Json;

namespace GptSharp.Runtime;

/// <summary>Reads JSON strings from data files, where a lone UTF-16 surrogate (valid JSON, invalid text) must be a data error naming the place.</summary>
static class JsonText
{
    /// <summary>The string's value; <paramref name="where"/> says where it is ("file:line: field") for the error.</summary>
    public static string Read(JsonElement value, string where)
    {
        try { return value.GetString()!; }
        catch (InvalidOperationException)
        {
            throw new InvalidDataException($"{where} is not valid Unicode text (it holds a lone surrogate such as \\ud800).");
        }
    }
}
