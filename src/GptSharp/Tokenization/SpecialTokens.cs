namespace GptSharp.Tokenization;

/// <summary>
/// The special tokens every GptSharp tokenizer carries, in id order after the ordinary vocabulary.
/// Plain text never produces them: only code that renders documents or chats asks for them explicitly.
/// </summary>
public static class SpecialTokens
{
    /// <summary>Begins every document; in token shards it also separates documents.</summary>
    public const string Bos = "<|bos|>";
    /// <summary>Ends a completion; generation stops on it.</summary>
    public const string Eos = "<|eos|>";
    /// <summary>Fills batches to a common length; never a training target.</summary>
    public const string Pad = "<|pad|>";
    /// <summary>The cloze blank of masked-LM (BERT) pretraining.</summary>
    public const string Mask = "<|mask|>";
    /// <summary>Starts a system turn of a chat.</summary>
    public const string System = "<|system|>";
    /// <summary>Starts a user turn of a chat.</summary>
    public const string User = "<|user|>";
    /// <summary>Starts an assistant turn of a chat.</summary>
    public const string Assistant = "<|assistant|>";
    /// <summary>Ends any chat turn.</summary>
    public const string End = "<|end|>";
    /// <summary>Inside an assistant turn, starts a tool call: the tool's name, a space, its arguments, then <c>&lt;|end|&gt;</c>.</summary>
    public const string ToolCall = "<|tool_call|>";
    /// <summary>Starts a tool-result turn: what the tool answered, written by the program, never learned.</summary>
    public const string Tool = "<|tool|>";

    /// <summary>All special tokens, in the order their ids are assigned. Tokenizers trained before the tool tokens were
    /// added lack the last two; they load and work for everything but tool calls.</summary>
    public static IReadOnlyList<string> All { get; } = [Bos, Eos, Pad, Mask, System, User, Assistant, End, ToolCall, Tool];
}
