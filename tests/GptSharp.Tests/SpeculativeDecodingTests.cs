using GptSharp.Inference;
using GptSharp.Inference.Cpu;
using GptSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

/// <summary>
/// Speculative decoding: greedy output identical to one token a pass whatever the drafter proposes, and sampled output
/// distributed as the target model's (a chi-square test over thousands of draws against the exact probabilities).
/// </summary>
public class SpeculativeDecodingTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    /// <summary>Proposes the same tokens whatever the context: drafts that are sometimes right and often wrong.</summary>
    sealed class FixedDrafter(params int[] tokens) : IDrafter
    {
        public int[] Propose(IReadOnlyList<int> context, int count) => tokens[..Math.Min(count, tokens.Length)];
    }

    [Fact]
    public void PromptLookupProposesWhatFollowedTheLatestEarlierOccurrenceOfTheLongestSuffix()
    {
        var drafter = new NgramDrafter(shortest: 2, longest: 3);
        Assert.Equal([9, 4], drafter.Propose([5, 6, 7, 8, 5, 6, 9, 4, 1, 5, 6], 2));   // "5 6" last seen before 9 4 (not 7 8)
        Assert.Equal([3, 5, 1], drafter.Propose([7, 1, 2, 3, 5, 1, 2, 8, 7, 1, 2], 3));   // "7 1 2" beats the shorter, later "1 2"
        Assert.Empty(drafter.Propose([1, 2, 3, 4], 3));        // nothing repeats
        Assert.Equal([1, 2, 1], drafter.Propose([1, 2, 1, 2], 3));   // a copy runs on into its own drafts: a repeat drafts as far as asked
        Assert.Equal([7, 7, 7, 7, 7], drafter.Propose([4, 7, 7, 7], 5));
        Assert.Empty(new NgramDrafter(2, 4).Propose([3], 4));
    }

    [Theory]
    [InlineData("ngram")]
    [InlineData("fixed")]
    [InlineData("same-model")]
    [InlineData("other-model")]
    public void GreedyOutputIsIdenticalToOneTokenAPass(string drafterKind)
    {
        var config = GptConfig.Llama(64, 128, layers: 2, heads: 4, kvHeads: 2, width: 64);
        using var model = CpuEngineTests.RandomModel(config, seed: 3);
        using var engine = CpuModel.From(model);
        using var other = CpuEngineTests.RandomModel(config, seed: 4);
        using var otherEngine = CpuModel.From(other);
        IDrafter drafter = drafterKind switch
        {
            "ngram" => new NgramDrafter(),
            "fixed" => new FixedDrafter(1, 2, 3, 4),
            "same-model" => new ModelDrafter(engine),
            _ => new ModelDrafter(otherEngine),
        };
        int[] prompt = [.. Enumerable.Range(0, 30).Select(i => i % 7 + 10)];
        var options = new SamplingOptions { Temperature = 0, MaxNewTokens = 80 };
        var plain = new TokenDecoder(engine).Generate(prompt, options);
        var (result, stats) = SpeculativeDecoding.Generate(engine, new BatchRow(prompt, options), prompt, drafter, 4);
        Assert.Equal(plain.Tokens, result.Generation.Tokens);
        Assert.Equal(plain.Finish, result.Generation.Finish);
        Assert.True(stats.Drafted > 0, "nothing was drafted");
        if (drafterKind == "same-model") Assert.Equal(stats.Drafted, stats.Accepted);   // a drafter that is the target is always right
        if (drafterKind is "ngram" or "same-model") Assert.True(stats.Passes < result.Generation.Tokens.Length, $"{stats.Passes} passes for {result.Generation.Tokens.Length} tokens");
    }

    [Fact]
    public void TheDraftBudgetDoublesWhileDraftsAreTakenAndFallsBackAfterARejection()
    {
        var budget = new DraftBudget(3);
        budget.Record(drafted: 3, taken: 3);
        Assert.Equal(6, budget.Next);
        budget.Record(0, 0);   // nothing drafted: no evidence either way
        Assert.Equal(6, budget.Next);
        budget.Record(6, 6);
        budget.Record(12, 12);
        Assert.Equal(SpeculativeDecoding.MaxDraftTokens, budget.Next);
        budget.Record(16, 5);
        Assert.Equal(3, budget.Next);

        // A drafter that is always right (the target itself) then checks long stretches in few passes.
        var config = GptConfig.Llama(64, 128, layers: 2, heads: 4, kvHeads: 2, width: 64);
        using var model = CpuEngineTests.RandomModel(config, seed: 3);
        using var engine = CpuModel.From(model);
        int[] prompt = [.. Enumerable.Range(0, 20).Select(i => i % 7 + 10)];
        var options = new SamplingOptions { Temperature = 0, MaxNewTokens = 90 };
        var (result, stats) = SpeculativeDecoding.Generate(engine, new BatchRow(prompt, options), prompt, new ModelDrafter(engine), 2);
        Assert.Equal(new TokenDecoder(engine).Generate(prompt, options).Tokens, result.Generation.Tokens);
        Assert.True(stats.Passes <= 12, $"{stats.Passes} passes for 90 tokens; 2 drafts a pass without growth take 30");
    }

    [Fact]
    public void EachSampledTokenCarriesItsLogProbabilityUnderTheDistributionItWasDrawnFrom()
    {
        // What RL compares its trainer with: log softmax(logits / T) of the token drawn, on the CPU engine as on libtorch.
        var config = GptConfig.Llama(64, 128, layers: 2, heads: 4, kvHeads: 2, width: 64);
        using var model = CpuEngineTests.RandomModel(config, seed: 3);
        using var engine = CpuModel.From(model);
        int[] prompt = [.. Enumerable.Range(0, 10).Select(i => i % 7 + 10)];
        var options = new SamplingOptions { Temperature = 0.7, TopK = 0, TopP = 1, MaxNewTokens = 20, Seed = 4, SampledLogprobs = true };
        foreach (var decoder in new[] { new TokenDecoder(engine), new TokenDecoder(model) })
        {
            var generation = decoder.Generate(prompt, options);
            Assert.Equal(generation.Tokens.Length, generation.SampledLogprobs!.Length);
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var sequence = tensor(prompt.Concat(generation.Tokens).Select(t => (long)t).ToArray()).unsqueeze(0);
            var logp = (model.forward(sequence)[0] / 0.7).log_softmax(-1);   // (T, V)
            for (int k = 0; k < generation.Tokens.Length; k++)
                Assert.Equal(logp[prompt.Length - 1 + k, generation.Tokens[k]].item<float>(), generation.SampledLogprobs[k], 3);
        }
        var greedy = new TokenDecoder(engine).Generate(prompt, options with { Temperature = 0 });
        Assert.All(greedy.SampledLogprobs!, lp => Assert.Equal(0, lp));   // a one-hot distribution
    }

    [Fact]
    public void ContextFullAndStopTokensEndARowAsOneTokenAPassDoes()
    {
        var config = GptConfig.Llama(64, 48, layers: 2, heads: 4, kvHeads: 2, width: 64);
        using var model = CpuEngineTests.RandomModel(config, seed: 3);
        using var engine = CpuModel.From(model);
        int[] prompt = [.. Enumerable.Range(0, 30).Select(i => i % 5 + 10)];
        foreach (var options in new[] { new SamplingOptions { Temperature = 0, MaxNewTokens = 100 }, new SamplingOptions { Temperature = 0, MaxNewTokens = 100, StopTokens = [12, 13] } })
        {
            var plain = new TokenDecoder(engine).Generate(prompt, options);
            var (result, _) = SpeculativeDecoding.Generate(engine, new BatchRow(prompt, options), prompt, new NgramDrafter(1, 3), 8);
            Assert.Equal(plain.Tokens, result.Generation.Tokens);
            Assert.Equal(plain.Finish, result.Generation.Finish);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => SpeculativeDecoding.Generate(engine, new BatchRow(prompt, new SamplingOptions()), prompt, new NgramDrafter(), 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => SpeculativeDecoding.Generate(engine, new BatchRow(prompt, new SamplingOptions()), prompt, new NgramDrafter(), SpeculativeDecoding.MaxDraftTokens + 1));
    }

    [Fact]
    public void SampledTokensAreDistributedAsTheTargetModelsWhateverIsDrafted()
    {
        // A vocabulary of 6: the first two answer tokens have 36 outcomes, each with an exact probability from the model.
        const int vocab = 6, draws = 6000;
        var config = GptConfig.Llama(vocab, 32, layers: 1, heads: 2, kvHeads: 1, width: 32);
        using var model = CpuEngineTests.RandomModel(config, seed: 5);
        using var engine = CpuModel.From(model);
        int[] prompt = [1, 2, 3];
        var options = new SamplingOptions { Temperature = 0.8, MaxNewTokens = 2 };
        double[] first = Probabilities(engine, prompt, options);
        var exact = new double[vocab * vocab];
        for (int a = 0; a < vocab; a++)
        {
            double[] second = Probabilities(engine, [.. prompt, a], options, [a]);
            for (int b = 0; b < vocab; b++) exact[a * vocab + b] = first[a] * second[b];
        }
        Assert.True(first.Max() < 0.8 && first.Min() > 0.01, $"a spread first token: {string.Join(", ", first.Select(p => p.ToString("F3")))}");

        var counts = new int[vocab * vocab];
        int drafted = 0, accepted = 0;
        for (int seed = 0; seed < draws; seed++)
        {
            var row = new BatchRow(prompt, options with { Seed = seed });
            var (result, stats) = SpeculativeDecoding.Generate(engine, row, prompt, new FixedDrafter(4, 0), 2);
            counts[result.Generation.Tokens[0] * vocab + result.Generation.Tokens[1]]++;
            (drafted, accepted) = (drafted + stats.Drafted, accepted + stats.Accepted);
        }
        Assert.InRange((double)accepted / drafted, 0.05, 0.95);   // both the taking and the residual draw were exercised

        // Pearson's chi-square over the outcomes, those expected fewer than 5 times pooled; the critical value at p = 0.001.
        var bins = Enumerable.Range(0, exact.Length).GroupBy(k => exact[k] * draws >= 5 ? k : -1).ToList();
        double chiSquare = bins.Sum(g => { double e = g.Sum(k => exact[k]) * draws, o = g.Sum(k => counts[k]); return (o - e) * (o - e) / e; });
        int df = bins.Count - 1;
        double critical = df * Math.Pow(1 - 2.0 / (9 * df) + 3.09 * Math.Sqrt(2.0 / (9 * df)), 3);   // Wilson–Hilferty
        Assert.True(chiSquare < critical, $"chi-square {chiSquare:F1} over {df} degrees of freedom (critical {critical:F1})");
        // The same test rejects a sampler that takes every draft: its outcome (4, 0) alone would be far off.
        double wrong = (draws - exact[4 * vocab] * draws) * (draws - exact[4 * vocab] * draws) / (exact[4 * vocab] * draws);
        Assert.True(wrong > critical);
    }

    [Fact]
    public void ADraftModelMustShareTheTokenizerAndSpeculationRunsOnTheCpuEngineOnly()
    {
        using var dir = new TempDirectory();
        var config = GptConfig.Gpt2(fixture.Tokenizer.VocabSize, 64, layers: 2, heads: 2, width: 32);
        string target = fixture.SaveRandomRun(dir.File("target"), config, seed: 1), draft = fixture.SaveRandomRun(dir.File("draft"), config with { Layers = 1 }, seed: 2);
        TorchSharp.torch.manual_seed(3);
        using (var gpt2Model = new Gpt(GptConfig.Gpt2(50257, 64, layers: 1, heads: 1, width: 16)))
            GptSharp.Runs.Checkpoint.Save(dir.File("gpt2-draft"), gpt2Model, null, new GptSharp.Runs.TrainingState(0, "0:0", "", "gpt2"));
        var refused = Assert.Throws<ArgumentException>(() => ModelDrafter.Load(dir.File("gpt2-draft"), fixture.Tokenizer, WeightFormat.F32));
        Assert.Contains("'gpt2'", refused.Message);
        Assert.Contains($"'{fixture.Tokenizer.Spec.Name}'", refused.Message);
        Assert.Contains("vocabularies of", refused.Message);

        var (model, _) = GptSharp.Runs.Checkpoint.LoadModel(target);
        using (model)
        using (var drafter = ModelDrafter.Load(draft, fixture.Tokenizer, WeightFormat.F32))
        {
            int[] prompt = [fixture.Tokenizer.BosId, .. fixture.Tokenizer.Encode("床前明月光，疑是地上霜。")];
            var options = new SamplingOptions { Temperature = 0, MaxNewTokens = 30 };
            using var decoder = TokenDecoder.Create(model, DecodeEngine.Auto);
            var (speculative, stats) = decoder.Generate(prompt, options, drafter, 3);
            Assert.Equal(decoder.Generate(prompt, options).Tokens, speculative.Tokens);
            Assert.True(stats.Drafted > 0);
            using var torchDecoder = TokenDecoder.Create(model, DecodeEngine.Torch);
            Assert.Contains("CPU engine", Assert.Throws<InvalidOperationException>(() => torchDecoder.Generate(prompt, options, new NgramDrafter(), 3)).Message);
        }
    }

    [Fact]
    public void AChatAnswersTheSameWithPromptLookup()
    {
        using var dir = new TempDirectory();
        string run = fixture.SaveRandomRun(dir.File("chat"), GptConfig.Gpt2(fixture.Tokenizer.VocabSize, 128, layers: 2, heads: 2, width: 32), seed: 4);
        using var model = GptSharp.Serving.ServedModel.Load(run);
        using var speculation = new Speculation(new NgramDrafter(), 4);
        var plain = new GptSharp.Serving.ChatSession(model, temperature: 0, maxTokens: 40);
        var drafted = new GptSharp.Serving.ChatSession(model, temperature: 0, maxTokens: 40, speculation: speculation);
        foreach (string line in new[] { "床前明月光，床前明月光，床前明月光", "疑是地上霜" })
        {
            plain.Handle(line, _ => { }, seed: 1);
            drafted.Handle(line, _ => { }, seed: 1);
        }
        Assert.Equal(plain.History.Select(m => m.Content), drafted.History.Select(m => m.Content));
        Assert.Equal(4, drafted.History.Count);
    }

    [Fact]
    public async Task AServerDraftingByPromptLookupAnswersAsOneWithout()
    {
        using var dir = new TempDirectory();
        string run = fixture.SaveRandomRun(dir.File("served"), GptConfig.Gpt2(fixture.Tokenizer.VocabSize, 128, layers: 2, heads: 2, width: 32), seed: 6);
        using var model = GptSharp.Serving.ServedModel.Load(run);
        await using var server = new GptSharp.Serving.GptServer([model], new GptSharp.Serving.ServerOptions(Port: 0, PromptLookupTokens: 4));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address) };
        string question = "床前明月光，床前明月光，床前明月光";
        var reply = await http.PostAsync("/v1/chat/completions", new StringContent(System.Text.Json.JsonSerializer.Serialize(
            new { model = "served", messages = new[] { new { role = "user", content = question } }, max_tokens = 40, temperature = 0 }), System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(System.Net.HttpStatusCode.OK, reply.StatusCode);
        using var body = System.Text.Json.JsonDocument.Parse(await reply.Content.ReadAsStringAsync());
        string served = body.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!;

        var prompt = model.Template.RenderPrompt([new GptSharp.Tokenization.ChatMessage(GptSharp.Tokenization.ChatRoles.User, question)]);
        var alone = model.Generate(prompt, new SamplingOptions(Temperature: 0, MaxNewTokens: 40, StopTokens: [model.Tokenizer.EndId, model.Tokenizer.BosId]), null, default);
        Assert.Equal(model.Text(alone, null), served);
        Assert.True(((ContinuousBatcher)server.Scheduler("served")).DraftedTokens > 0, "nothing was drafted");
        Assert.Throws<ArgumentException>(() => new GptSharp.Serving.ServerOptions(PromptLookupTokens: 17).Validate());
    }

    /// <summary>The distribution the sampler draws the next token from after <paramref name="context"/>.</summary>
    static double[] Probabilities(CpuModel engine, int[] context, SamplingOptions options, int[]? produced = null)
    {
        var cache = engine.CreateCache(1);
        var logits = new float[engine.Config.VocabSize];
        engine.Forward(cache, context.Length, context, new int[context.Length], [.. Enumerable.Range(0, context.Length)], [context.Length - 1], logits);
        return Sampler.Distribution(logits, context, options, produced);
    }
}
