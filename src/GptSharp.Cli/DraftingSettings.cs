using System.ComponentModel;
using GptSharp.Inference;
using GptSharp.Tokenization;
using Spectre.Console;
using Spectre.Console.Cli;

namespace GptSharp.Cli;

/// <summary>Speculative decoding's options, for the commands that decode one answer at a time (<c>generate</c>, <c>chat</c>).</summary>
public abstract class DraftingSettings : CommonSettings
{
    [CommandOption("--draft")] [Description("Speculative decoding on the CPU engine: none, or ngram (drafts copied from what followed the context's latest repeat; the same output, fewer passes where text repeats). Default: none.")]
    public string Draft { get; init; } = "none";
    [CommandOption("--draft-model")] [Description("A smaller run of the same tokenizer that drafts for speculative decoding (instead of --draft ngram). Default: none.")]
    public string? DraftModel { get; init; }
    [CommandOption("--draft-tokens")] [Description("Tokens drafted per pass at first, 1 to 16; doubled (to 16) after a pass whose drafts were all taken, back after a rejection. Default 4.")]
    public int DraftTokens { get; init; } = 4;

    /// <summary>Whether a drafter was asked for.</summary>
    public bool Drafting => Draft != "none" || DraftModel is not null;

    public override ValidationResult Validate() =>
        Draft is not ("none" or "ngram") ? ValidationResult.Error($"--draft '{Draft}': expected none or ngram (or give --draft-model RUN).")
        : DraftModel is not null && Draft != "none" ? ValidationResult.Error("--draft ngram and --draft-model are two drafters: give one.")
        : DraftTokens is < 1 or > SpeculativeDecoding.MaxDraftTokens ? ValidationResult.Error($"--draft-tokens {DraftTokens}: expected 1 to {SpeculativeDecoding.MaxDraftTokens}.")
        : base.Validate();

    /// <summary>The drafter asked for (null: none), its weights packed as the target's engine packs its own.</summary>
    public Speculation? Speculation(GptTokenizer tokenizer, TokenDecoder decoder) =>
        DraftModel is not null ? new Speculation(ModelDrafter.Load(DraftModel, tokenizer, decoder.Engine?.Format ?? GptSharp.Inference.Cpu.WeightFormat.F32), DraftTokens)
        : Draft == "ngram" ? new Speculation(new NgramDrafter(), DraftTokens)
        : null;
}
