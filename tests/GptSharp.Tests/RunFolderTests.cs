using System.IO.Compression;
using System.Text.Json;
using GptSharp.Alignment;
using GptSharp.Data;
using GptSharp.Inference;
using GptSharp.Interop;
using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Serving;
using GptSharp.Tokenization;
using GptSharp.Training;

namespace GptSharp.Tests;

/// <summary>A run folder stands alone: zipped and unzipped elsewhere, with the tokenizer it was trained from gone, it loads,
/// generates, serves, exports, resumes and starts the next stage; older folders with absolute paths still load.</summary>
public class RunFolderTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    [Fact]
    public void AMovedRunFolderLoadsGeneratesServesExportsAndResumes()
    {
        using var dir = new TempDirectory();
        // A tokenizer folder of its own, deleted once the run has trained.
        Directory.CreateDirectory(dir.File("tok"));
        foreach (string file in Directory.GetFiles(fixture.Directory)) File.Copy(file, Path.Combine(dir.File("tok"), Path.GetFileName(file)));
        var tokenizer = GptTokenizer.Load(dir.File("tok"));
        ShardBuilder.Build(tokenizer, dir.File("tok"), new ShardOptions(["tang"], MaxDocuments: 200), dir.File("data"));
        var config = GptConfig.Gpt2(tokenizer.VocabSize, context: 32, layers: 1, heads: 2, width: 32);
        var training = new TrainingConfig { Steps = 4, BatchSize = 4, WarmupSteps = 1, EvalEvery = 2, EvalBatches = 1, CheckpointEvery = 2 };
        PretrainRun.Execute(config, training, dir.File("data"), new RunOptions(dir.File("runs/base")) { Resume = false });
        var (original, _) = Checkpoint.LoadModel(dir.File("runs/base"));
        int[] prompt = [tokenizer.BosId, .. tokenizer.Encode("床前明月光")];
        var greedy = new SamplingOptions(Temperature: 0, MaxNewTokens: 8);
        int[] expected;
        using (original) expected = new TokenDecoder(original).Generate(prompt, greedy).Tokens;

        // Zip, delete the original and the tokenizer it came from, unzip under another name.
        ZipFile.CreateFromDirectory(dir.File("runs/base"), dir.File("base.zip"));
        Directory.Delete(dir.File("runs"), recursive: true);
        Directory.Delete(dir.File("tok"), recursive: true);
        ZipFile.ExtractToDirectory(dir.File("base.zip"), dir.File("elsewhere/renamed"));
        string moved = dir.File("elsewhere/renamed");
        Assert.DoesNotContain(dir.Path, File.ReadAllText(Path.Combine(moved, "config.json")));
        Assert.DoesNotContain(dir.Path, File.ReadAllText(Path.Combine(moved, Checkpoint.Folder, "state.json")));

        var (model, state) = Checkpoint.LoadModel(moved);
        using (model)
        {
            var loaded = GptTokenizer.Load(state.Tokenizer);
            Assert.Equal(tokenizer.Encode("白日依山盡"), loaded.Encode("白日依山盡"));
            Assert.Equal(expected, new TokenDecoder(model).Generate(prompt, greedy).Tokens);
        }
        using (var served = ServedModel.Load(moved)) Assert.Equal(expected, served.Decoder.Generate(prompt, greedy).Tokens);
        Gguf.Export(moved, dir.File("export/model.gguf"));
        Assert.True(new FileInfo(dir.File("export/model.gguf")).Length > 0);

        // Resume to the end of a longer schedule, then fine-tune from the moved run: the next run names it relatively.
        var resumed = PretrainRun.Execute(config, training with { Steps = 6 }, dir.File("data"), new RunOptions(moved) { Resume = true });
        Assert.Equal(2, resumed.StepsDone);
        Assert.Equal(6, Checkpoint.ReadState(moved).Step);
        var data = BuiltInDatasets.Build();
        SftRun.Execute(moved, data.TrainChats.Take(40).ToList(), data.HeldOutChats.Take(8).ToList(), new TrainingConfig { Steps = 2, BatchSize = 4, WarmupSteps = 0, EvalEvery = 2, EvalBatches = 1 }, new RunOptions(dir.File("elsewhere/sft")) { Resume = false });
        var sftConfig = JsonDocument.Parse(File.ReadAllText(dir.File("elsewhere/sft/config.json"))).RootElement;
        Assert.Equal("../renamed", sftConfig.GetProperty("from").GetString());
        Assert.Equal(RunFolder.TokenizerFolder, sftConfig.GetProperty("tokenizer").GetString());
    }

    [Fact]
    public void AnOlderFolderWithAnAbsoluteTokenizerPathStillLoads()
    {
        using var dir = new TempDirectory();
        fixture.SaveInitialRun(dir.File("old"), context: 16);   // state.json names the tokenizer by its absolute path
        Assert.Contains(fixture.Directory.Replace("\\", "\\\\"), File.ReadAllText(Path.Combine(dir.File("old"), Checkpoint.Folder, "state.json")));
        var (model, state) = Checkpoint.LoadModel(dir.File("old"));
        using (model) Assert.Equal(fixture.Directory, state.Tokenizer);
        Assert.Equal(fixture.Tokenizer.VocabSize, GptTokenizer.Load(state.Tokenizer).VocabSize);
    }
}
