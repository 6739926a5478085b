namespace GptSharp.Encoders;

/// <summary>
/// BERT's masking: each maskable token (or, with <see cref="WholeWord"/>, each word — every token of it together) is
/// chosen with <see cref="Probability"/>; a chosen token becomes <c>&lt;|mask|&gt;</c> with <see cref="MaskShare"/>, a
/// random ordinary token with <see cref="RandomShare"/>, and stays itself otherwise. Special tokens are never chosen.
/// </summary>
public sealed record MaskingConfig
{
    public double Probability { get; init; } = 0.15;
    public double MaskShare { get; init; } = 0.8;
    public double RandomShare { get; init; } = 0.1;
    /// <summary>Choose whole words (pre-tokenizer pieces: one Chinese character, or one English word) rather than tokens.</summary>
    public bool WholeWord { get; init; }

    public MaskingConfig Validate()
    {
        if (Probability is <= 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Probability), Probability, "The masking probability must be in (0, 1).");
        if (MaskShare < 0 || RandomShare < 0 || MaskShare + RandomShare > 1)
            throw new ArgumentOutOfRangeException(nameof(MaskShare), MaskShare, "MaskShare and RandomShare must be ≥ 0 and sum to at most 1.");
        return this;
    }
}

/// <summary>Applies <see cref="MaskingConfig"/> to token sequences; targets are the original token where chosen, −1 elsewhere.</summary>
public sealed class MlmMasker
{
    readonly MaskingConfig _config;
    readonly int _maskId;
    readonly int[] _ordinaryIds; // what a "random token" is drawn from
    readonly HashSet<int> _special;

    public MlmMasker(int vocabSize, int maskId, IEnumerable<int> specialIds, MaskingConfig config)
    {
        _config = config.Validate();
        _maskId = maskId;
        _special = [.. specialIds];
        _ordinaryIds = [.. Enumerable.Range(0, vocabSize).Where(id => !_special.Contains(id))];
    }

    /// <summary>Masks one sequence. <paramref name="wordIds"/> gives each token's word (equal ids = one word; negative = never masked).</summary>
    public (long[] Inputs, long[] Targets) Mask(ReadOnlySpan<int> tokens, ReadOnlySpan<int> wordIds, Random random)
    {
        var inputs = new long[tokens.Length];
        var targets = new long[tokens.Length];
        int lastWord = int.MinValue;
        bool wordChosen = false;
        for (int i = 0; i < tokens.Length; i++)
        {
            inputs[i] = tokens[i];
            targets[i] = -1;
            if (wordIds[i] < 0 || _special.Contains(tokens[i])) continue;
            bool chosen;
            if (_config.WholeWord)
            {
                if (wordIds[i] != lastWord) wordChosen = random.NextDouble() < _config.Probability;
                lastWord = wordIds[i];
                chosen = wordChosen;
            }
            else chosen = random.NextDouble() < _config.Probability;
            if (!chosen) continue;
            targets[i] = tokens[i];
            double action = random.NextDouble();
            if (action < _config.MaskShare) inputs[i] = _maskId;
            else if (action < _config.MaskShare + _config.RandomShare) inputs[i] = _ordinaryIds[random.Next(_ordinaryIds.Length)];
        }
        return (inputs, targets);
    }
}
