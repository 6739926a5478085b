using System.Text.RegularExpressions;

namespace GptSharp.Tokenization;

/// <summary>
/// Regular expressions that split text into pieces before BPE; merges never cross a piece boundary.
/// </summary>
public static class PreTokenizerPatterns
{
    /// <summary>GPT-2's split (also r50k/p50k): contractions, letters, digits and punctuation runs, each with one leading space.</summary>
    public const string Gpt2 = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>
    /// GPT-4's (cl100k) split, written for .NET's regex engine (which lacks possessive quantifiers): English
    /// contractions, letter runs with one leading non-letter, numbers of up to three digits, punctuation runs,
    /// newlines and other whitespace. A run of Chinese characters is one piece, so BPE may learn multi-character words.
    /// </summary>
    public const string Gpt4 =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>
    /// The default: GPT-4's split, except that every CJK ideograph, kana or Hangul syllable is a piece of its own.
    /// Tokens then never span two Chinese characters, so a model sees one token per character and can count the
    /// five or seven characters of a classical line.
    /// </summary>
    public const string Gpt4Cjk =
        @"[\p{IsCJKUnifiedIdeographs}\p{IsCJKUnifiedIdeographsExtensionA}\p{IsCJKCompatibilityIdeographs}\p{IsHiragana}\p{IsKatakana}\p{IsHangulSyllables}]" +
        @"|(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}-[\p{IsCJKUnifiedIdeographs}\p{IsCJKUnifiedIdeographsExtensionA}\p{IsCJKCompatibilityIdeographs}\p{IsHiragana}\p{IsKatakana}\p{IsHangulSyllables}]]+" +
        @"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Resolves a pattern name (<c>gpt4</c>, <c>gpt4-cjk</c>) or returns the argument as a literal regex.</summary>
    public static string Resolve(string nameOrPattern) => nameOrPattern switch
    {
        "gpt4" => Gpt4,
        "gpt4-cjk" => Gpt4Cjk,
        "gpt2" => Gpt2,
        _ => nameOrPattern,
    };

    /// <summary>Compiles a pattern the way every GptSharp component uses it.</summary>
    public static Regex Compile(string pattern)
    {
        try
        {
            return new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"Invalid pre-tokenizer pattern: {e.Message}", nameof(pattern), e);
        }
    }
}
