using GptSharp.Alignment;
using GptSharp.Evaluation;
using GptSharp.Inference.Cpu;
using GptSharp.Runs;
using GptSharp.Tokenization;
using static TorchSharp.torch;

namespace GptSharp.Bench;

/// <summary>
/// <c>rl-mismatch RUN...</c>: how far each rollout engine's log-probabilities are from the trainer's (libtorch, F32) on
/// GRPO's rollouts (8 verse titles × 8 poems, temperature 1, 64 tokens at most): per token KL(sampler ‖ trainer) by
/// k3, the largest ratio either way, and the share of tokens whose ratio leaves [0.5, 2] (what MIS at cap 2 would drop).
/// A format a model's shapes cannot hold (blocks of 32) is reported as such.
/// </summary>
static class RlMismatchBench
{
    public static void Run(string[] args)
    {
        if (args.Length < 2) throw new ArgumentException("usage: rl-mismatch RUN [RUN...]");
        string[] engines = [DecodeEngine.Torch, "cpu", "cpu-f16", "cpu-bf16", "cpu-q8_0", "cpu-q4_0"];
        Console.WriteLine("\n## Rollout engine against trainer (libtorch F32): GRPO rollouts of 64 poems, temperature 1");
        Console.WriteLine("| run | engine | answer tokens | KL(sampler ‖ trainer) per token | largest ratio | tokens outside [0.5, 2] |");
        Console.WriteLine("|---|---|---|---|---|---|");
        foreach (string run in args.Skip(1))
        {
            var (model, state) = Checkpoint.LoadModel(run);
            using var _m = model;
            model.eval();
            var tokenizer = GptTokenizer.Load(state.Tokenizer);
            var titles = RlTasks.Named("verse").Prompts;
            var random = new Random(1);
            var prompts = Enumerable.Range(0, 8).Select(_ => titles[random.Next(titles.Count)]).SelectMany(p => Enumerable.Repeat(p, 8)).ToList();
            foreach (string engine in engines)
            {
                Rollout rollout;
                try { rollout = Rollout.Sample(model, tokenizer, prompts, 1.0, 64, seed: 7, engine: engine); }
                catch (NotSupportedException e)
                {
                    Console.WriteLine($"| {run} | {engine} | — | — (cannot pack: {e.Message.Split(':')[0]}) | — | — |");
                    continue;
                }
                using (rollout)
                using (var noGrad = no_grad())
                using (var scope = NewDisposeScope())
                {
                    var trainer = PpoExperience.ResponseLogProbabilities(model, rollout.Sequences, rollout.Positions, rollout.Tokens, 1.0);
                    var (kl, maxRatio) = GrpoMath.Mismatch(trainer, rollout.SamplerLogProbabilities!, rollout.Mask);
                    var logRatio = (trainer - rollout.SamplerLogProbabilities!) * rollout.Mask;
                    double tokens = rollout.Mask.sum().item<float>();
                    double outside = ((logRatio.abs() > Math.Log(2)).to(rollout.Mask.dtype) * rollout.Mask).sum().item<float>() / tokens;
                    Console.WriteLine($"| {run} | {engine} | {tokens:F0} | {kl:E2} | {maxRatio:F4} | {100 * outside:F2}% |");
                }
            }
        }
    }
}
