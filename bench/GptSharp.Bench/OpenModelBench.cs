using System.Diagnostics;
using System.Text.Json;
using GptSharp.Alignment;
using GptSharp.Inference;
using GptSharp.Interop;
using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Runtime;
using GptSharp.Tokenization;
using GptSharp.Training;
using static TorchSharp.torch;

namespace GptSharp.Bench;

/// <summary>
/// A real-sized open model on this machine: Qwen2.5-0.5B's configuration (24 layers, width 896, 14 heads over 2 KV
/// heads of 64, MLP 4864, 151,936 ids, tied embeddings, q/k/v biases) with random weights, written as a Hugging Face
/// folder in BF16; then `gptsharp import hf` in a child process (wall time and peak RSS against the weights' size),
/// SFT steps with and without LoRA (tokens/s), and greedy decoding (tokens/s).
/// </summary>
static class OpenModelBench
{
    public static void Run()
    {
        string dir = Path.Combine(Path.GetTempPath(), "gptsharp-open-model-bench-" + Guid.NewGuid().ToString("N"));
        try
        {
            // The context is 4,096 here (Qwen2.5 allows 32,768); it changes no weight.
            var config = GptConfig.Llama(151936, 4096, layers: 24, heads: 14, kvHeads: 2, width: 896) with
            {
                MlpWidth = 4864, QkvBias = true, TiedEmbeddings = true, RotaryBase = 1000000, NormEpsilon = 1e-6,
            };
            manual_seed(0);
            using (var model = new Gpt(config))
                Checkpoint.Save(Path.Combine(dir, "made"), model, null, new TrainingState(0, "0:0", "", "gpt2"));
            HuggingFace.Export(Path.Combine(dir, "made"), Path.Combine(dir, "hf"));
            Directory.Delete(Path.Combine(dir, "made"), recursive: true);
            // The weights as published: BF16.
            string weights = Path.Combine(dir, "hf", "model.safetensors");
            var bf16 = new Dictionary<string, Tensor>();
            SafeTensors.Read(weights, _ => true, (name, t) => { bf16[name] = t.to(ScalarType.BFloat16); t.Dispose(); });
            SafeTensors.Save(weights, bf16, new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var t in bf16.Values) t.Dispose();
            long weightBytes = new FileInfo(weights).Length;
            long parameters;
            using (var probe = new Gpt(config)) parameters = probe.ParameterCount;
            Console.WriteLine($"\n## Qwen2.5-0.5B-shaped model, random weights ({parameters / 1e6:F0}M parameters; BF16 file {weightBytes / 1e9:F2} GB, F32 in memory {parameters * 4 / 1e9:F2} GB)");

            // Import in a child process, so its peak RSS is the import's alone.
            string cli = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "../../../../../src/GptSharp.Cli/bin",
                new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name, "net10.0", "GptSharp.Cli.dll"));
            var start = new ProcessStartInfo("/usr/bin/time", ["-v", "dotnet", cli, "import", "hf", "--from", Path.Combine(dir, "hf"), "--run-dir", Path.Combine(dir, "run"), "--tokenizer", "gpt2"])
            { RedirectStandardError = true, RedirectStandardOutput = true };
            var watch = Stopwatch.StartNew();
            using (var process = Process.Start(start)!)
            {
                string stdout = process.StandardOutput.ReadToEnd(), stderr = process.StandardError.ReadToEnd();
                process.WaitForExit();
                string peak = stderr.Split('\n').FirstOrDefault(l => l.Contains("Maximum resident set size"))?.Split(':')[^1].Trim() ?? "?";
                Console.WriteLine($"import hf (BF16 → F32 run): {watch.Elapsed.TotalSeconds:F1} s, peak RSS {(long.TryParse(peak, out long kb) ? $"{kb / 1e6:F2} GB" : peak)}" +
                                  (process.ExitCode == 0 ? "" : $" — failed: {stdout}{stderr}"));
            }

            // SFT steps: a few 256-token conversations, with and without LoRA.
            var conversation = new List<ChatMessage> { new(ChatRoles.User, string.Join(' ', Enumerable.Repeat("moon river", 60))), new(ChatRoles.Assistant, string.Join(' ', Enumerable.Repeat("bright night", 60))) };
            var train = Enumerable.Range(0, 8).Select(_ => (IReadOnlyList<ChatMessage>)conversation).ToList();
            foreach (var lora in new LoraConfig?[] { new LoraConfig(Rank: 16, Alpha: 32), null })
            {
                var metrics = new List<StepMetrics>();
                var training = new TrainingConfig { Steps = 4, BatchSize = 1, LearningRate = 1e-5, WarmupSteps = 0, EvalEvery = 1000, CheckpointEvery = 1000 };
                SftRun.Execute(Path.Combine(dir, "run"), train, [train[0]], training, new RunOptions(Path.Combine(dir, lora is null ? "sft-full" : "sft-lora")) { Resume = false, OnStep = metrics.Add, Lora = lora });
                double tokensPerSecond = metrics.Skip(1).Average(m => m.TokensPerSecond);   // the first step warms up
                Console.WriteLine($"SFT {(lora is null ? "full" : "LoRA rank 16")}: {tokensPerSecond:F0} tokens/s (batch 1 × ~250 tokens, steps 2–4)");
                Directory.Delete(Path.Combine(dir, lora is null ? "sft-full" : "sft-lora"), recursive: true);
            }

            var (loaded, _) = Checkpoint.LoadModel(Path.Combine(dir, "run"));
            using (loaded)
            {
                loaded.eval();
                var decoder = new TokenDecoder(loaded);
                int[] prompt = [.. Enumerable.Range(1000, 32)];
                decoder.Generate([prompt], new SamplingOptions(Temperature: 0, MaxNewTokens: 4));
                watch.Restart();
                var generated = decoder.Generate([prompt], new SamplingOptions(Temperature: 0, MaxNewTokens: 64))[0];
                Console.WriteLine($"decode (batch 1, greedy, 32-token prompt, 64 tokens): {generated.Tokens.Length / watch.Elapsed.TotalSeconds:F1} tokens/s (prefill included)");
            }
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }
}
