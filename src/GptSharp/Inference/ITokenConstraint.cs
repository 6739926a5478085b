namespace GptSharp.Inference;

/// <summary>
/// Limits which tokens a row may produce next (structured output, forced tool calls). One instance follows one answer:
/// the decoder asks <see cref="Allowed"/> before each sampled token and reports the token with <see cref="Accept"/>.
/// </summary>
public interface ITokenConstraint
{
    /// <summary>Per vocabulary token, whether it may come next; null when any may.</summary>
    /// <param name="tokensLeft">Tokens the answer may still produce, this one included: a constraint closes its
    /// structure in time rather than be cut by the length limit.</param>
    bool[]? Allowed(int tokensLeft);

    /// <summary>The token that was produced.</summary>
    void Accept(int token);
}
