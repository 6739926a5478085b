namespace GptSharp.Alignment;

/// <summary>What PPO and GRPO runs share on disk.</summary>
public static class RlRun
{
    /// <summary>The policy a run hands on (the kept one when it selects by held-out gold), a plain GPT run folder inside the run folder.</summary>
    public const string PolicyFolder = "policy";
}
