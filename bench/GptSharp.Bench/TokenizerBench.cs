using System.Diagnostics;
using System.Text;
using GptSharp.Data;
using GptSharp.Tokenization;

namespace GptSharp.Bench;

/// <summary>BPE training time and throughput on the Tang corpus for 8K and 32K vocabularies, and encoding speed.</summary>
static class TokenizerBench
{
    public static void Run()
    {
        var texts = Corpus.Read("tang").Select(d => d.Text).ToList();
        double megabytes = texts.Sum(t => (long)Encoding.UTF8.GetByteCount(t)) / 1e6;
        Console.WriteLine($"\n## BPE training on Tang poems ({texts.Count:N0} poems, {megabytes:F1} MB UTF-8)");
        Console.WriteLine("| pattern | vocab asked | vocab reached | merges | seconds | train MB/s | encode MB/s | bytes/token |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
        string sample = string.Join("\n", texts.Take(5000));
        double sampleMb = Encoding.UTF8.GetByteCount(sample) / 1e6;
        foreach (string pattern in new[] { "gpt4-cjk", "gpt4" })
            foreach (int vocab in new[] { 8192, 32768 })
            {
                var result = BpeTrainer.Train(texts, new BpeTrainingOptions(vocab, pattern));
                string dir = Path.Combine(Path.GetTempPath(), $"gptsharp-bench-tok-{Guid.NewGuid():N}");
                GptTokenizer.Save(result, "bench", dir);
                var tokenizer = GptTokenizer.Load(dir);
                tokenizer.Encode(sample); // warm-up
                var watch = Stopwatch.StartNew();
                int tokens = tokenizer.Encode(sample).Length;
                double encodeSeconds = watch.Elapsed.TotalSeconds;
                Directory.Delete(dir, true);
                Console.WriteLine($"| {pattern} | {vocab} | {tokenizer.VocabSize} | {result.MergeCount} | {result.Elapsed.TotalSeconds:F2} | " +
                                  $"{result.InputBytes / 1e6 / result.Elapsed.TotalSeconds:F2} | {sampleMb / encodeSeconds:F2} | {sampleMb * 1e6 / tokens:F2} |");
            }
    }
}
