using GptSharp.Inference;
using GptSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

/// <summary>Continuous batching: requests join and leave a running batch, and none of them can tell.</summary>
public class BatcherTests
{
    public static TheoryData<bool> Llama => new() { false, true };
    /// <summary>Both layouts on libtorch and on the CPU engine (F32, and BF16 for a packed format).</summary>
    public static TheoryData<bool, string> LayoutsAndEngines => new() { { false, "torch" }, { true, "torch" }, { false, "cpu" }, { true, "cpu" }, { true, "cpu-bf16" } };
    public static TheoryData<string> Engines => new() { "torch", "cpu" };

    static Gpt NewModel(bool llama, int context = 64)
    {
        torch.manual_seed(5);
        var model = new Gpt(llama
            ? GptConfig.Llama(vocab: 89, context: context, layers: 2, heads: 4, kvHeads: 2, width: 32)
            : GptConfig.Gpt2(vocab: 89, context: context, layers: 2, heads: 4, width: 32));
        model.eval();
        return model;
    }

    static int[] Prompt(int length, int salt) => [.. Enumerable.Range(0, length).Select(i => (i * 7 + salt * 13) % 89)];

    [Theory]
    [MemberData(nameof(LayoutsAndEngines))]
    public async Task EachRequestGetsWhatItGetsAloneWhateverJoinsOrLeavesBesideIt(bool llama, string engine)
    {
        using var model = NewModel(llama);
        using var decoder = TokenDecoder.Create(model, engine);
        Assert.Equal(engine != "torch", decoder.Engine is not null);
        // More requests than slots, of mixed prompt and answer lengths, arriving while others decode; greedy and sampled.
        var rows = Enumerable.Range(0, 9).Select(i => new BatchRow(Prompt(1 + i * 5 % 23, i),
            new SamplingOptions(Temperature: i % 3 == 0 ? 0 : 0.9, TopK: i % 3 == 2 ? 10 : 0, MaxNewTokens: 3 + i * 11 % 30, Seed: 40 + i,
                StopTokens: i % 4 == 1 ? [7] : null))).ToArray();
        var alone = rows.Select(r => decoder.Generate([r])[0].Generation).ToArray();

        await using var batcher = ContinuousBatcher.For(model, decoder, new BatcherOptions(Slots: 3, PrefillChunk: 4));
        var results = new List<Task<BatchResult>>();
        foreach (var (row, i) in rows.Select((r, i) => (r, i)))
        {
            results.Add(batcher.Enqueue(row));
            if (i % 3 == 2) await Task.Delay(3);   // in threes, so that some arrive together and some while others decode
        }
        await Task.WhenAll(results);
        for (int i = 0; i < rows.Length; i++)
        {
            var result = await results[i];
            Assert.Null(result.Error);
            Assert.Equal(alone[i].Tokens, result.Generation.Tokens);
            Assert.Equal(alone[i].Finish, result.Generation.Finish);
        }
        Assert.True(batcher.LargestBatch > 1, "the requests never shared a decode step");
        Assert.True(batcher.PrefillChunks > rows.Length, "no prompt was split into chunks");
    }

    [Fact]
    public async Task AShortPromptArrivingDuringALongPrefillGetsItsFirstTokenFirst()
    {
        using var model = NewModel(llama: true, context: 256);
        using var decoder = TokenDecoder.Create(model, "cpu");
        await using var batcher = ContinuousBatcher.For(model, decoder, new BatcherOptions(Slots: 2, PrefillChunk: 16));
        var firsts = new System.Collections.Concurrent.ConcurrentQueue<string>();
        BatchRow Row(string name, int length) => new(Prompt(length, length), new SamplingOptions(Temperature: 0, MaxNewTokens: 2),
            OnToken: _ => { if (!firsts.Contains(name)) firsts.Enqueue(name); });
        var queued = batcher.TryEnqueueAll([Row("long", 240), Row("short", 6)])!;   // the long one (15 chunks) first
        var (longOne, shortOne) = (queued[0], queued[1]);
        await Task.WhenAll(longOne, shortOne);
        Assert.Equal(["short", "long"], firsts.ToArray());
        Assert.Null((await longOne).Error);
        Assert.Equal(decoder.Generate([Row("alone", 240)])[0].Generation.Tokens, (await longOne).Generation.Tokens);
    }

