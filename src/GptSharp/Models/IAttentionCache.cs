using static TorchSharp.torch;

namespace GptSharp.Models;

/// <summary>
/// Where attention keeps the keys and values of tokens already seen, so that a forward pass feeds only new tokens.
/// <see cref="KvCache"/> holds one batch that advances together; <see cref="SlotKvCache"/> holds independent sequences
/// of their own lengths, for continuous batching.
/// </summary>
public interface IAttentionCache
{
    /// <summary>Tokens stored before this forward pass: the position of the next token (the longest row's, when rows differ).</summary>
    int Length { get; }

    /// <summary>Called once per forward pass of <paramref name="t"/> new tokens, before the layers.</summary>
    void BeginStep(int t);

    /// <summary>The positions (B, T) of the tokens this forward pass feeds, or null when they are Length … Length + T − 1 for every row.</summary>
    Tensor? StepPositions { get; }

    /// <summary>Which keys each query may see (B, 1, T, keys), or null when plain causal attention over the cache is right.</summary>
    Tensor? StepMask { get; }

    /// <summary>Stores (B, KvHeads, T, HeadDim) keys/values for one layer; returns the keys/values attention reads (B, KvHeads, keys, HeadDim).</summary>
    (Tensor Keys, Tensor Values) Append(int layer, Tensor keys, Tensor values);

    /// <summary>Called once per forward pass, after every layer appended.</summary>
    void Advance(int t);
}
