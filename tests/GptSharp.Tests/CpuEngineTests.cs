using GptSharp.Inference;
using GptSharp.Inference.Cpu;
using GptSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

/// <summary>
/// The CPU engine against the libtorch model it was packed from: logits within 1e-4 of their range for every layout,
/// 256 greedy tokens equal, batches with padding equal to rows alone; 16-bit and 8-bit weights close.
/// </summary>
public class CpuEngineTests
{
    const int Vocab = 512;

    public static TheoryData<string> Layouts => new() { "gpt2", "gpt2-untied", "llama", "llama-gqa", "qwen2", "qwen3", "llama3-scaled", "palm", "relu2-qknorm" };

    static GptConfig Layout(string name) => name switch
    {
        "gpt2" => GptConfig.Gpt2(Vocab, 320, layers: 2, heads: 4, width: 64),
        "gpt2-untied" => GptConfig.Gpt2(Vocab, 320, layers: 2, heads: 4, width: 64) with { TiedEmbeddings = false },
        "llama" => GptConfig.Llama(Vocab, 320, layers: 2, heads: 4, kvHeads: 4, width: 64),
        "llama-gqa" => GptConfig.Llama(Vocab, 320, layers: 2, heads: 4, kvHeads: 2, width: 64),
        "qwen2" => GptConfig.Llama(Vocab, 320, layers: 2, heads: 4, kvHeads: 2, width: 64) with { QkvBias = true, TiedEmbeddings = true, RotaryBase = 1e6 },
        "qwen3" => GptConfig.Llama(Vocab, 320, layers: 2, heads: 4, kvHeads: 2, width: 64) with { QkNorm = true, HeadSize = 32, MlpWidth = 96, NormEpsilon = 1e-6 },
        "llama3-scaled" => GptConfig.Llama(Vocab, 320, layers: 2, heads: 4, kvHeads: 1, width: 64) with
            { HeadSize = 24, RotaryBase = 500000, RopeScaling = new RopeScaling(8, 1, 4, 64) },
        "palm" => GptConfig.Llama(Vocab, 320, layers: 2, heads: 4, kvHeads: 1, width: 64) with { ParallelBlock = true },
        "relu2-qknorm" => GptConfig.Llama(Vocab, 320, layers: 2, heads: 4, kvHeads: 2, width: 64) with { Activation = ActivationKind.ReluSquared, QkNorm = true },
        _ => throw new ArgumentException(name),
    };

    /// <summary>A random model whose logits are spread (embedding ×5, biases and norm weights random) so greedy choices are clear.</summary>
    internal static Gpt RandomModel(GptConfig config, int seed = 1)
    {
        torch.manual_seed(seed);
        var model = new Gpt(config);
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
            {
                if (name == "wte.weight" || name == "lm_head.weight") p.mul_(5);
                else if (name.EndsWith("bias")) p.normal_(0, 0.1);
                else if (p.dim() == 1) p.normal_(1, 0.2);   // norm weights
            }
        model.eval();
        return model;
    }

    static int[] Prompt(int length, int seed) => [.. Enumerable.Range(0, length).Select(i => (i * 131 + seed * 17 + 7) % Vocab)];

    [Theory]
    [MemberData(nameof(Layouts))]
    public void LogitsMatchLibtorchAlongAPrefillAndSteps(string layout)
    {
        using var model = RandomModel(Layout(layout));
        using var engine = CpuModel.From(model);
        int[] tokens = Prompt(40, 1);
        float[] expected;
        using (no_grad())
        using (var scope = NewDisposeScope())
            expected = model.forward(tensor(tokens.Select(t => (long)t).ToArray()).unsqueeze(0))[0].data<float>().ToArray();   // (40, V)

        // 24 tokens in one call (two cache slots: the second holds a copy of the first's prefix), then one at a time.
        var cache = new CpuKvCache(model.Config, slots: 1);
        var logits = new float[Vocab];
        int prefill = 24;
        var outputs = new float[prefill * Vocab];
        engine.Forward(cache, prefill, tokens[..prefill], new int[prefill], [.. Enumerable.Range(0, prefill)], [.. Enumerable.Range(0, prefill)], outputs);
        for (int i = 0; i < prefill; i++) AssertClose(expected.AsSpan(i * Vocab, Vocab), outputs.AsSpan(i * Vocab, Vocab), $"{layout} prefill token {i}");
        for (int i = prefill; i < tokens.Length; i++)
        {
            engine.Forward(cache, 1, [tokens[i]], [0], [i], [0], logits);
            AssertClose(expected.AsSpan(i * Vocab, Vocab), logits, $"{layout} step {i}");
        }
    }

