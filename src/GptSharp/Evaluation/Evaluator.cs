using GptSharp.Inference;
using GptSharp.Models;
using GptSharp.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Evaluation;

/// <summary>Accuracy of one task at one number of shots, beside chance.</summary>
/// <param name="Accuracy">Multiple choice: the choice with the highest summed log-likelihood; generative: exact match.</param>
/// <param name="NormalizedAccuracy">Multiple choice: the highest log-likelihood per token of the choice (as GPT-3, HellaSwag).</param>
public sealed record TaskScore(string Task, int Shots, double Accuracy, double NormalizedAccuracy, double Chance, int Items);

/// <summary>
/// Zero- and few-shot evaluation of a language model, GPT-2 and GPT-3 style: k worked examples from the task's pool,
/// then the query, scored without any training. The model is a function from tokens (B, T) to logits (B, T, V), so
/// tests can score hand-made logits.
/// </summary>
public sealed class Evaluator(Func<Tensor, Tensor> logitsOf, GptTokenizer tokenizer, int contextLength, TokenDecoder? decoder = null)
{
    public Evaluator(Gpt model, GptTokenizer tokenizer) : this(model.forward, tokenizer, model.Config.ContextLength, new TokenDecoder(model)) { }

    readonly TokenDecoder _decoder = decoder ?? new TokenDecoder(logitsOf, contextLength, tokenizer.VocabSize);

    /// <summary>
    /// The prompt for item <paramref name="index"/> with <paramref name="shots"/> examples drawn from the pool (fixed per
    /// item and seed), each written as its context followed by its right answer; an example whose context equals the
    /// query's is never used, and a query with a group takes examples of its group only.
    /// </summary>
    public static string Prompt(EvalTask task, int index, int shots, long seed = 0)
    {
        var query = task.Items[index];
        var candidates = task.ShotPool.Where(s => s.Context != query.Context && (query.Group is null || s.Group == query.Group)).ToList();
        if (shots > candidates.Count) throw new ArgumentOutOfRangeException(nameof(shots), shots, $"Task '{task.Name}' has {candidates.Count} usable examples for shots.");
        var random = new Random((int)((seed * 1_000_003 + index * 7919 + shots) & 0x7fffffff));
        var chosen = candidates.OrderBy(_ => random.Next()).Take(shots);
        return string.Concat(chosen.Select(s => s.Context + s.Target + task.Separator)) + query.Context;
    }

    /// <summary>
    /// The prompt's tokens after <c>&lt;|bos|&gt;</c>. A separator that is the name of one of the tokenizer's special
    /// tokens (e.g. <c>&lt;|bos|&gt;</c>, the document boundary of pretraining) becomes that token; all other text is
    /// encoded as plain text, so a prompt cannot smuggle in special tokens.
    /// </summary>
    public int[] PromptTokens(string prompt, string separator = "")
    {
        if (separator.Length == 0 || !tokenizer.HasSpecialToken(separator)) return [tokenizer.BosId, .. tokenizer.Encode(prompt)];
        int boundary = tokenizer.SpecialId(separator);
        var ids = new List<int> { tokenizer.BosId };
        string[] parts = prompt.Split(separator);
        for (int i = 0; i < parts.Length; i++)
        {
            if (i > 0) ids.Add(boundary);
            ids.AddRange(tokenizer.Encode(parts[i]));
        }
        return [.. ids];
    }

