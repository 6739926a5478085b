using System.Text.Json;
using System.Text.Json.Serialization;
using GptSharp.Data;
using GptSharp.Runtime;
using GptSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Runs;

/// <summary>Where training stands, saved with the weights so that a run resumes exactly.</summary>
/// <param name="Step">Optimiser steps done.</param>
/// <param name="DataPosition">The batch source's position (its own serialisation).</param>
/// <param name="RngState">torch's CPU generator state, base64.</param>
/// <param name="Tokenizer">The tokenizer the model was trained with (folder or built-in name).</param>
/// <param name="LastValLoss">The latest validation loss, if one was measured.</param>
public sealed record TrainingState(int Step, string DataPosition, string RngState, string Tokenizer, double? LastValLoss = null);

/// <summary>An optimiser whose state a checkpoint saves and restores.</summary>
public interface IOptimizerState
{
    /// <param name="receiveForeign">For a ZeRO-1 root: fetches, by parameter index, the moments other processes own.</param>
    void Save(string path, Func<int, (Tensor ExpAvg, Tensor ExpAvgSq)>? receiveForeign = null);
    void Load(string path);
}

/// <summary>
/// A run's checkpoint folder, <c>RUN/checkpoint/</c>: <c>model.json</c> (the model's config record),
/// <c>model.safetensors</c>, <c>optimizer.safetensors</c> and <c>state.json</c>. A new checkpoint is written whole into
/// <c>checkpoint.tmp</c> (its <c>state.json</c> last) and swapped in by renames, so a kill at any moment, even twice
/// in a row, leaves the newest complete checkpoint in <c>checkpoint</c>, <c>checkpoint.old</c> or <c>checkpoint.tmp</c>
/// (see <see cref="Find"/>).
/// </summary>
public static class Checkpoint
{
    public const string Folder = "checkpoint";
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>Writes a GPT's weights, optimiser and state for <paramref name="runDirectory"/>.</summary>
    public static void Save(string runDirectory, Gpt model, IOptimizerState? optimizer, TrainingState state) =>
        Save(runDirectory, model, model.Config, optimizer, state);

    /// <summary>Writes any module with the config record it is built from (a GPT backbone's, a BERT's, ...).</summary>
    /// <param name="receiveForeignOptimizerState">For a ZeRO-1 root: fetches the moments other processes own (see <see cref="IOptimizerState.Save"/>).</param>
    /// <param name="reached">Test hook: called with the name of each step of the swap (to simulate a crash there).</param>
    public static void Save(string runDirectory, nn.Module model, object config, IOptimizerState? optimizer, TrainingState state,
        Func<int, (Tensor ExpAvg, Tensor ExpAvgSq)>? receiveForeignOptimizerState = null, Action<string>? reached = null)
    {
        string final = Path.Combine(runDirectory, Folder);
        string temp = Path.Combine(runDirectory, $"{Folder}.tmp");
        string old = Path.Combine(runDirectory, $"{Folder}.old");
        Settle(runDirectory);
        reached?.Invoke("settled");
        Directory.CreateDirectory(temp);
        AtomicFile.WriteAllText(Path.Combine(temp, "model.json"), JsonSerializer.Serialize(config, config.GetType(), Json));
        SafeTensors.Save(Path.Combine(temp, "model.safetensors"), model.state_dict(),
            new Dictionary<string, string> { ["format"] = "gptsharp", ["step"] = state.Step.ToString() });
        optimizer?.Save(Path.Combine(temp, "optimizer.safetensors"), receiveForeignOptimizerState);
        reached?.Invoke("written");
        AtomicFile.WriteAllText(Path.Combine(temp, "state.json"), JsonSerializer.Serialize(state, Json)); // last: marks the folder complete
        reached?.Invoke("complete");
        if (Directory.Exists(final)) Directory.Move(final, old);
        reached?.Invoke("moved-aside");
        Directory.Move(temp, final);
        reached?.Invoke("swapped");
        Discard(old);
    }

    /// <summary>
    /// The checkpoint folder to read: of <c>checkpoint</c>, <c>checkpoint.old</c> and <c>checkpoint.tmp</c>, the complete
    /// one (its <c>state.json</c>, written last, is present and readable) with the most steps, so that a crash at any
    /// point of a save, or two crashes in a row, still leaves the newest complete checkpoint found.
    /// </summary>
    public static string? Find(string runDirectory)
    {
        string? best = null;
        int bestStep = -1;
        foreach (string name in new[] { Folder, $"{Folder}.old", $"{Folder}.tmp" })
        {
            string path = Path.Combine(runDirectory, name);
            if (CompleteStep(path) is { } step && step > bestStep) (best, bestStep) = (path, step);
        }
        return best;
    }

    static int? CompleteStep(string folder)
    {
        string state = Path.Combine(folder, "state.json");
        if (!RegularFile.HasData(state) || !RegularFile.HasData(Path.Combine(folder, "model.json")) || !RegularFile.HasData(Path.Combine(folder, "model.safetensors"))) return null;
        try { return JsonSerializer.Deserialize<TrainingState>(File.ReadAllText(state), Json)?.Step; }
        catch (JsonException) { return null; }
    }