    [Theory]
    [InlineData("qwen3", WeightFormat.F32)]
    [InlineData("qwen3", WeightFormat.F16)]
    [InlineData("qwen3", WeightFormat.BF16)]
    [InlineData("qwen3", WeightFormat.Q8_0)]
    [InlineData("qwen3", WeightFormat.Q4_0)]
    [InlineData("gpt2", WeightFormat.F32)]   // biases and GELU applied by each thread to the rows it computed
    public void ATokensLogitsDoNotDependOnHowManyTokensShareItsForwardPass(string layout, WeightFormat format)
    {
        // Batch invariance: 4-vector and 1-vector kernels do the same arithmetic, so a prompt fed whole and token by
        // token gives bit-identical logits (a batched request decodes exactly as it would alone).
        using var model = RandomModel(Layout(layout));
        using var engine = CpuModel.From(model, format);
        int[] tokens = Prompt(13, 9);
        int[] all = [.. Enumerable.Range(0, tokens.Length)];
        var whole = new float[tokens.Length * Vocab];
        engine.Forward(engine.CreateCache(1), tokens.Length, tokens, new int[tokens.Length], all, all, whole);
        var cache = engine.CreateCache(1);
        var one = new float[Vocab];
        for (int i = 0; i < tokens.Length; i++)
        {
            engine.Forward(cache, 1, [tokens[i]], [0], [i], [0], one);
            Assert.True(one.AsSpan().SequenceEqual(whole.AsSpan(i * Vocab, Vocab)), $"{format}: token {i} differs");
        }
    }