    /// <summary>Summed log-likelihood of each choice after the prompt, and its number of tokens.</summary>
    public (double[] Sum, int[] Tokens) ChoiceLogLikelihoods(string prompt, IReadOnlyList<string> choices, string separator = "")
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        int[] context = PromptTokens(prompt, separator);
        var continuations = choices.Select(c => tokenizer.Encode(c)).ToList();
        if (continuations.Any(c => c.Length == 0)) throw new ArgumentException("A choice has no tokens.", nameof(choices));
        // Keep the end of the prompt when prompt + choice is longer than the context window.
        var rows = continuations.Select(c => context.Concat(c).TakeLast(contextLength + 1).ToArray()).ToList();
        int t = rows.Max(r => r.Length) - 1;
        var inputs = new long[rows.Count * t];
        for (int b = 0; b < rows.Count; b++)
            for (int j = 0; j < rows[b].Length - 1; j++) inputs[b * t + j] = rows[b][j];
        var logProbabilities = logitsOf(tensor(inputs, [rows.Count, t])).log_softmax(-1);    // (B, T, V)
        var sums = new double[rows.Count];
        for (int b = 0; b < rows.Count; b++)
        {
            int n = continuations[b].Length, length = rows[b].Length;
            var positions = arange(length - 1 - n, length - 1, dtype: ScalarType.Int64);  // the logits that predict the choice
            var targets = tensor(rows[b][(length - n)..].Select(x => (long)x).ToArray());
            sums[b] = logProbabilities[b].index_select(0, positions).gather(1, targets.unsqueeze(1)).sum().item<float>();
        }
        return (sums, [.. continuations.Select(c => c.Length)]);
    }

    /// <summary>Scores a task at k shots.</summary>
    public TaskScore Score(EvalTask task, int shots, long seed = 0, int maxNewTokens = 24)
    {
        int correct = 0, correctNormalized = 0;
        var generative = Enumerable.Range(0, task.Items.Count).Where(i => !task.Items[i].IsMultipleChoice).ToList();
        var answers = Answers([.. generative.Select(i => Prompt(task, i, shots, seed))], maxNewTokens, task.Separator);
        var answerOf = generative.Zip(answers).ToDictionary(x => x.First, x => x.Second);
        for (int i = 0; i < task.Items.Count; i++)
        {
            var item = task.Items[i];
            if (item.IsMultipleChoice)
            {
                var (sums, tokens) = ChoiceLogLikelihoods(Prompt(task, i, shots, seed), item.Choices!, task.Separator);
                if (ArgMax(sums) == item.Answer) correct++;
                if (ArgMax([.. sums.Select((s, c) => s / tokens[c])]) == item.Answer) correctNormalized++;
            }
            else if (item.Accepts is { } accepts ? accepts(answerOf[i]) : Normalise(answerOf[i]) == Normalise(item.Expected!))
            {
                correct++;
                correctNormalized++;
            }
        }
        int n = Math.Max(1, task.Items.Count);
        return new TaskScore(task.Name, shots, correct / (double)n, correctNormalized / (double)n, task.Chance, task.Items.Count);
    }

    /// <summary>
    /// Greedy answers to the generative items' prompts, in one batch through the decoder: each ends at a special token,
    /// a newline or the task's separator, and is its first line. A prompt too long for the context keeps its end, with
    /// room for <paramref name="maxNewTokens"/>.
    /// </summary>
    public List<string> Answers(IReadOnlyList<string> prompts, int maxNewTokens, string separator)
    {
        if (prompts.Count == 0) return [];
        int room = Math.Max(1, contextLength - maxNewTokens);
        var rows = prompts.Select(p => PromptTokens(p, separator)).Select(ids => ids.Length > room ? ids[^room..] : ids).ToList();
        int[] specials = [.. Enumerable.Range(0, tokenizer.VocabSize).Where(tokenizer.IsSpecial)];
        bool textSeparator = separator.Length > 0 && !tokenizer.HasSpecialToken(separator);
        var options = new SamplingOptions(Temperature: 0, MaxNewTokens: maxNewTokens, StopTokens: specials,
            StopSequences: textSeparator ? ["\n", separator] : ["\n"]);
        var answers = _decoder.Generate(rows, options, Text);
        return [.. answers.Select(g => Text(g.Tokens).Split('\n')[0])];
    }

    string Text(IEnumerable<int> ids) => tokenizer.Decode(ids.Where(t => !tokenizer.IsSpecial(t)));

    /// <summary>Exact-match normalisation: trimmed, lower case, without punctuation and extra spaces.</summary>
    public static string Normalise(string text) =>
        string.Join(' ', new string([.. text.ToLowerInvariant().Where(c => !char.IsPunctuation(c))]).Split(' ', StringSplitOptions.RemoveEmptyEntries));

    static int ArgMax(double[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    /// <summary>
    /// Bits per byte of texts: their summed next-token loss (windows of the context length, each text starting at
    /// <c>&lt;|bos|&gt;</c>) in bits, divided by their UTF-8 bytes — comparable across tokenizers. Also returns perplexity per token.
    /// </summary>
    public (double BitsPerByte, double Perplexity, long Tokens) BitsPerByte(IEnumerable<string> texts)
    {
        double nats = 0;
        long bytes = 0, predicted = 0;
        foreach (string text in texts)
        {
            int[] ids = [tokenizer.BosId, .. tokenizer.Encode(text)];
            bytes += System.Text.Encoding.UTF8.GetByteCount(text);
            for (int start = 0; start + 1 < ids.Length; start += contextLength)
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                int length = Math.Min(contextLength + 1, ids.Length - start);
                var window = ids.AsSpan(start, length).ToArray().Select(x => (long)x).ToArray();
                var logits = logitsOf(tensor(window[..^1], [1, length - 1]))[0];                  // (T, V)
                nats += nn.functional.cross_entropy(logits, tensor(window[1..]), reduction: nn.Reduction.Sum).item<float>();
                predicted += length - 1;
            }
        }
        return (nats / Math.Log(2) / Math.Max(1, bytes), Math.Exp(nats / Math.Max(1, predicted)), predicted);
    }
}
