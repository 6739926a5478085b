using GptSharp.Runs;
using GptSharp.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace GptSharp.Alignment;

/// <summary>
/// A GPT backbone with a scalar head: the reward of a sequence is the head's output at its last token (the
/// assistant's closing <c>&lt;|end|&gt;</c>). Trained on preference pairs with the Bradley–Terry loss,
/// −log σ(r_chosen − r_rejected). The same shape serves as PPO's critic.
/// </summary>
public sealed class RewardModel : Module<Tensor, Tensor>
{
    readonly Gpt backbone;
    readonly Linear head;

    public RewardModel(GptConfig config) : base(nameof(RewardModel))
    {
        backbone = new Gpt(config);
        head = Linear(config.Width, 1, hasBias: true);
        using (no_grad())
        {
            init.normal_(head.weight!, 0, 1.0 / Math.Sqrt(config.Width + 1));
            init.zeros_(head.bias!);
        }
        RegisterComponents();
    }

    public Gpt Backbone => backbone;
    public GptConfig Config => backbone.Config;

    /// <summary>tokens (B, T) → a reward at every position (B, T).</summary>
    public override Tensor forward(Tensor tokens)
    {
        using var scope = NewDisposeScope();
        return head.forward(backbone.Hidden(tokens)).squeeze(-1).MoveToOuterDisposeScope();
    }

    /// <summary>The reward of each row at its last real token: tokens (B, T), lastIndex (B) → (B).</summary>
    public Tensor Score(Tensor tokens, Tensor lastIndex)
    {
        using var scope = NewDisposeScope();
        return forward(tokens).gather(1, lastIndex.unsqueeze(1)).squeeze(1).MoveToOuterDisposeScope();
    }

    /// <summary>Bradley–Terry loss, mean over pairs.</summary>
    public static Tensor PairwiseLoss(Tensor chosen, Tensor rejected) => -functional.logsigmoid(chosen - rejected).mean();

    /// <summary>Zeroes the scalar head, so the model outputs 0 everywhere while keeping its backbone: a critic for a
    /// reward on another scale than the one this model learned (e.g. a program's 0/1).</summary>
    public void ZeroHead()
    {
        using var noGrad = no_grad();
        head.weight!.zero_();
        head.bias!.zero_();
    }

    /// <summary>Loads a trained reward model from a run folder.</summary>
    public static RewardModel Load(string runDirectory)
    {
        var model = new RewardModel(Checkpoint.ReadConfig(runDirectory));
        Checkpoint.LoadWeights(model, Checkpoint.WeightsPath(runDirectory));
        return model;
    }
}
