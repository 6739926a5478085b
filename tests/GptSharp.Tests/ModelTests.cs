using GptSharp.Inference;
using GptSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

public class ModelTests
{
    static GptConfig Small(bool llama, bool parallel = false) => (llama
        ? GptConfig.Llama(vocab: 97, context: 32, layers: 2, heads: 4, kvHeads: 2, width: 32)
        : GptConfig.Gpt2(vocab: 97, context: 32, layers: 2, heads: 4, width: 32)) with { ParallelBlock = parallel };

    public static TheoryData<bool, bool> Families => new() { { false, false }, { true, false }, { true, true } };

    static Gpt NewModel(GptConfig config, int seed = 0)
    {
        torch.manual_seed(seed);
        var model = new Gpt(config);
        model.eval();
        return model;
    }

    [Fact]
    public void ValidationNamesTheBadField()
    {
        var error = Assert.Throws<ArgumentException>(() => new GptConfig { Width = 100, Heads = 3 }.Validate());
        Assert.Equal("Width", error.ParamName);
        Assert.Equal("KvHeads", Assert.Throws<ArgumentException>(() => new GptConfig { Heads = 4, KvHeads = 3 }.Validate()).ParamName);
        Assert.Equal("Layers", Assert.Throws<ArgumentOutOfRangeException>(() => new GptConfig { Layers = 0 }.Validate()).ParamName);
        Assert.Throws<ArgumentException>(() => GptConfig.Preset("huge", 100));
    }

    [Fact]
    public void PresetsHaveTheAdvertisedSizes()
    {
        using var scope = NewDisposeScope();
        long tiny = new Gpt(GptConfig.Preset("tiny", 8192)).ParameterCount;
        Assert.InRange(tiny, 1_000_000, 3_000_000);
        Assert.InRange(new Gpt(GptConfig.Preset("small", 8192)).ParameterCount, 20_000_000, 30_000_000);
        long gpt2 = new Gpt(GptConfig.Preset("gpt2-124m", 50257)).ParameterCount;
        Assert.InRange(gpt2, 124_000_000, 124_700_000); // GPT-2 small: 124.4M with tied embeddings
    }