    static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> got, string what, double tolerance = 1e-4)
    {
        float min = float.MaxValue, max = float.MinValue, worst = 0;
        for (int k = 0; k < expected.Length; k++)
        {
            (min, max) = (Math.Min(min, expected[k]), Math.Max(max, expected[k]));
            worst = Math.Max(worst, Math.Abs(expected[k] - got[k]));
        }
        Assert.True(worst <= tolerance * (max - min), $"{what}: largest difference {worst:G3} against a range of {max - min:G3}");
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void GreedyDecodingEqualsLibtorchFor256TokensAndBatchesEqualRowsAlone(string layout)
    {
        using var model = RandomModel(Layout(layout));
        using var engine = CpuModel.From(model);
        var torchDecoder = new TokenDecoder(model);
        var cpuDecoder = new TokenDecoder(engine);
        var greedy = new SamplingOptions(Temperature: 0, MaxNewTokens: 256);
        int[] prompt = Prompt(12, 2);
        Assert.Equal(torchDecoder.Generate(prompt, greedy).Tokens, cpuDecoder.Generate(prompt, greedy).Tokens);

        // A batch of prompts of different lengths (left padding), sampled: each row equals itself decoded alone.
        var sampled = new SamplingOptions(Temperature: 0.8, MaxNewTokens: 24, Seed: 5);
        int[][] prompts = [Prompt(3, 3), Prompt(17, 4), Prompt(9, 5)];
        var batch = cpuDecoder.Generate(prompts, sampled);
        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(cpuDecoder.Generate(prompts[i], sampled with { Seed = 5 + i }).Tokens, batch[i].Tokens);
            Assert.Equal(torchDecoder.Generate(prompts[i], sampled with { Seed = 5 + i }).Tokens, batch[i].Tokens);
        }
    }

    [Theory]
    [InlineData(WeightFormat.BF16, 0.02)]
    [InlineData(WeightFormat.F16, 0.002)]
    [InlineData(WeightFormat.Q8_0, 0.02)]
    [InlineData(WeightFormat.Q4_0, 0.1)]
    public void HalfEightAndFourBitWeightsStayCloseToF32(WeightFormat format, double tolerance)
    {
        using var model = RandomModel(Layout("qwen3"));   // every row a multiple of 32, for the blocks of Q8_0 and Q4_0
        using var f32 = CpuModel.From(model);
        using var packed = CpuModel.From(model, format);
        Assert.Equal(format, packed.Format);
        double share = format switch { WeightFormat.Q8_0 => 0.3, WeightFormat.Q4_0 => 0.16, _ => 0.51 };   // 34/128, 18/128, 1/2
        Assert.True(packed.BytesPerToken < f32.BytesPerToken * share, $"{packed.BytesPerToken} vs {f32.BytesPerToken} bytes");
        int[] tokens = Prompt(16, 6);
        float[] Logits(CpuModel engine)
        {
            var logits = new float[Vocab];
            engine.Forward(engine.CreateCache(1), tokens.Length, tokens, new int[tokens.Length], [.. Enumerable.Range(0, tokens.Length)], [tokens.Length - 1], logits);
            return logits;
        }
        AssertClose(Logits(f32), Logits(packed), $"{format}", tolerance);
    }

    [Theory]
    [InlineData("gpt2")]            // heads of 16: the vector path
    [InlineData("llama3-scaled")]   // heads of 24: the scalar path
    public void AnF16CacheStaysCloseToF32AndSaturatesKeysBeyondItsRange(string layout)
    {
        using var model = RandomModel(Layout(layout));
        using (var f32 = CpuModel.From(model)) Assert.Equal(KvFormat.F32, f32.KvFormat);   // the reference's arithmetic
        using (var half = CpuModel.From(model, WeightFormat.F16)) Assert.Equal(KvFormat.F16, half.KvFormat);
        int[] tokens = Prompt(40, 3);
        float[] Logits(KvFormat kv)
        {
            using var engine = CpuModel.From(model, kvFormat: kv);
            var cache = engine.CreateCache(1);
            Assert.Equal(kv, cache.Format);
            var logits = new float[Vocab];
            for (int i = 0; i < tokens.Length; i++) engine.Forward(cache, 1, [tokens[i]], [0], [i], [0], logits);
            return logits;
        }
        AssertClose(Logits(KvFormat.F32), Logits(KvFormat.F16), $"{layout} F16 cache", 0.01);
        // Keys of ~10^6, beyond F16's ±65504, are stored as ±65504: attention stays finite (∞ − ∞ would be NaN).
        var config = model.Config;
        using (no_grad()) model.state_dict()["h.0.attn.c_attn.weight"].narrow(0, config.Heads * config.HeadDim, config.KvHeads * config.HeadDim).mul_(1e6);
        Assert.All(Logits(KvFormat.F16), v => Assert.True(float.IsFinite(v), $"{layout}: {v}"));
    }

    [Fact]
    public void AQ8CacheStaysCloseToF32InAboutHalfOfF16sMemoryAndRefusesHeadsThatAreNotWholeBlocks()
    {
        using var model = RandomModel(Layout("qwen3"));   // heads of 32, two query heads per key head
        int[] tokens = Prompt(60, 4);
        float[] Logits(KvFormat kv, bool oneByOne)
        {
            using var engine = CpuModel.From(model, kvFormat: kv);
            var cache = engine.CreateCache(1);
            var logits = new float[Vocab];
            if (oneByOne) for (int i = 0; i < tokens.Length; i++) engine.Forward(cache, 1, [tokens[i]], [0], [i], [0], logits);
            else engine.Forward(cache, tokens.Length, tokens, new int[tokens.Length], [.. Enumerable.Range(0, tokens.Length)], [tokens.Length - 1], logits);
            return logits;
        }
        var reference = Logits(KvFormat.F32, oneByOne: true);
        AssertClose(reference, Logits(KvFormat.Q8_0, oneByOne: true), "Q8_0 cache, token by token", 0.03);
        AssertClose(reference, Logits(KvFormat.Q8_0, oneByOne: false), "Q8_0 cache, one prefill", 0.03);
        var config = model.Config;
        long f16 = new CpuKvCache(config, 1, format: KvFormat.F16).BytesPerToken, q8 = new CpuKvCache(config, 1, format: KvFormat.Q8_0).BytesPerToken;
        Assert.Equal(f16 * 34, q8 * 64);   // 34 bytes per 32 values against 64

        using var narrow = RandomModel(Layout("gpt2"));   // heads of 16
        Assert.Contains("head size is 16", Assert.Throws<ArgumentException>(() => new CpuKvCache(narrow.Config, 1, format: KvFormat.Q8_0)).Message);
        Assert.Contains("head size is 16", Assert.Throws<ArgumentException>(() => TokenDecoder.Create(narrow, "cpu", KvFormat.Q8_0)).Message);
        Assert.Contains("--kv must be one of", DecodeEngine.KvProblem("q4", "cpu"));
        Assert.Contains("--engine torch", DecodeEngine.KvProblem("q8_0", "torch"));
    }

    [Fact]
    public void Q8BlocksQuantizeAsLlamaCppLaysThemOut()
    {
        var x = new float[64];   // the second block all zeros
        (x[0], x[1], x[2], x[3], x[4], x[5]) = (254f, -127f, 1.5f, 1f, -1f, 0.9f);
        var values = new sbyte[64];
        var scales = new ushort[2];
        CpuKvCache.Quantize(x, values, scales);
        Assert.Equal(2f, (float)BitConverter.UInt16BitsToHalf(scales[0]));   // max |x| / 127
        Assert.Equal([127, -64, 1, 1, -1, 0], values[..6]);              // −63.5 and 0.5 round away from zero, 0.45 to 0
        Assert.Equal(0, scales[1]);
        Assert.All(values[32..], v => Assert.Equal(0, v));
    }

    [Fact]
    public void KeysAndValuesRoundToHalfAsTheHardwareDoesSaturatingInsteadOfOverflowing()
    {
        // Vector lanes (the first 32) and the scalar tail (the rest) alike: normal values equal .NET's F16 rounding.
        var random = new Random(6);
        float[] ordinary = [.. Enumerable.Range(0, 1000).Select(i => (float)((1 + random.NextDouble()) * Math.Pow(2, random.Next(-14, 15)) * (i % 2 == 0 ? 1 : -1)))];   // F16's normal range
        var bits = new ushort[ordinary.Length];
        CpuKvCache.RoundToHalf(ordinary, bits);
        for (int i = 0; i < ordinary.Length; i++) Assert.Equal(BitConverter.HalfToUInt16Bits((Half)ordinary[i]), bits[i]);
        float[] edges = [65504f, 65519f, 65520f, 1e6f, float.NegativeInfinity, 6.103515625e-5f, 1e-6f, -3e-7f, 0f, float.NaN];
        ushort[] expected = [0x7BFF, 0x7BFF, 0x7BFF, 0x7BFF, 0xFBFF, 0x0400, 0, 0x8000, 0, 0x7E00];
        foreach (int offset in new[] { 0, 16 })   // in a vector and in the tail
        {
            var input = new float[32];
            edges.CopyTo(input, offset == 0 ? 0 : 22);
            var output = new ushort[32];
            CpuKvCache.RoundToHalf(input, output);
            for (int i = 0; i < edges.Length; i++)
            {
                ushort got = output[(offset == 0 ? 0 : 22) + i];
                if (float.IsNaN(edges[i])) Assert.True((got & 0x7C00) == 0x7C00 && (got & 0x3FF) != 0, $"NaN → {got:X4}");
                else Assert.True((got & 0x7FFF) == (expected[i] & 0x7FFF) && (edges[i] == 0 || got == expected[i]), $"{edges[i]} → {got:X4}, expected {expected[i]:X4}");
            }
        }
    }

    [Fact]
    public void ShapesAFormatCannotHoldAreRefusedByName()
    {
        using var model = RandomModel(GptConfig.Gpt2(Vocab, 32, layers: 1, heads: 2, width: 48));   // rows of 48: not blocks of 32
        var e = Assert.Throws<NotSupportedException>(() => CpuModel.From(model, WeightFormat.Q8_0));
        Assert.Contains("wte.weight", e.Message);
        Assert.Contains("48", e.Message);
        Assert.Contains("Q4_0", Assert.Throws<NotSupportedException>(() => CpuModel.From(model, WeightFormat.Q4_0)).Message);
        // A layer's matrix (packed on the thread pool) is refused the same way: MLP rows of 344, as tiny-llama's.
        using var llama = RandomModel(GptConfig.Llama(Vocab, 32, layers: 2, heads: 2, kvHeads: 1, width: 64) with { MlpWidth = 344 });
        Assert.Contains("mlp.down_proj.weight: Q8_0 needs rows whose length divides into blocks of 32; this one has 344",
            Assert.Throws<NotSupportedException>(() => CpuModel.From(llama, WeightFormat.Q8_0)).Message);
    }

    [Fact]
    public void Q4BlocksFollowLlamaCppsRounding()
    {
        // One block of −16, −15, …, 15: the value of largest magnitude is −16, so the scale is −16 ÷ −8 = 2 and each
        // weight w becomes min(15, ⌊w/2 + 8.5⌋); byte j holds value j (low nibble) and value j + 16 (high nibble).
        float[] values = [.. Enumerable.Range(0, 32).Select(k => (float)(k - 16))];
        var (quants, scales) = BlockQuantization.Q4_0(values);
        Assert.Equal([2f], scales);
        Assert.Equal(16, quants.Length);
        Assert.Equal(0x80, quants[0]);    // −16 → 0, 0 → 8
        Assert.Equal(0x91, quants[1]);    // −15 → ⌊1.0⌋ = 1, 1 → ⌊9.0⌋ = 9
        Assert.Equal(0xF8, quants[15]);   // −1 → 8, 15 → 16, clamped to 15
        // Read back through the engine's matrix: (q − 8) × scale, rows and the interleaved quads alike.
        float[] matrix = [.. Enumerable.Repeat(values, 5).SelectMany(v => v)];
        var packed = WeightMatrix.Pack(matrix, 5, 32, WeightFormat.Q4_0, "test");
        var row = new float[32];
        foreach (int r in new[] { 0, 3, 4 })
        {
            packed.ReadRow(r, row);
            Assert.Equal(-16f, row[0]);
            Assert.Equal(-14f, row[1]);   // q 1
            Assert.Equal(14f, row[31]);   // q 15, the clamp
        }
        // A product is the integer dot product of the weights' nibbles and the activations rounded to 8 bits of their
        // block's largest (llama.cpp's), scaled: the same in the quads and the row alone, and that value exactly.
        float[] x = [.. Enumerable.Range(0, 32).Select(k => (float)Math.Sin(k))];
        var y = new float[5];
        packed.Multiply(x, 1, y, 0, 5);
        packed.ReadRow(0, row);
        float max = x.Max(Math.Abs);
        int dot = Enumerable.Range(0, 32).Sum(k => (int)(row[k] / 2) * (int)MathF.Round(x[k] * (127 / max)));
        float expected = dot * (2 * (max / 127));
        Assert.All(y, v => Assert.Equal(expected, v, 4));
        float exact = row.Zip(x, (a, b) => a * b).Sum();
        Assert.True(Math.Abs(expected - exact) < row.Sum(Math.Abs) * max / 254, $"{expected} vs {exact}");
    }

    [Theory]
    [InlineData(WeightFormat.F16)]
    [InlineData(WeightFormat.Q8_0)]
    [InlineData(WeightFormat.Q4_0)]
    public void ProductsEqualTheReadBackWeightsDotTheActivationsWithinTheirRounding(WeightFormat format)
    {
        // 9 rows (two quads and a row alone) of 96; activations of ordinary size, of 3e5 (which F16's 2^112 rebasing
        // would overflow unless the vector is scaled down), with a spike 1000× the rest, all zero, and one NaN.
        var random = new Random(4);
        const int rows = 9, cols = 96;
        float[] weights = [.. Enumerable.Range(0, rows * cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        float[][] vectors =
        [
            [.. Enumerable.Range(0, cols).Select(_ => (float)(random.NextDouble() * 2 - 1))],
            [.. Enumerable.Range(0, cols).Select(k => k == 5 ? 3e5f : (float)random.NextDouble())],
            [.. Enumerable.Range(0, cols).Select(k => k == 7 ? 1000f : (float)(random.NextDouble() - 0.5))],
            new float[cols],
            [.. Enumerable.Range(0, cols).Select(k => k == 50 ? float.NaN : 1f)],
        ];
        var matrix = WeightMatrix.Pack(weights, rows, cols, format, "test");
        var y = new float[vectors.Length * rows];
        matrix.Multiply([.. vectors.SelectMany(v => v)], vectors.Length, y, 0, rows);
        var row = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            matrix.ReadRow(r, row);
            for (int i = 0; i < vectors.Length; i++)
            {
                var x = vectors[i];
                float got = y[i * rows + r];
                if (i == 4) { Assert.True(float.IsNaN(got), $"{format} row {r}: NaN in, {got} out"); continue; }
                double exact = 0, magnitude = 0;
                for (int k = 0; k < cols; k++) (exact, magnitude) = (exact + (double)row[k] * x[k], magnitude + Math.Abs((double)row[k] * x[k]));
                // F16 products are F32 arithmetic; Q8_0 rounds each activation to 16 bits of its vector's largest, Q4_0
                // to 8 bits of its block's (as llama.cpp does): half a step, max|x| / 254, per activation.
                double rounding = format switch
                {
                    WeightFormat.F16 => 0,
                    WeightFormat.Q8_0 => row.Sum(Math.Abs) * x.Max(Math.Abs) / 65534,
                    _ => Enumerable.Range(0, cols / 32).Sum(b => row.Skip(b * 32).Take(32).Sum(Math.Abs) * x.Skip(b * 32).Take(32).Max(Math.Abs) / 254),
                };
                double bound = 1e-6 * magnitude + rounding;
                Assert.True(Math.Abs(got - exact) <= bound, $"{format} row {r} vector {i}: {got} vs {exact} (bound {bound:G3})");
            }
        }
    }
}

