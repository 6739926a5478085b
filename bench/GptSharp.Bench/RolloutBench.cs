using System.Diagnostics;
using GptSharp.Alignment;
using GptSharp.Evaluation;
using GptSharp.Inference.Cpu;
using GptSharp.Runs;
using GptSharp.Tokenization;

namespace GptSharp.Bench;

/// <summary>
/// RL rollouts as the speedrun samples them, on libtorch, on the CPU engine and on <c>auto</c>, interleaved: PPO's (16 titles, one poem
/// each, temperature 0.7) and GRPO's (8 titles × 8 poems, temperature 1), 64 new tokens at most, from an SFT run. The
/// CPU engine's time includes packing the policy's weights, which a training run does before every rollout. Usage:
/// bench -- rollout SFT_RUN [rounds].
/// </summary>
static class RolloutBench
{
    public static void Run(string[] args)
    {
        if (args.Length < 2) throw new ArgumentException("usage: rollout SFT_RUN [rounds]");
        int rounds = args.Length > 2 ? int.Parse(args[2]) : 3;
        var (model, state) = Checkpoint.LoadModel(args[1]);
        using var _m = model;
        var tokenizer = GptTokenizer.Load(state.Tokenizer);
        model.eval();
        StepCost(model);
        var titles = RlTasks.Form().Prompts;
        var kinds = new (string Name, int Prompts, int Group, double Temperature)[] { ("PPO", 16, 1, 0.7), ("GRPO", 8, 8, 1.0) };
        string[] engines = [DecodeEngine.Torch, "cpu", DecodeEngine.Auto];
        Console.WriteLine($"\n## RL rollouts ({model.Config.Layers} layers, width {model.Config.Width}, {rounds} rounds interleaved; medians)");
        Console.WriteLine("| rollout | engine | rows | mean answer tokens | seconds | answer tok/s | speed-up |");
        Console.WriteLine("|---|---|---|---|---|---|---|");
        foreach (var kind in kinds)
        {
            var times = engines.ToDictionary(e => e, _ => new List<(double Seconds, double Tokens)>());
            for (int round = 0; round < rounds + 1; round++)   // round 0 warms up
            {
                var random = new Random(round);
                var prompts = Enumerable.Range(0, kind.Prompts).Select(_ => titles[random.Next(titles.Count)]).SelectMany(p => Enumerable.Repeat(p, kind.Group)).ToList();
                foreach (string engine in round % 2 == 0 ? engines : [.. engines.Reverse()])
                {
                    var watch = Stopwatch.StartNew();
                    using var rollout = Rollout.Sample(model, tokenizer, prompts, kind.Temperature, 64, seed: round * 1000, engine: engine);
                    double seconds = watch.Elapsed.TotalSeconds;
                    if (round > 0) times[engine].Add((seconds, rollout.Completions.Sum(c => c.AnswerTokens.Length)));
                }
            }
            double torchSeconds = Stats.Median(times[DecodeEngine.Torch].Select(t => t.Seconds));
            foreach (string engine in engines)
            {
                double seconds = Stats.Median(times[engine].Select(t => t.Seconds));
                double tokens = times[engine].Average(t => t.Tokens);
                Console.WriteLine($"| {kind.Name} | {engine switch { "cpu" => "CPU engine F32", DecodeEngine.Auto => $"auto (CPU engine up to {DecodeEngine.AutoRowLimit} rows)", _ => "libtorch" }} | {kind.Prompts * kind.Group} | {tokens / (kind.Prompts * kind.Group):F1} | " +
                                  $"{seconds:F2} | {Stats.Median(times[engine].Select(t => t.Tokens / t.Seconds)):F0} | {torchSeconds / seconds:F2}× |");
            }
        }
    }

    /// <summary>One decode step of B rows (one token each, 60 cached positions): where the engines part as B grows.</summary>
    static void StepCost(GptSharp.Models.Gpt model)
    {
        var config = model.Config;
        using var engine = CpuModel.From(model);
        Console.WriteLine("\n| rows | libtorch ms/step | CPU engine F32 ms/step | libtorch tok/s | CPU engine tok/s |");
        Console.WriteLine("|---|---|---|---|---|");
        foreach (int b in new[] { 1, 4, 16, 32, 64, 128 })
        {
            var cache = engine.CreateCache(b);
            var logits = new float[b * config.VocabSize];
            int[] tokens = [.. Enumerable.Range(0, b).Select(i => i * 7 % 1000)];
            int[] slots = [.. Enumerable.Range(0, b)], positions = [.. Enumerable.Repeat(60, b)];
            double Time(Action step)
            {
                for (int w = 0; w < 5; w++) step();
                var watch = Stopwatch.StartNew();
                for (int i = 0; i < 40; i++) step();
                return watch.Elapsed.TotalMilliseconds / 40;
            }
            double cpu = Time(() => engine.Forward(cache, b, tokens, slots, positions, slots, logits));
            double torch;
            using (TorchSharp.torch.no_grad())
            {
                using var kv = new GptSharp.Models.KvCache(config, b);
                kv.Advance(60);
                using var input = TorchSharp.torch.tensor(tokens.Select(t => (long)t).ToArray(), [b, 1]);
                torch = Time(() =>
                {
                    using var scope = TorchSharp.torch.NewDisposeScope();
                    model.Forward(input, kv);
                });
            }
            Console.WriteLine($"| {b} | {torch:F2} | {cpu:F2} | {b / torch * 1000:F0} | {b / cpu * 1000:F0} |");
        }
    }
}
