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
    /// SmolLM's split — a Digits step (each digit alone) before GPT-2's byte-level regex — as one regex: GPT-2's with
    /// every digit a piece, and a whitespace run ending where a digit begins as at the end of the text (the Digits step
    /// had cut the text there).
    /// </summary>
    public const string Gpt2Digits = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+";

    /// <summary>The kana and the ideographs DeepSeek-V3's second Split keeps together (its own ranges, narrower than Unicode's CJK blocks).</summary>
    const string DeepSeekCjk = @"\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff";

    /// <summary>
    /// DeepSeek-V3's third Split, which runs only on text the first two Splits did not take (no digits, no kana or
    /// ideographs): each class here leaves those out, and a whitespace run ending where one begins ends as at the end of
    /// the text. .NET matches UTF-16 units, whose surrogates have no letter or symbol category, so a character beyond
    /// the BMP counts as a symbol (emoji, flags and skin tones are; supplementary letters are rare).
    /// </summary>
    const string DeepSeekWords =
        @"[!""#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+" +
        @"|[^\r\n\p{L}\p{P}\p{S}\p{N}\p{Cs}" + DeepSeekCjk + @"]?[\p{L}\p{M}-[" + DeepSeekCjk + @"]]+" +
        @"| ?(?:[\p{P}\p{S}-[" + DeepSeekCjk + @"]]|[\ud800-\udbff][\udc00-\udfff])+[\r\n]*|\s*[\r\n]+|\s+(?![^\s\p{N}" + DeepSeekCjk + @"])|\s+";

    /// <summary>The same third Split over a run the second Split kept (kana and ideographs only).</summary>
    const string DeepSeekKana =
        @"[" + DeepSeekCjk + @"-[\p{L}\p{P}\p{S}]]?[" + DeepSeekCjk + @"-[^\p{L}\p{M}]]+|[" + DeepSeekCjk + @"-[^\p{P}\p{S}]]+";

    /// <summary>
    /// DeepSeek-V3's pre-tokenizer — three isolating Splits in turn (numbers of up to three digits; runs of kana and
    /// ideographs; then words, punctuation and whitespace) — as one regex: each later Split confined to the pieces the
    /// earlier ones left, and the stretches a Split matches nowhere kept as pieces, as Hugging Face keeps them.
    /// </summary>
    public const string DeepSeekV3 =
        @"\p{N}{1,3}" +
        @"|" + DeepSeekKana + @"|(?:(?!" + DeepSeekKana + @")[" + DeepSeekCjk + @"])+" +
        @"|" + DeepSeekWords + @"|(?:(?!" + DeepSeekWords + @")[^\p{N}" + DeepSeekCjk + @"])+";

    /// <summary>DeepSeek-V3's three Split regexes as its tokenizer.json spells them, in order.</summary>
    public static readonly IReadOnlyList<string> DeepSeekV3Splits =
    [
        @"\p{N}{1,3}",
        "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
        @"[!""#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ];

    /// <summary>Qwen2's split (Qwen2, 2.5, 3): GPT-4's, with every digit a piece of its own.</summary>
    public const string Qwen2 =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>
    /// The default: GPT-4's split, except that every CJK ideograph, kana or Hangul syllable is a piece of its own.
    /// Tokens then never span two Chinese characters, so a model sees one token per character and can count the
    /// five or seven characters of a classical line.
    /// </summary>
    public const string Gpt4Cjk =
        @"[\p{IsCJKUnifiedIdeographs}\p{IsCJKUnifiedIdeographsExtensionA}\p{IsCJKCompatibilityIdeographs}\p{IsHiragana}\p{IsKatakana}\p{IsHangulSyllables}]" +
        @"|(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}-[\p{IsCJKUnifiedIdeographs}\p{IsCJKUnifiedIdeographsExtensionA}\p{IsCJKCompatibilityIdeographs}\p{IsHiragana}\p{IsKatakana}\p{IsHangulSyllables}]]+" +
        @"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>The CJK blocks of <see cref="Gpt4Cjk"/> as explicit ranges, which every regex engine reads alike.</summary>
    const string CjkRanges = @"\u4E00-\u9FFF\u3400-\u4DBF\uF900-\uFAFF\u3040-\u309F\u30A0-\u30FF\uAC00-\uD7AF";

    /// <summary>
    /// <see cref="Gpt4Cjk"/> without .NET-only syntax (named Unicode blocks, character-class subtraction), for
    /// Oniguruma (Hugging Face tokenizers) and other engines: blocks become ranges, subtraction a negative lookahead.
    /// </summary>
    public const string Gpt4CjkPortable =
        "[" + CjkRanges + "]" +
        @"|(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?(?:(?![" + CjkRanges + @"])\p{L})+" +
        @"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>
    /// The same split in syntax other regex engines share; throws for a custom pattern that uses .NET-only constructs.
    /// </summary>
    public static string Portable(string pattern)
    {
        if (pattern == Gpt4Cjk) return Gpt4CjkPortable;
        if (pattern.Contains(@"\p{Is", StringComparison.Ordinal) || pattern.Contains("-[", StringComparison.Ordinal))
            throw new NotSupportedException("The pre-tokenizer pattern uses .NET-only regex syntax (a named Unicode block \\p{Is...} or class " +
                                            "subtraction [a-[b]]), which other tokenizers cannot read; rewrite it with explicit ranges.");
        return pattern;
    }

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