    [Fact]
    public async Task WithPromptLookupEachRequestGetsTheTokensItGetsAloneInFewerSteps()
    {
        using var model = NewModel(llama: true, context: 96);
        using var decoder = TokenDecoder.Create(model, "cpu");
        // Prompts that repeat themselves, greedy and sampled, one with a stop token and one cut by the context.
        var rows = Enumerable.Range(0, 7).Select(i => new BatchRow([.. Enumerable.Range(0, 12 + i * 9).Select(j => (j % (3 + i) * 7 + i) % 89)],
            new SamplingOptions(Temperature: i % 3 == 1 ? 0.8 : 0, MaxNewTokens: i == 6 ? 200 : 20 + i * 5, Seed: 70 + i, StopTokens: i == 2 ? [9] : null))).ToArray();
        var alone = rows.Select(r => decoder.Generate([r])[0].Generation).ToArray();

        await using var plain = ContinuousBatcher.For(model, decoder, new BatcherOptions(Slots: 3, PrefillChunk: 8));
        await using var drafted = ContinuousBatcher.For(model, decoder, new BatcherOptions(Slots: 3, PrefillChunk: 8, PromptLookupTokens: 4));
        var plainResults = await Task.WhenAll(rows.Select(plain.Enqueue));
        var draftedResults = await Task.WhenAll(rows.Select(drafted.Enqueue));
        for (int i = 0; i < rows.Length; i++)
        {
            Assert.Null(draftedResults[i].Error);
            if (rows[i].Options.Temperature > 0) continue;   // sampled rows draw their own way (the same distribution: SpeculativeDecodingTests)
            Assert.Equal(alone[i].Tokens, plainResults[i].Generation.Tokens);
            Assert.Equal(alone[i].Tokens, draftedResults[i].Generation.Tokens);
            Assert.Equal(alone[i].Finish, draftedResults[i].Generation.Finish);
        }
        Assert.Equal(FinishReason.ContextFull, draftedResults[6].Generation.Finish);
        Assert.True(drafted.AcceptedDrafts > 0 && drafted.DecodeSteps < plain.DecodeSteps,
            $"{drafted.AcceptedDrafts} of {drafted.DraftedTokens} drafts taken; {drafted.DecodeSteps} steps against {plain.DecodeSteps}");
        Assert.Throws<NotSupportedException>(() => ContinuousBatcher.For(model, TokenDecoder.Create(model, "torch"), new BatcherOptions(PromptLookupTokens: 4)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BatcherOptions(PromptLookupTokens: 17).Validate());
    }

    [Theory]
    [MemberData(nameof(Engines))]
    public async Task AShortRequestFinishesWhileALongOneDecodes(string engine)
    {
        using var model = NewModel(llama: false, context: 512);
        using var decoder = TokenDecoder.Create(model, engine);
        await using var batcher = ContinuousBatcher.For(model, decoder, new BatcherOptions(Slots: 2));
        int longTokens = 0;
        var started = new TaskCompletionSource();
        var longRequest = batcher.Enqueue(new BatchRow(Prompt(5, 1), new SamplingOptions(Temperature: 0, MaxNewTokens: 400),
            OnToken: _ => { Interlocked.Increment(ref longTokens); started.TrySetResult(); }));
        await started.Task;
        var shortResult = await batcher.Enqueue(new BatchRow(Prompt(3, 2), new SamplingOptions(Temperature: 0, MaxNewTokens: 4)));
        int longSoFar = Volatile.Read(ref longTokens);
        Assert.Equal(4, shortResult.Generation.Tokens.Length);
        Assert.InRange(longSoFar, 1, 399);   // a static batch would have held the short request until all 400 were done
        Assert.Equal(400, (await longRequest).Generation.Tokens.Length);
    }

    [Theory]
    [MemberData(nameof(Engines))]
    [InlineData("cpu+ngram")]   // cancelled while its drafts are checked
    public async Task ACancelledRequestFreesItsSlotAtOnce(string engine)
    {
        using var model = NewModel(llama: true, context: 512);
        using var decoder = TokenDecoder.Create(model, engine.Replace("+ngram", ""));
        await using var batcher = ContinuousBatcher.For(model, decoder, new BatcherOptions(Slots: 1, PromptLookupTokens: engine.EndsWith("+ngram") ? 4 : 0));
        using var cancel = new CancellationTokenSource();
        var started = new TaskCompletionSource();
        var first = batcher.Enqueue(new BatchRow(Prompt(4, 3), new SamplingOptions(Temperature: 0, MaxNewTokens: 500), _ => started.TrySetResult(), cancel.Token));
        await started.Task;
        var second = batcher.Enqueue(new BatchRow(Prompt(4, 4), new SamplingOptions(Temperature: 0, MaxNewTokens: 3)));
        Assert.Equal(1, batcher.Waiting);
        cancel.Cancel();
        var cancelled = await first;
        Assert.True(cancelled.Cancelled);
        Assert.InRange(cancelled.Generation.Tokens.Length, 1, 499);
        Assert.Equal(3, (await second).Generation.Tokens.Length);
        Assert.Equal(0, batcher.Running);
    }

    [Theory]
    [MemberData(nameof(LayoutsAndEngines))]
    public async Task APromptThatRepeatsAnEarlierRequestReusesItsKeysAndGetsTheSameAnswer(bool llama, string engine)
    {
        using var model = NewModel(llama, context: 128);
        using var decoder = TokenDecoder.Create(model, engine);
        int[] system = Prompt(30, 7);
        var firstTurn = new BatchRow(system, new SamplingOptions(Temperature: 0, MaxNewTokens: 10));
        async Task<(BatchResult First, BatchResult Second)> Chat(bool prefixCache)
        {
            await using var batcher = ContinuousBatcher.For(model, decoder, new BatcherOptions(Slots: 2, PrefixCache: prefixCache));
            var first = await batcher.Enqueue(firstTurn);
            // The next turn: the first prompt, its answer, and a new message.
            int[] next = [.. system, .. first.Generation.Tokens, .. Prompt(6, 9)];
            var second = await batcher.Enqueue(new BatchRow(next, new SamplingOptions(Temperature: 0.8, MaxNewTokens: 12, Seed: 3)));
            return (first, second);
        }
        var cached = await Chat(prefixCache: true);
        var uncached = await Chat(prefixCache: false);
        // Every token of the first turn whose keys were stored (the last answer token never went in) is reused.
        Assert.Equal(system.Length + cached.First.Generation.Tokens.Length - 1, cached.Second.Timings!.CachedTokens);
        Assert.Equal(6 + 1, cached.Second.Timings.PromptTokens);
        Assert.Equal(0, uncached.Second.Timings!.CachedTokens);
        Assert.Equal(uncached.Second.Generation.Tokens, cached.Second.Generation.Tokens);
        // A later request that shares only the system prompt reuses that and must not see the old turn's keys beyond it.
        int[] other = [.. system, .. Prompt(5, 11)];
        var expected = decoder.Generate([new BatchRow(other, new SamplingOptions(Temperature: 0, MaxNewTokens: 12))])[0].Generation.Tokens;
        await using (var batcher = ContinuousBatcher.For(model, decoder, new BatcherOptions(Slots: 1)))
        {
            await batcher.Enqueue(new BatchRow([.. system, .. Prompt(20, 12)], new SamplingOptions(Temperature: 0, MaxNewTokens: 15)));
            var reused = await batcher.Enqueue(new BatchRow(other, new SamplingOptions(Temperature: 0, MaxNewTokens: 12)));
            Assert.Equal(system.Length, reused.Timings!.CachedTokens);
            Assert.Equal(expected, reused.Generation.Tokens);
        }
    }

    [Theory]
    [MemberData(nameof(Engines))]
    public async Task EachRequestHasItsOwnContextBudgetAndBadRowsFailAlone(string engine)
    {
        using var model = NewModel(llama: false, context: 32);
        using var decoder = TokenDecoder.Create(model, engine);
        await using var batcher = ContinuousBatcher.For(model, decoder, new BatcherOptions(Slots: 3));
        var full = batcher.Enqueue(new BatchRow(Prompt(30, 1), new SamplingOptions(Temperature: 0, MaxNewTokens: 50)));
        var shortOne = batcher.Enqueue(new BatchRow(Prompt(2, 2), new SamplingOptions(Temperature: 0, MaxNewTokens: 20)));
        var tooLong = batcher.Enqueue(new BatchRow(Prompt(40, 3), new SamplingOptions(Temperature: 0, MaxNewTokens: 5)));
        var badToken = batcher.Enqueue(new BatchRow([1, 500], new SamplingOptions(Temperature: 0, MaxNewTokens: 5)));
        var fullResult = await full;
        Assert.Equal(FinishReason.ContextFull, fullResult.Generation.Finish);
        Assert.Equal(3, fullResult.Generation.Tokens.Length);   // 30 prompt tokens + 2 fed answer tokens fill 32; the third is sampled from them
        Assert.Equal(20, (await shortOne).Generation.Tokens.Length);
        Assert.Contains("context length", (await tooLong).Error!.Message);
        Assert.IsType<ArgumentException>((await badToken).Error);
    }
}