    [Fact]
    public void ReluSquaredMlpSquaresThePositivePartOfTheHiddenUnits()
    {
        using var scope = NewDisposeScope();
        var config = new GptConfig { Width = 2, Heads = 1, KvHeads = 1, MlpRatio = 1.5, Bias = false, Activation = ActivationKind.ReluSquared };
        var mlp = new DenseMlp(config);
        var weights = mlp.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (no_grad())
        {
            weights["c_fc.weight"].copy_(tensor(new float[] { 1, 0, 0, 1, 1, -1 }).reshape(3, 2));    // hidden = (a, b, a − b)
            weights["c_proj.weight"].copy_(tensor(new float[] { 1, 1, 1, 0, 0, 1 }).reshape(2, 3));   // out = (h0 + h1 + h2, h2)
        }
        // x = (3, −2): hidden (3, −2, 5) → relu² (9, 0, 25) → (34, 25).
        var output = mlp.forward(tensor(new float[] { 3, -2 }).reshape(1, 2)).data<float>().ToArray();
        Assert.Equal([34f, 25f], output);
        Assert.Throws<ArgumentException>(() => new DenseMlp(config with { Activation = ActivationKind.SwiGlu }));
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void LogitsHaveTheRightShapeAndAreCausal(bool llama, bool parallel)
    {
        using var scope = NewDisposeScope();
        var model = NewModel(Small(llama, parallel));
        var tokens = randint(0, 97, [2, 10], dtype: ScalarType.Int64);
        var logits = model.forward(tokens);
        Assert.Equal(new long[] { 2, 10, 97 }, logits.shape);
        var changed = tokens.clone();
        changed[.., 7] = (changed[.., 7] + 1) % 97;
        var logits2 = model.forward(changed);
        Assert.True(allclose(logits[.., ..7], logits2[.., ..7], 1e-5, 1e-5)); // the past does not see the future
        Assert.False(allclose(logits[.., 7..], logits2[.., 7..], 1e-5, 1e-5));
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void CachedChunksGiveTheSameLogitsAsOnePass(bool llama, bool parallel)
    {
        using var scope = NewDisposeScope();
        var model = NewModel(Small(llama, parallel));
        var tokens = randint(0, 97, [1, 12], dtype: ScalarType.Int64);
        var full = model.forward(tokens);
        using var cache = new KvCache(model.Config, 1);
        var first = model.Forward(tokens[.., ..5], cache);
        var second = model.Forward(tokens[.., 5..9], cache);   // a chunk after cached tokens
        var third = model.Forward(tokens[.., 9..10], cache);   // one token
        var rest = model.Forward(tokens[.., 10..], cache);
        Assert.True(allclose(full, cat([first, second, third, rest], 1), 1e-4, 1e-5));
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void GreedyWithCacheEqualsGreedyByFullRecomputation(bool llama, bool parallel)
    {
        using var scope = NewDisposeScope();
        var model = NewModel(Small(llama, parallel), seed: 3);
        int[] prompt = [5, 17, 42];
        var cached = new TokenDecoder(model).Generate([prompt], new SamplingOptions(Temperature: 0, MaxNewTokens: 20))[0].Tokens;

        var context = prompt.ToList();
        var recomputed = new List<int>();
        using (no_grad())
            for (int i = 0; i < 20; i++)
            {
                var logits = model.forward(tensor(context.Select(t => (long)t).ToArray()).unsqueeze(0));
                int next = (int)logits[0, -1].argmax().item<long>();
                recomputed.Add(next);
                context.Add(next);
            }
        Assert.Equal(recomputed, cached);
    }

    [Fact]
    public void SamplingIsReproducibleFromTheSeed()
    {
        using var scope = NewDisposeScope();
        var model = NewModel(Small(false));
        var generator = new TokenDecoder(model);
        var options = new SamplingOptions(Temperature: 1.0, TopK: 20, TopP: 0.9, RepetitionPenalty: 1.1, MaxNewTokens: 15, Seed: 11);
        var a = generator.Generate([[1, 2, 3]], options)[0].Tokens;
        var b = generator.Generate([[1, 2, 3]], options)[0].Tokens;
        var c = generator.Generate([[1, 2, 3]], options with { Seed = 12 })[0].Tokens;
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
    }

    [Fact]
    public void TopKOfOneIsGreedyAndStopTokensStop()
    {
        using var scope = NewDisposeScope();
        var generator = new TokenDecoder(NewModel(Small(true)));
        var greedy = generator.Generate([[7, 8]], new SamplingOptions(Temperature: 0, MaxNewTokens: 10))[0];
        var topOne = generator.Generate([[7, 8]], new SamplingOptions(Temperature: 1.5, TopK: 1, MaxNewTokens: 10))[0];
        Assert.Equal(greedy.Tokens, topOne.Tokens);
        var stopped = generator.Generate([[7, 8]], new SamplingOptions(Temperature: 0, MaxNewTokens: 10, StopTokens: [greedy.Tokens[2]]))[0];
        Assert.Equal(FinishReason.Stop, stopped.Finish);
        Assert.Equal(greedy.Tokens[..(Array.IndexOf(greedy.Tokens, greedy.Tokens[2]) + 1)], stopped.Tokens);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void OneLeftPaddedBatchDecodesExactlyAsSeparateRuns(bool llama, bool parallel)
    {
        using var scope = NewDisposeScope();
        var model = NewModel(Small(llama, parallel), seed: 5);
        var generator = new TokenDecoder(model);
        int[][] prompts = [[1], [4, 5, 6, 7, 8, 9, 10], [20, 21, 22]];
        var greedy = new SamplingOptions(Temperature: 0, MaxNewTokens: 12);
        var sampled = new SamplingOptions(Temperature: 1.0, TopK: 10, MaxNewTokens: 12, Seed: 9);
        var rows = new List<BatchRow>
        {
            new(prompts[0], greedy), new(prompts[1], greedy with { MaxNewTokens = 5 }), new(prompts[2], sampled),
        };
        var streamed = new List<int>();
        rows[0] = rows[0] with { OnToken = streamed.Add };
        var batch = new TokenDecoder(model).Generate(rows);
        Assert.Equal(generator.Generate([prompts[0]], greedy)[0].Tokens, batch[0].Generation.Tokens);
        Assert.Equal(generator.Generate([prompts[1]], greedy with { MaxNewTokens = 5 })[0].Tokens, batch[1].Generation.Tokens);
        Assert.Equal(generator.Generate([prompts[2]], sampled)[0].Tokens, batch[2].Generation.Tokens); // same seed, same draws
        Assert.Equal(batch[0].Generation.Tokens, streamed);
        Assert.Equal(5, batch[1].Generation.Tokens.Length);

        // A cancelled row stops; the others are unaffected.
        using var cancel = new CancellationTokenSource();
        var withCancel = new TokenDecoder(model).Generate([new BatchRow(prompts[0], greedy, OnToken: _ => cancel.Cancel(), Cancellation: cancel.Token), new BatchRow(prompts[2], greedy)]);
        Assert.True(withCancel[0].Cancelled);
        Assert.Single(withCancel[0].Generation.Tokens);
        Assert.Equal(generator.Generate([prompts[2]], greedy)[0].Tokens, withCancel[1].Generation.Tokens);
        Assert.Throws<ArgumentException>(() => new TokenDecoder(model).Generate([new BatchRow(new int[33], greedy)]));
    }

    [Fact]
    public void BatchedPromptsOfDifferentLengthsMatchSingleRuns()
    {
        using var scope = NewDisposeScope();
        var generator = new TokenDecoder(NewModel(Small(false)));
        var options = new SamplingOptions(Temperature: 0, MaxNewTokens: 6);
        var batch = generator.Generate([[1], [4, 5, 6, 7, 8]], options);
        Assert.Equal(generator.Generate([[1]], options)[0].Tokens, batch[0].Tokens);
        Assert.Equal(generator.Generate([[4, 5, 6, 7, 8]], options)[0].Tokens, batch[1].Tokens);
    }

    [Fact]
    public void TooLongPromptsAreAClearErrorOrTruncatedOnRequest()
    {
        using var scope = NewDisposeScope();
        var generator = new TokenDecoder(NewModel(Small(false)));
        int[] longPrompt = [.. Enumerable.Range(0, 40).Select(i => i % 97)];
        var error = Assert.Throws<ArgumentException>(() => generator.Generate([longPrompt], new SamplingOptions()));
        Assert.Contains("context length is 32", error.Message);
        Assert.Contains("40 tokens", error.Message);
        var truncated = generator.Generate([longPrompt], new SamplingOptions(Temperature: 0, MaxNewTokens: 50, TruncatePrompt: true))[0];
        Assert.Equal(32, truncated.PromptTokens.Length);
        Assert.Equal(longPrompt[^32..], truncated.PromptTokens);
        Assert.Equal(FinishReason.ContextFull, truncated.Finish);
        Assert.Single(truncated.Tokens);
        Assert.Throws<ArgumentOutOfRangeException>(() => generator.Generate([[1, 500]], new SamplingOptions()));
        Assert.Throws<ArgumentOutOfRangeException>(() => generator.Generate([[1]], new SamplingOptions(TopP: 0)));
    }
}
