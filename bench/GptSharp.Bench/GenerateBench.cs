using System.Diagnostics;
using System.Text.RegularExpressions;
using GptSharp.Interop;
using GptSharp.Models;
using GptSharp.Runs;
using GptSharp.Training;
using LLama;
using LLama.Common;
using LLama.Native;
using static TorchSharp.torch;

namespace GptSharp.Bench;

/// <summary>
/// <c>generate [rounds] [tokens]</c>: batch-1 greedy decode as a user runs it — the <c>gptsharp generate</c> command in its
/// own process, each format of the CPU engine, the rate it reports after the first token and its wait for the first
/// token (the model loaded and packed) — against llama.cpp (LLamaSharp, in this process) on the GGUF export of the
/// same random weights, the file loaded anew each time; interleaved round by round, medians and per-round
/// ratios. Models: GPT-2-124M and a Llama-layout model of similar size (12 layers, width 768, 4 key heads, SwiGLU).
/// Needs the CLI built in Release (<c>dotnet build -c Release src/GptSharp.Cli</c>).
/// </summary>
static partial class GenerateBench
{
    const string Prompt = "The moon rose over the river, and the old song";

    public static void Run(string[] args)
    {
        int rounds = args.Length > 1 ? int.Parse(args[1]) : 3;
        int tokens = args.Length > 2 ? int.Parse(args[2]) : 200;
        string cli = Path.GetFullPath("src/GptSharp.Cli/bin/Release/net10.0/GptSharp.Cli.dll");
        if (!File.Exists(cli)) throw new FileNotFoundException($"Build the CLI first: dotnet build -c Release src/GptSharp.Cli ({cli} is missing).");
        Console.WriteLine($"\n## `gptsharp generate` against llama.cpp, batch 1, greedy, {tokens} tokens (medians of {rounds} interleaved rounds)");
        Console.WriteLine("tok/s after the first token; first token: ms from the start of generation with the model loaded (ours: the prompt, weights packed before; llama.cpp: a context and the prompt).");
        int vocab = Tokenization.GptTokenizer.Load("gpt2").VocabSize;
        Measure(cli, "gpt2-124m", GptConfig.Preset("gpt2-124m", vocab), rounds, tokens);
        Measure(cli, "llama 12×768, GQA 4", GptConfig.Llama(vocab, 1024, layers: 12, heads: 12, kvHeads: 4, width: 768), rounds, tokens);
    }

    static void Measure(string cli, string name, GptConfig config, int rounds, int tokens)
    {
        string folder = Directory.CreateTempSubdirectory("gptsharp-generate-").FullName;
        try
        {
            manual_seed(1);
            using (var model = new Gpt(config))
            {
                var (tokenizer, _) = DecodeBench.Tokenizer(folder, null);
                Checkpoint.Save(Path.Combine(folder, "run"), model, null, new TrainingState(0, "0:0", "", tokenizer));
            }
            string run = Path.Combine(folder, "run");
            var prompt = Tokenization.GptTokenizer.Load(Path.Combine(folder, "tokenizer"));
            int[] promptTokens = [prompt.BosId, .. prompt.Encode(Prompt)];
            (string Ours, GgmlType Theirs)[] pairs = [("f32", GgmlType.F32), ("f16", GgmlType.F16), ("bf16", GgmlType.F16), ("q8_0", GgmlType.Q8_0), ("q4_0", GgmlType.Q4_0)];
            var files = new Dictionary<GgmlType, string>();
            foreach (var type in pairs.Select(p => p.Theirs).Distinct())
                Gguf.Export(run, files[type] = Path.Combine(folder, $"model-{type}.gguf"), type);

            var ours = pairs.ToDictionary(p => p.Ours, _ => new List<(double Rate, double FirstMs, int Tokens)>());
            var theirs = files.Keys.ToDictionary(t => t, _ => new List<(double Rate, double FirstMs)>());
            for (int round = 0; round < rounds; round++)
            {
                var order = round % 2 == 0 ? pairs : [.. pairs.Reverse()];
                foreach (var (format, type) in order)
                {
                    ours[format].Add(Cli(cli, run, format, tokens));
                    if (format != "bf16") theirs[type].Add(LlamaCpp(files[type], config.ContextLength, promptTokens, tokens));
                }
            }

            Console.WriteLine($"\n### {name}");
            Console.WriteLine("| format | GptSharp tok/s | llama.cpp tok/s | ratio by round | GptSharp first token ms | llama.cpp first token ms | tokens |");
            Console.WriteLine("|---|---|---|---|---|---|---|");
            foreach (var (format, type) in pairs)
            {
                var a = ours[format];
                var b = theirs[type];
                Console.WriteLine($"| {format} vs {type} | {Stats.Median(a.Select(x => x.Rate)):F1} | {Stats.Median(b.Select(x => x.Rate)):F1} | " +
                                  $"{string.Join(", ", a.Zip(b, (x, y) => (x.Rate / y.Rate).ToString("F2")))} | {Stats.Median(a.Select(x => x.FirstMs)):F0} | " +
                                  $"{Stats.Median(b.Select(x => x.FirstMs)):F0} | {a.Min(x => x.Tokens)} |");
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [GeneratedRegex(@"\[(\d+) tokens, finished: \w+; first token after (\d+) ms, then ([\d.]+) tok/s")]
    private static partial Regex Report();

    /// <summary>One <c>gptsharp generate</c> process; its own report of the first token and the rate after it.</summary>
    static (double Rate, double FirstMs, int Tokens) Cli(string cli, string run, string format, int tokens)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            ArgumentList = { cli, "generate", "--run-dir", run, "--engine", format == "f32" ? "cpu" : $"cpu-{format}", "--temperature", "0", "--max-tokens", tokens.ToString(), "--prompt", Prompt },
            RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        string errors = process.StandardError.ReadToEnd();
        process.WaitForExit();
        _ = output.Result;
        var match = Report().Match(errors);
        if (process.ExitCode != 0 || !match.Success) throw new InvalidOperationException($"gptsharp generate --engine cpu-{format} failed ({process.ExitCode}): {errors}");
        return (double.Parse(match.Groups[3].Value), double.Parse(match.Groups[2].Value), int.Parse(match.Groups[1].Value));
    }

    /// <summary>llama.cpp from its file: greedy over its logits, one token per decode call.</summary>
    static (double Rate, double FirstMs) LlamaCpp(string file, int context, int[] prompt, int tokens)
    {
        var parameters = new ModelParams(file) { ContextSize = (uint)context, GpuLayerCount = 0, Threads = Environment.ProcessorCount, BatchSize = 64 };
        using var weights = LLamaWeights.LoadFromFile(parameters);
        long started = Stopwatch.GetTimestamp();
        using var llama = weights.CreateContext(parameters);
        long first = DecodeBench.LlamaCpp.Greedy(llama, prompt, tokens);
        return ((tokens - 1) / Stopwatch.GetElapsedTime(first).TotalSeconds, Stopwatch.GetElapsedTime(started, first).TotalMilliseconds);
    }
}
