using GptSharp.Runs;
using GptSharp.Runtime;
using GptSharp.Tokenization;
using System.Text;
using GptSharp.Alignment;
using GptSharp.Models;
using GptSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

/// <summary>Checkpoints and weight files under crashes and hostile bytes.</summary>
public class CheckpointHardeningTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    static readonly GptConfig Tiny = GptConfig.Gpt2(64, 16, layers: 1, heads: 2, width: 16);

    sealed class Crash(string at) : Exception($"simulated crash at {at}");

    static void Save(string run, Gpt model, int step, string? crashAt = null) =>
        Checkpoint.Save(run, model, model.Config, null, new TrainingState(step, "0:0", "", "t"),
            reached: point => { if (point == crashAt) throw new Crash(point); });

    public static TheoryData<string> CrashPoints => new() { "settled", "written", "complete", "moved-aside", "swapped" };

    [Theory]
    [MemberData(nameof(CrashPoints))]
    public void ACrashAnywhereInASaveLeavesTheNewestCompleteCheckpoint(string crashAt)
    {
        using var dir = new TempDirectory();
        torch.manual_seed(0);
        using var model = new Gpt(Tiny);
        Save(dir.Path, model, 5);
        Assert.Throws<Crash>(() => Save(dir.Path, model, 6, crashAt));
        // Before state.json lands the old checkpoint is the newest complete one; from then on the new one is.
        int expected = crashAt is "settled" or "written" ? 5 : 6;
        Assert.Equal(expected, Checkpoint.ReadState(dir.Path).Step);
        Assert.Throws<InvalidOperationException>(() => Checkpoint.StartingPoint(dir.Path, resume: false)); // never overwritten by a fresh run

        // A second crash right after resuming (the two-crash case), then a clean save: nothing is lost on the way.
        Assert.Throws<Crash>(() => Save(dir.Path, model, expected + 1, "moved-aside"));
        Assert.Equal(expected + 1, Checkpoint.ReadState(dir.Path).Step);
        Save(dir.Path, model, expected + 2);
        Assert.Equal(expected + 2, Checkpoint.ReadState(dir.Path).Step);
        Assert.Equal([Checkpoint.Folder], Directory.GetDirectories(dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void EveryLeftoverFolderStateResolvesToTheNewestCompleteOne()
    {
        using var dir = new TempDirectory();
        torch.manual_seed(0);
        using var model = new Gpt(Tiny);
        string Make(string name, int step)
        {
            string run = dir.File($"make-{name}-{step}");
            Save(run, model, step);
            string target = dir.File($"case/{name}");
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            Directory.Move(Path.Combine(run, Checkpoint.Folder), target);
            return target;
        }
        void Case(int? expected, params (string Name, int Step, bool Complete)[] folders)
        {
            if (Directory.Exists(dir.File("case"))) Directory.Delete(dir.File("case"), true);
            foreach (var (name, step, complete) in folders)
            {
                string folder = Make(name, step);
                if (!complete) File.Delete(Path.Combine(folder, "state.json"));
            }
            Assert.Equal(expected, Checkpoint.Find(dir.File("case")) is { } found ? Checkpoint.ReadState(dir.File("case")).Step : null);
        }
        Case(3, ("checkpoint.tmp", 3, true));                                          // only a complete .tmp: still a checkpoint
        Case(3, ("checkpoint.old", 2, true), ("checkpoint.tmp", 3, true));
        Case(2, ("checkpoint", 2, true), ("checkpoint.tmp", 3, false));                // a half-written .tmp is ignored
        Case(3, ("checkpoint", 3, true), ("checkpoint.old", 2, true));
        Case(2, ("checkpoint.old", 2, true));
        Case(3, ("checkpoint", 2, true), ("checkpoint.tmp", 3, true));
        Case(null, ("checkpoint.tmp", 3, false));
    }

    [Fact]
    public void ABadModelJsonOnResumeNamesTheFile()
    {
        using var dir = new TempDirectory();
        torch.manual_seed(0);
        using var model = new Gpt(Tiny);
        Save(dir.Path, model, 1);
        string json = Path.Combine(dir.Path, Checkpoint.Folder, "model.json");
        using var optimizer = new AdamW(model.named_parameters(), new TrainingConfig());
        foreach (string bad in new[] { "{\"Layers\": ", "[1, 2]", "{\"Layers\": \"many\"}", "null" })
        {
            File.WriteAllText(json, bad);
            var error = Assert.Throws<InvalidDataException>(() => Checkpoint.Resume(dir.Path, model, model.Config, optimizer));
            Assert.Contains(json, error.Message);
            Assert.DoesNotContain('\n', error.Message);
        }
        File.WriteAllText(json, """{"VocabSize": 64, "ContextLength": 16, "Layers": -1, "Heads": 2, "Width": 16}""");
        Assert.Contains(json, Assert.Throws<InvalidDataException>(() => Checkpoint.LoadModel(dir.Path)).Message);
    }

    static byte[] File8(string header, int dataBytes = 0)
    {
        byte[] json = Encoding.UTF8.GetBytes(header);
        return [.. BitConverter.GetBytes((long)json.Length), .. json, .. new byte[dataBytes]];
    }

    public static TheoryData<string, string> BadHeaders => new()
    {
        { """{"w":{"dtype":5,"shape":[2],"data_offsets":[0,8]}}""", "tensor 'w' needs a dtype" },
        { """{"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}""", "tensor 'w' needs shape" },
        { """[{"dtype":"F32"}]""", "the header is a JSON array" },
        { """{"__metadata__":[1],"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", "__metadata__ is a JSON array" },
        { """{"__metadata__":{"k":1}}""", "metadata 'k' is a JSON number" },
        { """{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", "'w' appears twice" },
        { """{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", "tensor 'w': shape holds -2" },
        { """{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}""", "tensor 'w' has shape" },
        { """{"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}}""", "data_offsets has 1 numbers" },
        { """{"w":"F32"}""", "tensor 'w' is a JSON string" },
        { """{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}""", "tensor 'w' (F32 2) has byte range" },
    };

    [Theory]
    [MemberData(nameof(BadHeaders))]
    public void SafetensorsHeadersOfTheWrongShapeGiveOneLineNamingFileAndTensor(string header, string expected)
    {
        using var dir = new TempDirectory();
        string path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, File8(header, 8));
        var error = Assert.Throws<InvalidDataException>(() => SafeTensors.Load(path));
        Assert.Contains(path, error.Message);
        Assert.Contains(expected, error.Message);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Fact]
    public void NonFiniteWeightsAreRefusedUnlessAllowed()
    {
        using var dir = new TempDirectory();
        string run = dir.File("nan");
        var config = fixture.SaveInitialRun(run, context: 16);
        using (var scope = NewDisposeScope())
        {
            var (tensors, metadata) = SafeTensors.Load(Checkpoint.WeightsPath(run));
            tensors["h.0.mlp.c_fc.weight"][0, 0] = float.NaN;
            SafeTensors.Save(Checkpoint.WeightsPath(run), tensors, metadata);
        }
        var error = Assert.Throws<InvalidDataException>(() => Checkpoint.LoadModel(run));
        Assert.Contains("h.0.mlp.c_fc.weight", error.Message);
        Assert.Contains("NaN", error.Message);
        var (model, _) = Checkpoint.LoadModel(run, allowNonFinite: true);
        using (model) Assert.Equal(config, model.Config);
    }

    [Fact]
    public void SftSaysWhenNoAssistantTokenFitsAndCountsWhatItDrops()
    {
        using var dir = new TempDirectory();
        fixture.SaveInitialRun(dir.File("base"), context: 16);
        IReadOnlyList<ChatMessage> Chat(string question) => [new ChatMessage("user", question), new ChatMessage("assistant", "李白。")];
        string longQuestion = string.Concat(Enumerable.Repeat("床前明月光，疑是地上霜。", 4));
        var training = new TrainingConfig { Steps = 2, BatchSize = 2, WarmupSteps = 1, EvalEvery = 1, LogEvery = 1, CheckpointEvery = 100 };

        var error = Assert.Throws<InvalidDataException>(() => SftRun.Execute(dir.File("base"), [Chat(longQuestion), Chat(longQuestion)], [Chat("誰？")], training, new RunOptions(dir.File("sft")) { Resume = false }));
        Assert.Contains("No training conversation has an assistant token within the context of 16 tokens (all 2 dropped)", error.Message);
        Assert.False(Directory.Exists(dir.File("sft/checkpoint")));

        var report = SftRun.Execute(dir.File("base"), [Chat(longQuestion), Chat("誰？"), Chat("何人？"), Chat(longQuestion)], [Chat("誰？"), Chat(longQuestion)], training, new RunOptions(dir.File("sft2")) { Resume = false });
        Assert.Equal(3, report.Dropped);
        Assert.Equal(2, report.TrainConversations);
        Assert.Equal(1, report.HeldOutConversations);
        Assert.True(double.IsFinite(report.Training.FinalLoss));
    }
}