/// <summary>RL rollouts on the CPU engine: the policy's weights are packed afresh for each rollout.</summary>
public class CpuEngineRolloutTests
{
    [Fact]
    public void RolloutsSampleWhatLibtorchSamplesAfterEveryUpdateOfALoraPolicy()
    {
        var tokenizer = Tokenization.GptTokenizer.Load("gpt2");
        using var policy = CpuEngineTests.RandomModel(GptConfig.Llama(tokenizer.VocabSize, 96, layers: 2, heads: 4, kvHeads: 2, width: 64));
        Lora.Attach(policy, new LoraConfig(Rank: 4));
        string[] prompts = ["The night is", "A poem about the moon", "Spring"];
        int[][] Answers(string engine)
        {
            using var rollout = Alignment.Rollout.Sample(policy, tokenizer, prompts, temperature: 0.8, maxNewTokens: 20, seed: 9, engine: engine);
            return [.. rollout.Completions.Select(c => c.AnswerTokens)];
        }
        var before = Answers("cpu");
        Assert.Equal(Answers("torch"), before);
        // An optimiser step, as RL takes between rollouts: the adapters move.
        using (no_grad())
            foreach (var (name, p) in policy.named_parameters())
                if (name.Contains("lora")) p.normal_(0, 0.5);
        var after = Answers("cpu");
        Assert.Equal(Answers("torch"), after);
        Assert.NotEqual(before, after);
    }
}

