using GptSharp.Runs;
using GptSharp.Runtime;
using System.Text.Json;
using GptSharp.Interop;
using GptSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

public class HuggingFaceTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    string SaveRun(TempDirectory dir, GptConfig config, string name)
    {
        torch.manual_seed(7);
        using var model = new Gpt(config);
        // Nudge every parameter away from its initial value (zero biases, unit norms) so the round trip is a real test.
        using (no_grad()) foreach (var p in model.parameters()) p.add_(randn_like(p) * 0.01);
        Checkpoint.Save(dir.File(name), model, null, new TrainingState(0, "0:0", "", fixture.Directory));
        return dir.File(name);
    }

    public static TheoryData<bool> Layouts => new() { false, true };

    [Theory]
    [MemberData(nameof(Layouts))]
    public void ExportThenImportRoundTripsEveryTensorAndTheLogits(bool llama)
    {
        using var dir = new TempDirectory();
        int v = fixture.Tokenizer.VocabSize;
        var config = llama ? GptConfig.Llama(v, 32, layers: 2, heads: 4, kvHeads: 2, width: 32) : GptConfig.Gpt2(v, 32, layers: 2, heads: 4, width: 32);
        string run = SaveRun(dir, config, "run");
        HuggingFace.Export(run, dir.File("hf"));

        // The folder a transformers user expects.
        using var configJson = JsonDocument.Parse(File.ReadAllText(dir.File("hf/config.json")));
        var root = configJson.RootElement;
        var (tensors, metadata) = SafeTensors.Load(dir.File("hf/model.safetensors"));
        Assert.Equal("pt", metadata["format"]);
        if (llama)
        {
            Assert.Equal("LlamaForCausalLM", root.GetProperty("architectures")[0].GetString());
            Assert.Equal(32, root.GetProperty("hidden_size").GetInt32());
            Assert.Equal(2, root.GetProperty("num_key_value_heads").GetInt32());
            Assert.Equal(config.MlpHidden, root.GetProperty("intermediate_size").GetInt32());
            Assert.Equal([16L, 32L], tensors["model.layers.0.self_attn.k_proj.weight"].shape); // 2 kv heads × 8
            Assert.Equal([v, 32L], tensors["lm_head.weight"].shape);
        }
        else
        {
            Assert.Equal("GPT2LMHeadModel", root.GetProperty("architectures")[0].GetString());
            Assert.Equal(32, root.GetProperty("n_embd").GetInt32());
            Assert.Equal("gelu_new", root.GetProperty("activation_function").GetString());
            Assert.Equal([32L, 96L], tensors["transformer.h.0.attn.c_attn.weight"].shape); // Conv1D: [in, out]
            Assert.Equal([128L, 32L], tensors["transformer.h.1.mlp.c_proj.weight"].shape);
            Assert.DoesNotContain("lm_head.weight", tensors.Keys); // tied
        }
        Assert.All(tensors.Values, t => Assert.Equal(ScalarType.Float32, t.dtype));
        Assert.True(File.Exists(dir.File("hf/generation_config.json")));
        foreach (var t in tensors.Values) t.Dispose();

        var (imported, added) = HuggingFace.Import(dir.File("hf"), dir.File("back"));
        Assert.Equal(0, added);
        Assert.Equal(config.MlpHidden, imported.MlpHidden); // the ratio may be written differently for the same width
        Assert.Equal(config with { MlpRatio = imported.MlpRatio, MlpWidth = imported.MlpWidth }, imported);
        var (a, _) = Checkpoint.LoadModel(run);
        var (b, state) = Checkpoint.LoadModel(dir.File("back"));
        using (a) using (b)
        {
            var bWeights = b.state_dict();
            foreach (var (name, tensor) in a.state_dict()) Assert.True(tensor.eq(bWeights[name]).all().item<bool>(), $"{name} changed in the round trip");
            a.eval(); b.eval();
            using var noGrad = no_grad();
            var tokens = tensor(new long[] { 1, 5, 9, 200, 31 }).unsqueeze(0);
            Assert.True(a.forward(tokens).eq(b.forward(tokens)).all().item<bool>());
            Assert.Equal(fixture.Tokenizer.Encode("床前明月光"), GptSharp.Tokenization.GptTokenizer.Load(state.Tokenizer).Encode("床前明月光"));
        }
    }

    [Fact]
    public void BadFoldersNameTheTensorOrField()
    {
        using var dir = new TempDirectory();
        int v = fixture.Tokenizer.VocabSize;
        string run = SaveRun(dir, GptConfig.Gpt2(v, 32, layers: 1, heads: 2, width: 16), "run");
        HuggingFace.Export(run, dir.File("hf"));
        string weights = dir.File("hf/model.safetensors");

        var (tensors, _) = SafeTensors.Load(weights);
        var missing = tensors.Where(kv => kv.Key != "transformer.h.0.ln_2.bias").ToDictionary();
        SafeTensors.Save(weights, missing);
        Assert.Contains("'transformer.h.0.ln_2.bias' is missing", Assert.Throws<InvalidDataException>(() => HuggingFace.Import(dir.File("hf"), dir.File("x1"))).Message);

        var wrong = tensors.ToDictionary(kv => kv.Key, kv => kv.Key == "transformer.wpe.weight" ? zeros(16, 16) : kv.Value);
        SafeTensors.Save(weights, wrong);
        var shape = Assert.Throws<InvalidDataException>(() => HuggingFace.Import(dir.File("hf"), dir.File("x2")));
        Assert.Contains("'transformer.wpe.weight'", shape.Message);
        Assert.Contains("[16, 16]", shape.Message);

        string config = File.ReadAllText(dir.File("hf/config.json"));
        File.WriteAllText(dir.File("hf/config.json"), config.Replace("\"gpt2\"", "\"bert\""));
        Assert.Contains("model_type 'bert'", Assert.Throws<NotSupportedException>(() => HuggingFace.Import(dir.File("hf"), dir.File("x3"))).Message);
        File.WriteAllText(dir.File("hf/config.json"), config.Replace("\"n_embd\"", "\"width\""));
        Assert.Contains("'n_embd'", Assert.Throws<InvalidDataException>(() => HuggingFace.Import(dir.File("hf"), dir.File("x4"))).Message);

        File.WriteAllText(dir.File("hf/config.json"), config);
        Directory.Delete(dir.File($"hf/{HuggingFace.TokenizerFolder}"), recursive: true);
        File.Delete(dir.File("hf/tokenizer.json"));
        Assert.Contains("pass --tokenizer", Assert.Throws<FileNotFoundException>(() => HuggingFace.Import(dir.File("hf"), dir.File("x5"))).Message);

        Assert.Contains("ParallelBlock", Assert.Throws<NotSupportedException>(() =>
            HuggingFace.Architecture(GptConfig.Llama(v, 32, 1, 2, 2, 16) with { ParallelBlock = true })).Message);
    }

    [Theory]
    [MemberData(nameof(GgufTests.OpenLayouts), MemberType = typeof(GgufTests))]
    public void OpenModelLayoutsRoundTripAndLoadFromBf16Shards(string layout)
    {
        using var dir = new TempDirectory();
        var config = GgufTests.OpenLayout(layout, fixture.Tokenizer.VocabSize);
        string run = SaveRun(dir, config, "run");
        HuggingFace.Export(run, dir.File("hf"));
        using (var json = JsonDocument.Parse(File.ReadAllText(dir.File("hf/config.json"))))
            Assert.Equal(layout is "qwen2" or "qwen3" ? layout : "llama", json.RootElement.GetProperty("model_type").GetString());
        var (imported, _) = HuggingFace.Import(dir.File("hf"), dir.File("back"));
        Assert.Equal(config with { MlpRatio = imported.MlpRatio, MlpWidth = imported.MlpWidth }, imported);
        Assert.Equal(config.MlpHidden, imported.MlpHidden);

        // The same weights as two shards with an index, once in F32 and once in BF16.
        var (tensors, _) = SafeTensors.Load(dir.File("hf/model.safetensors"));
        var names = tensors.Keys.Order().ToList();
        foreach (var (folder, type) in new[] { ("sharded", ScalarType.Float32), ("bf16", ScalarType.BFloat16) })
        {
            Directory.CreateDirectory(dir.File(folder));
            foreach (string file in new[] { "config.json", "generation_config.json" }) File.Copy(dir.File($"hf/{file}"), dir.File($"{folder}/{file}"));
            var map = new Dictionary<string, string>();
            for (int shard = 0; shard < 2; shard++)
            {
                string file = $"model-0000{shard + 1}-of-00002.safetensors";
                var part = names.Where((_, i) => i % 2 == shard).ToDictionary(n => n, n => tensors[n].to(type));
                SafeTensors.Save(dir.File($"{folder}/{file}"), part);
                foreach (string n in part.Keys) map[n] = file;
            }
            File.WriteAllText(dir.File($"{folder}/model.safetensors.index.json"), JsonSerializer.Serialize(new { metadata = new { total_size = 0 }, weight_map = map }));
            HuggingFace.Import(dir.File(folder), dir.File($"{folder}-run"), tokenizer: fixture.Directory);
        }
        foreach (var t in tensors.Values) t.Dispose();

        var (single, _) = Checkpoint.LoadModel(dir.File("back"));
        var (sharded, _) = Checkpoint.LoadModel(dir.File("sharded-run"));
        var (bf16, _) = Checkpoint.LoadModel(dir.File("bf16-run"));
        using (single) using (sharded) using (bf16)
        {
            var s1 = sharded.state_dict();
            var s2 = bf16.state_dict();
            foreach (var (name, tensor) in single.state_dict())
            {
                Assert.True(tensor.eq(s1[name]).all().item<bool>(), $"{layout}: {name} differs between one file and two shards");
                Assert.True(tensor.to(ScalarType.BFloat16).to(ScalarType.Float32).eq(s2[name]).all().item<bool>(), $"{layout}: {name} is not the BF16 rounding of the F32 weights");
            }
        }
    }

    [Fact]
    public void OpenModelFoldersThatCannotLoadNameWhy()
    {
        using var dir = new TempDirectory();
        string run = SaveRun(dir, GgufTests.OpenLayout("qwen2", fixture.Tokenizer.VocabSize), "run");
        HuggingFace.Export(run, dir.File("hf"));
        string configPath = dir.File("hf/config.json");
        string config = File.ReadAllText(configPath);
        void Refused<T>(string changedConfig, string expected) where T : Exception
        {
            File.WriteAllText(configPath, changedConfig);
            string message = Assert.Throws<T>(() => HuggingFace.Import(dir.File("hf"), dir.File("x"))).Message;
            Assert.True(message.Contains(expected), message);
            File.WriteAllText(configPath, config);
        }
        Refused<NotSupportedException>(config.Replace("\"qwen2\"", "\"mistral\""), "model_type 'mistral'");
        Refused<NotSupportedException>(config.Replace("\"use_sliding_window\": false", "\"use_sliding_window\": true"), "use_sliding_window");
        Refused<NotSupportedException>(config.Replace("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\""), "hidden_act 'gelu'");
        Refused<NotSupportedException>(config.Replace("\"rope_theta\"", "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}, \"rope_theta\""), "rope_scaling type 'yarn'");
        Refused<InvalidDataException>(config.Replace("\"head_dim\": 16", "\"head_dim\": 20"), "has shape [32], expected [40] from config.json");

        // A wrong dtype and a missing shard.
        var (tensors, _) = SafeTensors.Load(dir.File("hf/model.safetensors"));
        var asInts = tensors.ToDictionary(kv => kv.Key, kv => kv.Key == "model.norm.weight" ? kv.Value.to(ScalarType.Int32) : kv.Value);
        SafeTensors.Save(dir.File("hf/model.safetensors"), asInts);
        Assert.Contains("'model.norm.weight' is Int32", Assert.Throws<InvalidDataException>(() => HuggingFace.Import(dir.File("hf"), dir.File("x"))).Message);
        File.Delete(dir.File("hf/model.safetensors"));
        File.WriteAllText(dir.File("hf/model.safetensors.index.json"), JsonSerializer.Serialize(new { weight_map = tensors.Keys.ToDictionary(k => k, _ => "model-00001-of-00002.safetensors") }));
        Assert.Contains("shard 'model-00001-of-00002.safetensors'", Assert.Throws<FileNotFoundException>(() => HuggingFace.Import(dir.File("hf"), dir.File("x"))).Message);
        foreach (var t in tensors.Values) t.Dispose();
    }

    /// <summary>Held-out-looking text from every embedded corpus, plus scripts and symbols the corpora lack.</summary>
    internal static List<string> Samples() =>
    [
        .. GptSharp.Data.Corpus.EmbeddedNames.SelectMany(name => GptSharp.Data.Corpus.Read(name).Skip(5000).Take(60)).Select(d => d.Text),
        "emoji 😀👍🏽 and 🇨🇳 flags, ZWJ 👩‍👩‍👧", "mixed 中文 English 日本語のかな 한국어 Ελληνικά русский",
        "numbers 1234567 3.14159 and  double  spaces\n\n\ttabs, don't WE'LL", "　全角　空格，「引號」……",
    ];

    [Theory]
    [MemberData(nameof(TrainedTokenizerFixture.ExchangeTokenizers), MemberType = typeof(TrainedTokenizerFixture))]
    public void HuggingFaceTokenizersReadsTheExportedTokenizerJsonAndEncodesAlike(string which)
    {
        using var dir = new TempDirectory();
        var (tokenizer, _) = fixture.Named(which);
        HuggingFaceTokenizer.Save(tokenizer, dir.File("hf"), contextLength: 256);

        // The Rust tokenizers library that transformers' AutoTokenizer uses.
        using var theirs = new global::Tokenizers.DotNet.Tokenizer(dir.File("hf/tokenizer.json"));
        foreach (string text in Samples())
        {
            int[] ours = tokenizer.Encode(text);
            int[] encoded = [.. theirs.Encode(text).Select(id => (int)id)];
            Assert.True(ours.SequenceEqual(encoded), $"{which}: '{text[..Math.Min(40, text.Length)]}' encodes differently");
            Assert.Equal(text, theirs.Decode([.. ours.Select(id => (uint)id)]));
        }
        // Special tokens are added tokens there: a chat template's markers become single ids.
        Assert.Equal([(uint)tokenizer.EndId], theirs.Encode("<|end|>"));

        using var config = JsonDocument.Parse(File.ReadAllText(dir.File("hf/tokenizer_config.json")));
        Assert.Equal("<|bos|>", config.RootElement.GetProperty("bos_token").GetString());
        Assert.Equal(256, config.RootElement.GetProperty("model_max_length").GetInt32());
    }

    [Fact]
    public void ThePortablePatternSplitsLikeTheDotNetOne()
    {
        var dotnet = GptSharp.Tokenization.PreTokenizerPatterns.Compile(GptSharp.Tokenization.PreTokenizerPatterns.Gpt4Cjk);
        var portable = GptSharp.Tokenization.PreTokenizerPatterns.Compile(GptSharp.Tokenization.PreTokenizerPatterns.Portable(GptSharp.Tokenization.PreTokenizerPatterns.Gpt4Cjk));
        Assert.DoesNotContain(@"\p{Is", GptSharp.Tokenization.PreTokenizerPatterns.Gpt4CjkPortable);
        foreach (string text in Samples())
            Assert.Equal(dotnet.Matches(text).Select(m => m.Value), portable.Matches(text).Select(m => m.Value));

        var e = Assert.Throws<NotSupportedException>(() => GptSharp.Tokenization.PreTokenizerPatterns.Portable(@"[\p{L}-[\p{IsGreek}]]+|\s+"));
        Assert.Contains("rewrite it with explicit ranges", e.Message);
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void ImportingAModelWithFewerIdsThanItsTokenizerGrowsTheEmbeddingAndKeepsTheOldLogits(bool llama)
    {
        // A model as published with GPT-2's own 50,257 ids; GptSharp's gpt2 tokenizer adds its chat tokens after them.
        using var dir = new TempDirectory();
        var config = llama ? GptConfig.Llama(50257, 16, layers: 1, heads: 2, kvHeads: 1, width: 16) : GptConfig.Gpt2(50257, 16, layers: 1, heads: 2, width: 16);
        torch.manual_seed(5);
        using (var original = new Gpt(config))
            Checkpoint.Save(dir.File("run"), original, null, new TrainingState(0, "0:0", "", "gpt2"));
        HuggingFace.Export(dir.File("run"), dir.File("hf"));
        Directory.Delete(dir.File($"hf/{HuggingFace.TokenizerFolder}"), recursive: true);

        var (imported, added) = HuggingFace.Import(dir.File("hf"), dir.File("back"), tokenizer: "gpt2");
        var tokenizer = GptSharp.Tokenization.GptTokenizer.Load("gpt2");
        Assert.Equal(tokenizer.VocabSize - 50257, added);
        Assert.Equal(tokenizer.VocabSize, imported.VocabSize);
        Assert.Equal("gpt2", Checkpoint.ReadState(dir.File("back")).Tokenizer); // a built-in name stays a name

        var (a, _) = Checkpoint.LoadModel(dir.File("run"));
        var (b, _) = Checkpoint.LoadModel(dir.File("back"));
        using (a) using (b)
        {
            a.eval(); b.eval();
            using var noGrad = no_grad();
            var tokens = tensor(tokenizer.Encode("Hello, world").Select(t => (long)t).ToArray()).unsqueeze(0);
            var before = a.forward(tokens);
            var after = b.forward(tokens);
            Assert.True(after.narrow(-1, 0, 50257).allclose(before, rtol: 0, atol: 1e-6), "logits of the existing ids changed");
            var wte = b.state_dict()["wte.weight"];
            var mean = a.state_dict()["wte.weight"].mean([0]);
            Assert.True(wte[tokenizer.BosId].allclose(mean, rtol: 0, atol: 1e-6));
        }
    }
}
