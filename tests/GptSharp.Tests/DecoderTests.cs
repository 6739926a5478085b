using GptSharp.Evaluation;
using GptSharp.Inference;
using GptSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

/// <summary>
/// The one decoder gives token for token what the three decoders it replaced gave: the per-prompt KV-cache generator
/// (chat, generate, PPO rollouts), the batched one (serving) — tested in <see cref="ModelTests"/> — and the evaluator's
/// own greedy loop without a cache. The first and the last are kept here, as they were, as references.
/// </summary>
public class DecoderTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    public static TheoryData<bool> Llama => new() { false, true };

    static Gpt NewModel(bool llama, int vocab, int context = 48, int seed = 3)
    {
        torch.manual_seed(seed);
        var model = new Gpt(llama
            ? GptConfig.Llama(vocab: vocab, context: context, layers: 2, heads: 4, kvHeads: 2, width: 32)
            : GptConfig.Gpt2(vocab: vocab, context: context, layers: 2, heads: 4, width: 32));
        model.eval();
        return model;
    }

    [Theory]
    [MemberData(nameof(Llama))]
    public void BatchedDecodingEqualsThePerPromptGeneratorGreedyAndSampled(bool llama)
    {
        using var scope = NewDisposeScope();
        using var model = NewModel(llama, vocab: 97);
        int[][] prompts = [[1, 2, 3], [5], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11], [40, 41]];
        foreach (var options in new[]
                 {
                     new SamplingOptions(Temperature: 0, MaxNewTokens: 20),
                     new SamplingOptions(Temperature: 0.9, TopK: 20, MaxNewTokens: 20, Seed: 4, StopTokens: [13]),
                     new SamplingOptions(Temperature: 1.2, TopP: 0.9, RepetitionPenalty: 1.3, MaxNewTokens: 40, Seed: 77),
                 })
        {
            var batched = new TokenDecoder(model).Generate(prompts, options);
            for (int i = 0; i < prompts.Length; i++)
            {
                var (tokens, finish) = PerPromptReference(model, prompts[i], options with { Seed = options.Seed + i });
                Assert.Equal(tokens, batched[i].Tokens);
                Assert.Equal(finish, batched[i].Finish);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Llama))]
    public void EvaluationAnswersEqualTheEvaluatorsOldGreedyLoop(bool llama)
    {
        using var scope = NewDisposeScope();
        var tokenizer = fixture.Tokenizer;
        using var model = NewModel(llama, tokenizer.VocabSize, context: 64);
        string[] prompts = ["床前明月光，", "Q: 1+1=", "白日依山盡，黃河入海流。", "The capital of France is"];
        var evaluator = new Evaluator(model, tokenizer);
        var answers = evaluator.Answers(prompts, maxNewTokens: 12, separator: "\n\n");
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(EvaluatorReference(model.forward, tokenizer, 64, prompts[i], 12, "\n\n"), answers[i]);
        Assert.Contains(answers, a => a.Length > 0);   // a model that said nothing would prove nothing
    }

    /// <summary>The per-prompt generator as it was: one KV cache per prompt, no padding.</summary>
    static (int[] Tokens, FinishReason Finish) PerPromptReference(Gpt model, int[] prompt, SamplingOptions options)
    {
        using var noGrad = no_grad();
        using var cache = new KvCache(model.Config, 1, CPU);
        var generator = new SamplingRandom(options.Seed);
        var context = new List<int>(prompt);
        var produced = new List<int>();
        using var scope = NewDisposeScope();
        var logits = model.Forward(tensor(prompt.Select(t => (long)t).ToArray()).unsqueeze(0), cache);
        int next = Sampler.Sample(logits[0, -1], context, options, generator);
        while (true)
        {
            produced.Add(next);
            context.Add(next);
            if (options.StopTokens?.Contains(next) == true) return ([.. produced], FinishReason.Stop);
            if (produced.Count >= options.MaxNewTokens) return ([.. produced], FinishReason.Length);
            if (cache.Length >= model.Config.ContextLength) return ([.. produced], FinishReason.ContextFull);
            logits = model.Forward(tensor(new long[] { next }).unsqueeze(0), cache);
            next = Sampler.Sample(logits[0, -1], context, options, generator);
        }
    }

    /// <summary>The evaluator's own greedy loop as it was: the whole window through the model at every step.</summary>
    static string EvaluatorReference(Func<Tensor, Tensor> logitsOf, Tokenization.GptTokenizer tokenizer, int contextLength, string prompt, int maxNewTokens, string separator)
    {
        var tokens = new List<int> { tokenizer.BosId };
        tokens.AddRange(tokenizer.Encode(prompt));
        var produced = new List<int>();
        for (int step = 0; step < maxNewTokens; step++)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var window = tokens.TakeLast(contextLength).Select(x => (long)x).ToArray();
            int next = (int)logitsOf(tensor(window, [1, window.Length]))[0, -1].argmax().item<long>();
            if (tokenizer.IsSpecial(next)) break;
            tokens.Add(next);
            produced.Add(next);
            string text = tokenizer.Decode(produced);
            if (text.Contains('\n') || (separator.Length > 0 && text.Contains(separator))) break;
        }
        return tokenizer.Decode(produced).Split('\n')[0];
    }
}