/// <summary><c>generate --engine</c> as a user runs it.</summary>
public class CpuEngineCliTests
{
    [Fact]
    public void GenerateWritesTheSameGreedyTextOnEitherEngineAndRefusesAnUnknownOne()
    {
        using var dir = new TempDirectory();
        var tokenizer = Tokenization.GptTokenizer.Load("gpt2");
        using (var model = CpuEngineTests.RandomModel(GptConfig.Gpt2(tokenizer.VocabSize, 64, layers: 1, heads: 2, width: 64)))
            Runs.Checkpoint.Save(dir.File("run"), model, null, new Runs.TrainingState(0, "0:0", "", "gpt2"));
        string Generate(string engine)
        {
            var (code, output) = CliProcess.Cli("generate", "--run-dir", dir.File("run"), "--prompt", "The night is", "--temperature", "0", "--max-tokens", "24", "--engine", engine, "--quiet");
            Assert.True(code == 0, output);
            return output;
        }
        string torchText = Generate("torch");
        Assert.Equal(torchText, Generate("cpu"));
        Assert.Equal(torchText, Generate("auto"));
        Assert.StartsWith("The night is", Generate("cpu-q8_0"));
        // Without --quiet the report names the tokens, the wait for the first and the rate after it, as llama.cpp's does.
        var (reported, report) = CliProcess.Cli("generate", "--run-dir", dir.File("run"), "--prompt", "The night is", "--temperature", "0", "--max-tokens", "24", "--engine", "cpu");
        Assert.True(reported == 0, report);
        Assert.Matches(@"\[24 tokens, finished: Length; first token after \d+ ms, then [\d.]+ tok/s\]", report);
        var (bad, message) = CliProcess.Cli("generate", "--run-dir", dir.File("run"), "--engine", "gpu-turbo");
        Assert.NotEqual(0, bad);
        Assert.Contains("cpu-q8_0", message);
        // RL's rollouts: refused before anything loads, naming the option.
        var (badRollout, rolloutMessage) = CliProcess.Cli("grpo", "--from", dir.File("run"), "--run-dir", dir.File("grpo"), "--rollout-engine", "gpu-turbo");
        Assert.NotEqual(0, badRollout);
        Assert.Contains("--rollout-engine must be one of", rolloutMessage);
        Assert.False(Directory.Exists(dir.File("grpo")));
    }
}
