using System.Diagnostics;
using GptSharp.Inference.Cpu;
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
/// <c>prefill [rounds]</c>: prompt processing (prefill) tokens/s of the CPU engine against llama.cpp (LLamaSharp) on the
/// GGUF export of the same random weights, F32, F16 and Q8_0, interleaved round by round: a GPT-2-124M-shaped model at
/// 64 and 512 prompt tokens (its context is 1,024) and a Llama-layout model of similar size (12 layers, width 768,
/// grouped-query attention with 4 key heads, SwiGLU, context 2,048) at 64, 512 and 2,048. The engine reads the prompt in
/// one call (all positions, the last one's logits), llama.cpp in one batch of the prompt's length; medians, and each
/// round's ratio.
/// </summary>
static class PrefillBench
{
    public static void Run(string[] args)
    {
        int rounds = args.Length > 1 ? int.Parse(args[1]) : 3;
        Console.WriteLine($"\n## Prefill, one prompt, tokens/s (medians of {rounds} interleaved rounds; ratio GptSharp ÷ llama.cpp per round)");
        Console.WriteLine("| model | format | prompt | GptSharp CPU | llama.cpp | ratio by round |");
        Console.WriteLine("|---|---|---|---|---|---|");
        int vocab = Tokenization.GptTokenizer.Load("gpt2").VocabSize;
        Measure("gpt2-124m", GptConfig.Preset("gpt2-124m", vocab), [64, 512], rounds);
        Measure("llama 12×768, GQA 4", GptConfig.Llama(vocab, 2048, layers: 12, heads: 12, kvHeads: 4, width: 768), [64, 512, 2048], rounds);
    }

    static void Measure(string name, GptConfig config, int[] lengths, int rounds)
    {
        var folder = Directory.CreateTempSubdirectory("gptsharp-prefill-").FullName;
        try
        {
            manual_seed(1);
            using var model = new Gpt(config);
            model.eval();
            var (tokenizer, _) = DecodeBench.Tokenizer(folder, null);
            Checkpoint.Save(Path.Combine(folder, "run"), model, null, new TrainingState(0, "0:0", "", tokenizer));
            foreach (var (format, ggml) in new[] { (WeightFormat.F32, GgmlType.F32), (WeightFormat.F16, GgmlType.F16), (WeightFormat.Q8_0, GgmlType.Q8_0) })
            {
                string file = Path.Combine(folder, $"model-{ggml}.gguf");
                Gguf.Export(Path.Combine(folder, "run"), file, ggml);
                using var engine = CpuModel.From(model, format);
                var parameters = new ModelParams(file) { ContextSize = (uint)config.ContextLength, GpuLayerCount = 0, Threads = Environment.ProcessorCount, BatchSize = (uint)lengths.Max(), UBatchSize = 512 };
                using var weights = LLamaWeights.LoadFromFile(parameters);
                foreach (int length in lengths)
                {
                    int[] prompt = [.. Enumerable.Range(0, length).Select(i => (i * 977 + 13) % config.VocabSize)];
                    var ours = new List<double>();
                    var theirs = new List<double>();
                    for (int round = 0; round < rounds; round++)
                        foreach (bool first in round % 2 == 0 ? new[] { true, false } : [false, true])
                            if (first) ours.Add(Engine(engine, prompt));
                            else theirs.Add(LlamaCpp(weights, parameters, prompt));
                    Console.WriteLine($"| {name} | {format} | {length} | {Stats.Median(ours):F0} | {Stats.Median(theirs):F0} | " +
                                      $"{string.Join(", ", ours.Zip(theirs, (a, b) => (a / b).ToString("F2")))} |");
                }
                File.Delete(file);
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    static double Engine(CpuModel engine, int[] prompt)
    {
        var cache = engine.CreateCache(1);
        var logits = new float[engine.Config.VocabSize];
        var watch = Stopwatch.StartNew();
        engine.Forward(cache, prompt.Length, prompt, new int[prompt.Length], [.. Enumerable.Range(0, prompt.Length)], [prompt.Length - 1], logits);
        return prompt.Length / watch.Elapsed.TotalSeconds;
    }

    static double LlamaCpp(LLamaWeights weights, ModelParams parameters, int[] prompt)
    {
        using var context = weights.CreateContext(parameters);
        var batch = new LLamaBatch();
        for (int i = 0; i < prompt.Length; i++) batch.Add((LLamaToken)prompt[i], i, LLamaSeqId.Zero, i == prompt.Length - 1);
        var watch = Stopwatch.StartNew();
        if (context.Decode(batch) != DecodeResult.Ok) throw new InvalidOperationException("llama.cpp failed to decode the prompt.");
        _ = context.NativeHandle.GetLogitsIth(prompt.Length - 1)[0];
        return prompt.Length / watch.Elapsed.TotalSeconds;
    }
}