    /// <summary>
    /// Leaves only <c>checkpoint</c> behind, holding the newest complete checkpoint (moved there from <c>.old</c> or
    /// <c>.tmp</c> if an earlier save was interrupted), before a new save starts. Folders go by rename first, so that a
    /// half-deleted folder can never look complete.
    /// </summary>
    static void Settle(string runDirectory)
    {
        string final = Path.Combine(runDirectory, Folder);
        string? best = Find(runDirectory);
        if (best is not null && best != final)
        {
            Discard(final);
            Directory.Move(best, final);
        }
        foreach (string name in new[] { $"{Folder}.old", $"{Folder}.tmp" }) Discard(Path.Combine(runDirectory, name));
        foreach (string trash in Directory.Exists(runDirectory) ? Directory.GetDirectories(runDirectory, $"{Folder}.trash-*") : [])
            Directory.Delete(trash, true);
    }

    static void Discard(string folder)
    {
        if (!Directory.Exists(folder)) return;
        string trash = Path.Combine(Path.GetDirectoryName(folder)!, $"{Folder}.trash-{Guid.NewGuid():N}");
        Directory.Move(folder, trash);
        Directory.Delete(trash, true);
    }

    /// <summary>The checkpoint folder to read, or an error that says what is missing or broken.</summary>
    public static string Require(string runDirectory)
    {
        if (Find(runDirectory) is { } found) return found;
        string state = Path.Combine(runDirectory, Folder, "state.json");
        if (File.Exists(state)) ReadStateFile(state); // a state.json that does not parse: say what is wrong with it
        foreach (string file in new[] { "model.json", "model.safetensors" })
            if (Path.Combine(runDirectory, Folder, file) is var path && File.Exists(path)) RegularFile.Require(path, file.EndsWith(".json") ? "a JSON file" : "a safetensors file");
        throw new FileNotFoundException($"No complete checkpoint in run folder '{runDirectory}' (expected {Folder}/ with model.json, model.safetensors " +
                                        "and state.json). Train first, or check --run-dir.");
    }

    /// <summary>
    /// Where a run starts: with <paramref name="resume"/>, the saved step and data position; otherwise step 0, and an
    /// error if the folder already holds a checkpoint (so a finished run is never overwritten by accident).
    /// </summary>
    public static (int Step, LoaderPosition Position) StartingPoint(string runDirectory, bool resume)
    {
        var (step, position) = Start(runDirectory, resume);
        if (position is null) return (step, default);
        try { return (step, LoaderPosition.Parse(position)); }
        catch (FormatException e) { throw new InvalidDataException($"{Path.Combine(Require(runDirectory), "state.json")}: {e.Message}", e); }
    }

    /// <summary>As <see cref="StartingPoint"/>, with the data position as the batch source saved it (null for a fresh run).</summary>
    public static (int Step, string? DataPosition) Start(string runDirectory, bool resume)
    {
        if (resume)
        {
            var saved = ReadStateFile(Path.Combine(Require(runDirectory), "state.json"));
            return (saved.Step, saved.DataPosition);
        }
        if (Find(runDirectory) is not null)
            throw new InvalidOperationException($"Run folder '{runDirectory}' already has a checkpoint: resume it, or choose another run folder.");
        return (0, null);
    }

    /// <summary>Writes a fresh run's <c>config.json</c> (what was trained, from what, on what).</summary>
    public static void WriteRunConfig(string runDirectory, object description)
    {
        Directory.CreateDirectory(runDirectory);
        AtomicFile.WriteAllText(Path.Combine(runDirectory, "config.json"), JsonSerializer.Serialize(description, Json));
    }

    /// <summary>The saved training state alone (to position the data before <see cref="Resume"/>).</summary>
    public static TrainingState ReadState(string runDirectory) => ReadStateFile(Path.Combine(Require(runDirectory), "state.json"));

    static TrainingState ReadStateFile(string path)
    {
        var state = ReadJson<TrainingState>(path);
        string? missing = state.DataPosition is null ? "DataPosition" : state.RngState is null ? "RngState" : state.Tokenizer is null ? "Tokenizer" : null;
        if (missing is not null) throw new InvalidDataException($"{path}: field '{missing}' is missing.");
        if (state.Step < 0) throw new InvalidDataException($"{path}: Step {state.Step} is negative.");
        string runDirectory = Path.GetDirectoryName(Path.GetDirectoryName(Path.GetFullPath(path)))!;
        return state with { Tokenizer = RunFolder.ResolveTokenizer(runDirectory, state.Tokenizer!) };
    }

