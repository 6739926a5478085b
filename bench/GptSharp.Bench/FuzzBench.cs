using GptSharp.Fuzzing;
using GptSharp.Runs;
using GptSharp.Tokenization;
using System.Text.Json;
using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Serving;

namespace GptSharp.Bench;

/// <summary>
/// The test suite's request, file and labeling fuzzers, longer and from any seed: <c>fuzz [cases] [seed]</c> (default
/// 20,000 cases, seed 1; the labeling fuzzer runs a fiftieth as many restarts). Prints what was tried, the outcomes, the
/// well-formed request's latency beside the fuzzed ones, and every invariant broken.
/// </summary>
static class FuzzBench
{
    public static void Run()
    {
        string[] args = Environment.GetCommandLineArgs();
        int at = Array.IndexOf(args, "fuzz");
        int cases = at >= 0 && args.Length > at + 1 ? int.Parse(args[at + 1]) : 20_000;
        int seed = at >= 0 && args.Length > at + 2 ? int.Parse(args[at + 2]) : 1;
        string dir = Path.Combine(Path.GetTempPath(), "gptsharp-fuzz-bench-" + Guid.NewGuid().ToString("N"));
        try
        {
            TorchSharp.torch.manual_seed(0);
            using (var model = new Gpt(GptConfig.Gpt2(Tokenization.GptTokenizer.Load("gpt2").VocabSize, 64, layers: 2, heads: 2, width: 32)))
                Checkpoint.Save(Path.Combine(dir, "run"), model, null, new TrainingState(0, "0:0", "", "gpt2"));
            using var served = ServedModel.Load($"fuzz={Path.Combine(dir, "run")}");
            Console.WriteLine($"\n## Fuzzing ({cases:N0} cases each, seed {seed})");
            RunRequests(served, cases, seed).GetAwaiter().GetResult();
            Console.WriteLine($"files: {FileFuzzer.Run(Path.Combine(dir, "files"), cases, seed)}");
            Console.WriteLine($"labeling: {LabelingFuzzer.Run(Path.Combine(dir, "labeling"), Math.Max(1, cases / 50), seed).GetAwaiter().GetResult()}");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    static async Task RunRequests(ServedModel served, int cases, int seed)
    {
        await using var server = new GptServer([served], new ServerOptions(Port: 0, MaxConcurrent: 4));
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address) };
        var prompt = served.Template.RenderPrompt([new ChatMessage(ChatRoles.User, "hello")]);
        var greedy = served.Generate(prompt, new SamplingOptions(Temperature: 0, MaxNewTokens: 8, StopTokens: [served.Tokenizer.EndId, served.Tokenizer.BosId]), null, default);
        string body = JsonSerializer.Serialize(new { model = "fuzz", messages = new[] { new { role = "user", content = "hello" } }, max_tokens = 8, temperature = 0 });
        Console.WriteLine($"requests: {await RequestFuzzer.Run(http, "fuzz", (body, served.Text(greedy, null)), cases, seed)}");
    }
}