    /// <summary>Builds the model a run saved and loads its weights.</summary>
    /// <param name="allowNonFinite">Load weights holding NaN or infinity (to inspect a broken run) instead of refusing them.</param>
    public static (Gpt Model, TrainingState State) LoadModel(string runDirectory, bool allowNonFinite = false)
    {
        string folder = Require(runDirectory);
        string configPath = Path.Combine(folder, "model.json");
        var config = ReadJson<GptConfig>(configPath);
        Gpt model;
        try { model = new Gpt(config); }
        catch (ArgumentException e) { throw new InvalidDataException($"{configPath}: {e.Message.ReplaceLineEndings(" ")}", e); }
        catch (System.Runtime.InteropServices.ExternalException e)
        {
            throw new InvalidDataException($"{configPath}: the model it describes cannot be built here: {e.Message.Split('\n')[0]}", e);
        }
        LoadWeights(model, Path.Combine(folder, "model.safetensors"), allowNonFinite);
        return (model, ReadStateFile(Path.Combine(folder, "state.json")));
    }

    /// <summary>Restores model weights, optimiser state and RNG; returns the state to continue from.</summary>
    public static TrainingState Resume(string runDirectory, nn.Module model, object config, IOptimizerState optimizer)
    {
        string folder = Require(runDirectory);
        var saved = ReadJson(Path.Combine(folder, "model.json"), config.GetType());
        if (!Equals(saved, config))
            throw new InvalidOperationException($"{folder}/model.json describes a different model than the one being trained; resume with the same configuration.");
        LoadWeights(model, Path.Combine(folder, "model.safetensors"));
        optimizer.Load(Path.Combine(folder, "optimizer.safetensors"));
        string statePath = Path.Combine(folder, "state.json");
        var state = ReadStateFile(statePath);
        if (state.RngState.Length > 0)
        {
            byte[] rngBytes;
            try { rngBytes = Convert.FromBase64String(state.RngState); }
            catch (FormatException) { throw new InvalidDataException($"{statePath}: RngState is not base64."); }
            using var current = torch.get_rng_state();
            if (rngBytes.Length != current.shape[0])
                throw new InvalidDataException($"{statePath}: RngState holds {rngBytes.Length} bytes; torch's generator state is {current.shape[0]}.");
            using var rng = tensor(rngBytes, ScalarType.Byte);
            torch.set_rng_state(rng);
        }
        return state;
    }

    public static string CaptureRng()
    {
        using var rng = torch.get_rng_state();
        return Convert.ToBase64String(rng.bytes);
    }

    /// <summary>The GptConfig a run saved.</summary>
    public static GptConfig ReadConfig(string runDirectory) => ReadConfig<GptConfig>(runDirectory);

    /// <summary>The model config record a run saved (a <see cref="GptConfig"/>, a <c>BertConfig</c>, ...).</summary>
    public static T ReadConfig<T>(string runDirectory) => ReadJson<T>(Path.Combine(Require(runDirectory), "model.json"));

    /// <summary>The weights file of a run's checkpoint.</summary>
    public static string WeightsPath(string runDirectory) => Path.Combine(Require(runDirectory), "model.safetensors");

    /// <summary>Copies tensors from a safetensors file into the model; every parameter must be present with its shape.</summary>
    public static void LoadWeights(nn.Module model, string path, bool allowNonFinite = false)
    {
        var (tensors, _) = SafeTensors.Load(path, allowNonFinite);
        try
        {
            using var noGrad = no_grad();
            var targets = model.state_dict();
            // A LoRA run's adapters, read into a model without them, are folded into its weights.
            var source = tensors.Keys.Any(k => k.Contains(".lora_")) && !targets.Keys.Any(k => k.Contains(".lora_")) ? Models.Lora.Merge(tensors) : tensors;
            LoadInto(targets, source, path);
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>Copies each target's tensor from <paramref name="tensors"/>, checking presence and shape (errors name the tensor and file).</summary>
    internal static void LoadInto(IReadOnlyDictionary<string, Tensor> targets, IReadOnlyDictionary<string, Tensor> tensors, string path)
    {
        foreach (var (name, target) in targets)
        {
            if (!tensors.TryGetValue(name, out var source)) throw new InvalidDataException($"{path}: tensor '{name}' is missing.");
            if (!source.shape.SequenceEqual(target.shape))
                throw new InvalidDataException($"{path}: tensor '{name}' has shape [{string.Join(", ", source.shape)}], the model expects [{string.Join(", ", target.shape)}].");
            target.copy_(source);
        }
    }

    static T ReadJson<T>(string path) => (T)ReadJson(path, typeof(T));

    static object ReadJson(string path, Type type)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint file missing: '{path}'.", path);
        RegularFile.Require(path, "a JSON file");
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllText(path), type, Json) ?? throw new InvalidDataException($"{path}: empty JSON (null).");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: invalid JSON{(e.LineNumber is { } line ? $" at line {line + 1}" : "")}: {e.Message.ReplaceLineEndings(" ")}", e);
        }
        catch (Exception e) when (e is NotSupportedException or ArgumentException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{path}: not a valid {type.Name}: {e.Message.ReplaceLineEndings(" ")}", e);
        }
    }
}
