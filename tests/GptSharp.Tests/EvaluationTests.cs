using GptSharp.Data;
using GptSharp.Speedrun;
using GptSharp.Evaluation;
using GptSharp.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace GptSharp.Tests;

public class EvaluationTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    static EvalTask Toy(int poolSize, string queryContext = "Q: 1+1=") => new("toy", "toy",
        [new EvalItem(queryContext, [" 2", " 3"], 0), new EvalItem("Q: 2+2=", [" 4", " 5"], 0)],
        [.. Enumerable.Range(0, poolSize).Select(i => new EvalItem($"Q: {i}+0=", [$" {i}", " x"], 0)), new EvalItem(queryContext, [" 2", " 3"], 0)]);

    [Fact]
    public void PromptsHoldKWorkedExamplesThenTheQueryAndNeverTheQueryItself()
    {
        var task = Toy(poolSize: 5);
        Assert.Equal("Q: 1+1=", Evaluator.Prompt(task, 0, shots: 0));
        for (int seed = 0; seed < 50; seed++)
        {
            string prompt = Evaluator.Prompt(task, 0, shots: 5, seed);
            var parts = prompt.Split("\n\n");
            Assert.Equal(6, parts.Length);
            Assert.Equal("Q: 1+1=", parts[^1]);
            // The pool also holds the query's own item: with 5 of 6 pool items drawn, it must still never appear as a shot.
            Assert.All(parts[..^1], shot => Assert.Matches(@"^Q: \d\+0= \d$", shot));
            Assert.Equal(5, parts[..^1].Distinct().Count());
        }
        Assert.Equal(Evaluator.Prompt(task, 1, 3, seed: 7), Evaluator.Prompt(task, 1, 3, seed: 7));
        Assert.Throws<ArgumentOutOfRangeException>(() => Evaluator.Prompt(task, 0, shots: 6));
    }

    [Fact]
    public void ChoicesAreScoredBySummedAndPerTokenLogLikelihood()
    {
        var tokenizer = fixture.Tokenizer;
        int favoured = tokenizer.Encode("光").Single(), other = tokenizer.Encode("月").Single();
        int v = tokenizer.VocabSize;
        // Hand-made logits: every position gives 光 a logit of 5 and everything else 0.
        Tensor Logits(Tensor tokens)
        {
            var logits = zeros(tokens.shape[0], tokens.shape[1], v);
            logits[.., .., favoured] = tensor(5f);
            return logits;
        }
        var evaluator = new Evaluator(Logits, tokenizer, contextLength: 16);
        double high = 5 - Math.Log(Math.Exp(5) + v - 1), low = -Math.Log(Math.Exp(5) + v - 1);
        var (sums, tokens) = evaluator.ChoiceLogLikelihoods("床前明月", ["光", "月", "光光光"]);
        Assert.Equal([1, 1, 3], tokens);
        Assert.Equal(high, sums[0], 4);
        Assert.Equal(low, sums[1], 4);
        Assert.Equal(3 * high, sums[2], 4);

        // Summed picks the single 光 (index 0); per token ties it with 光光光, and the first wins.
        var task = new EvalTask("t", "t", [new EvalItem("床前明月", ["月", "光光光", "光"], 2)], []);
        var score = evaluator.Score(task, shots: 0);
        Assert.Equal(1.0, score.Accuracy);
        Assert.Equal(0.0, score.NormalizedAccuracy);
        Assert.Equal(1.0 / 3, score.Chance, 6);

        // Bits per byte under these logits: every predicted token costs −log p exactly.
        string text = "月月月";
        var (bpb, perplexity, count) = evaluator.BitsPerByte([text]);
        int predicted = tokenizer.Encode(text).Length;
        Assert.Equal(predicted, count);
        Assert.Equal(-low * predicted / Math.Log(2) / System.Text.Encoding.UTF8.GetByteCount(text), bpb, 4);
        Assert.Equal(Math.Exp(-low), perplexity, 2);
    }

    [Fact]
    public void GenerativeItemsAreExactMatchAfterNormalisation()
    {
        Assert.Equal("李 白", Evaluator.Normalise("  李 白。 "));
        Assert.Equal("george washington", Evaluator.Normalise("George  Washington."));
        var tokenizer = fixture.Tokenizer;
        int answer = tokenizer.Encode("光").Single();
        Tensor Logits(Tensor tokens)
        {
            var logits = zeros(tokens.shape[0], tokens.shape[1], tokenizer.VocabSize);
            logits[.., .., answer] = tensor(5f);
            logits[.., -1, answer] = tokens[0, -1].item<long>() == answer ? tensor(0f) : tensor(5f);
            logits[.., -1, tokenizer.EosId] = tokens[0, -1].item<long>() == answer ? tensor(9f) : tensor(0f);
            return logits;
        }
        var evaluator = new Evaluator(Logits, tokenizer, 16);
        var task = new EvalTask("g", "g", [new EvalItem("床前明月", Expected: "光。"), new EvalItem("春眠不覺", Expected: "曉")], []);
        var score = evaluator.Score(task, 0);
        Assert.Equal(0.5, score.Accuracy);
        Assert.Equal(0, score.Chance);
    }

    [Fact]
    public void TaskFilesAreReadWithErrorsThatNameTheLine()
    {
        using var dir = new TempDirectory();
        string path = dir.File("task.jsonl");
        File.WriteAllLines(path, [
            """{"split":"shot","context":"1+1=","choices":["2","3"],"answer":0}""",
            """{"context":"2+2=","choices":["4","5"],"answer":0}""",
            """{"context":"capital of France:","answer":"Paris"}""",
        ]);
        var task = EvalTask.Load(path);
        Assert.Equal(2, task.Items.Count);
        Assert.Single(task.ShotPool);
        Assert.Equal("Paris", task.Items[1].Target);

        void Bad(string line, string expected)
        {
            File.WriteAllLines(path, ["""{"context":"ok","answer":"fine"}""", line]);
            var error = Assert.Throws<InvalidDataException>(() => EvalTask.Load(path));
            Assert.Contains($"{path}:2:", error.Message);
            Assert.Contains(expected, error.Message);
        }
        Bad("{not json", "malformed JSON");
        Bad("""{"answer":0,"choices":["a","b"]}""", "'context'");
        Bad("""{"context":"x","choices":["a","b"],"answer":2}""", "index of the right choice");
        Bad("""{"context":"x","choices":["a"],"answer":0}""", "at least two");
        Bad("""{"context":"x","answer":"y","split":"train"}""", "'split'");
    }

    [Fact]
    public void BuiltInTasksQueryHeldOutDocumentsAndDrawShotsFromTheRest()
    {
        foreach (string name in BuiltInTasks.Names)
        {
            var task = BuiltInTasks.Build(name, items: 30);
            Assert.Equal(30, task.Items.Count);
            Assert.True(task.ShotPool.Count >= 8, $"{name}: {task.ShotPool.Count} shots");
            Assert.All(task.Items, i => Assert.True(i.IsMultipleChoice ? i.Answer >= 0 && i.Answer < i.Choices!.Count : i.Accepts is not null || i.Expected is { Length: > 0 }));
            Assert.Empty(task.Items.Select(i => i.Context).Intersect(task.ShotPool.Select(s => s.Context)));
            Assert.Equal(BuiltInTasks.Build(name, items: 30).Items.Select(i => i.Context), task.Items.Select(i => i.Context)); // deterministic
        }
        Assert.Equal(0.25, BuiltInTasks.Build("author", 30).Chance, 6);
        Assert.Equal(0.25, BuiltInTasks.Build("next-line", 30).Chance, 6);
        Assert.Equal(0.5, BuiltInTasks.Build("spam", 30).Chance, 6);
        Assert.Throws<ArgumentException>(() => BuiltInTasks.Build("nope"));
    }

    [Fact]
    public void InContextTasksAreAnsweredOnlyByTheirExamples()
    {
        // label-copy: one arbitrary label per key character, the same in queries and examples; every key has examples.
        var copy = BuiltInTasks.Build("label-copy", items: 100);
        Assert.Equal(0.25, copy.Chance, 6);
        string Key(EvalItem item) => item.Context[^2..^1];
        var labelOf = copy.ShotPool.GroupBy(Key).ToDictionary(g => g.Key, g => g.Select(e => e.Target).Distinct().Single());
        Assert.Equal(6, labelOf.Count);
        Assert.All(copy.Items, item => Assert.Equal(labelOf[Key(item)], item.Target));
        Assert.True(labelOf.Values.Distinct().Count() > 1, "every key has the same label: copying would not be needed");
        // At 0 shots the prompt is the query alone: no label is in it.
        Assert.Equal(copy.Items[0].Context, Evaluator.Prompt(copy, 0, 0));
        Assert.DoesNotContain(Evaluator.Prompt(copy, 0, 0), c => "甲乙丙丁".Contains(c));
        Assert.Contains($"{Key(copy.Items[0])}：{labelOf[Key(copy.Items[0])]}\n", Evaluator.Prompt(copy, 0, 40));   // with many shots, an example of the same key shows its label

        // label-form: 甲 for a five-character line (12 characters with punctuation), 乙 for seven.
        var form = BuiltInTasks.Build("label-form", items: 50);
        Assert.Equal(0.5, form.Chance, 6);
        Assert.All(form.Items.Concat(form.ShotPool), item => Assert.Equal(item.Context.Split('\n')[0].Length == 12 ? "甲" : "乙", item.Target));
        Assert.Contains(form.Items, i => i.Target == "甲");
        Assert.Contains(form.Items, i => i.Target == "乙");

        // form-steer: empty queries, half asking for each form; k examples, all of the query's form, each after <|bos|>.
        var steer = BuiltInTasks.Build("form-steer", items: 40);
        Assert.All(steer.Items, i => Assert.Equal("", i.Context));
        Assert.Equal(20, steer.Items.Count(i => i.Group == "5"));
        Assert.Equal(20, steer.Items.Count(i => i.Group == "7"));
        Assert.All(steer.ShotPool, e => Assert.Equal(e.Group, GptSharp.Data.PoemForm.ClauseLength(e.Context.Split('\n')[0]).ToString()));
        Assert.Equal("", Evaluator.Prompt(steer, 0, 0));
        for (int i = 0; i < 2; i++)
        {
            string[] examples = Evaluator.Prompt(steer, i, 3).Split("<|bos|>");
            Assert.Equal(4, examples.Length);
            Assert.Equal("", examples[^1]);
            Assert.All(examples[..^1], e => Assert.All(e.Split('\n'), line => Assert.Equal(steer.Items[i].Group, GptSharp.Data.PoemForm.ClauseLength(line).ToString())));
        }
        var five = steer.Items.First(i => i.Group == "5");
        Assert.True(five.Accepts!("床前明月光，疑是地上霜。"));
        Assert.False(five.Accepts!("朝辭白帝彩雲間，千里江陵一日還。"));
        Assert.False(five.Accepts!("床前明月光，疑是地上。"));
        Assert.True(steer.Items.First(i => i.Group == "7").Accepts!("朝辭白帝彩雲間，千里江陵一日還。"));
    }

    [Fact]
    public void ASpecialTokenSeparatorIsTheDocumentBoundaryAndAnAnswerCheckReplacesExactMatch()
    {
        var tokenizer = fixture.Tokenizer;
        var evaluator = new Evaluator(tokens => zeros(tokens.shape[0], tokens.shape[1], tokenizer.VocabSize), tokenizer, 32);
        int[] moon = tokenizer.Encode("月"), flower = tokenizer.Encode("花");
        Assert.Equal([tokenizer.BosId, .. moon, tokenizer.BosId, .. flower, tokenizer.BosId], evaluator.PromptTokens("月<|bos|>花<|bos|>", "<|bos|>"));
        // Under a text separator, the same characters in a prompt stay text: a prompt cannot smuggle in a special token.
        Assert.DoesNotContain(tokenizer.BosId, evaluator.PromptTokens("月<|bos|>花", "\n\n")[1..]);

        // The model answers 光 to every prompt; Accepts decides, whatever Expected says.
        int answer = tokenizer.Encode("光").Single();
        Tensor Logits(Tensor tokens)
        {
            var logits = zeros(tokens.shape[0], tokens.shape[1], tokenizer.VocabSize);
            logits[.., -1, tokens[0, -1].item<long>() == answer ? tokenizer.EosId : answer] = tensor(9f);
            return logits;
        }
        var task = new EvalTask("g", "g",
            [new EvalItem("a", Expected: "x") { Accepts = a => a == "光" }, new EvalItem("b", Expected: "光") { Accepts = a => a.Length == 2 }, new EvalItem("c", Expected: "光")], [],
            SpecialTokens.Bos);
        Assert.Equal(2 / 3.0, new Evaluator(Logits, tokenizer, 16).Score(task, 0).Accuracy, 6);
    }
}

public class ReportCardTests
{
    [Fact]
    public void ReportCardGathersStagesPlotsAndScores()
    {
        using var dir = new TempDirectory();
        string run = dir.File("speedrun");
        void Done(string stage, double seconds, object outputs)
        {
            Directory.CreateDirectory(Path.Combine(run, stage));
            File.WriteAllText(Path.Combine(run, stage, "done.json"), System.Text.Json.JsonSerializer.Serialize(new { stage, seconds, outputs }));
        }
        Done("pretrain", 279.4, new { FinalValLoss = 5.24, StepsDone = 1500 });
        Done("ppo", 61, new { firstReward = 6.2, lastReward = 17.0 });
        Done("score", 66, new Dictionary<string, double> { ["sft"] = 0.57, ["ppo"] = 0.70, ["dpo"] = 0.525 });
        File.WriteAllLines(Path.Combine(run, "pretrain", "metrics.jsonl"), Enumerable.Range(1, 5).Select(s => $$"""{"step":{{s}},"loss":{{6 - 0.2 * s}},"valLoss":{{(s == 5 ? "5.1" : "null")}}}"""));
        File.WriteAllLines(Path.Combine(run, "ppo", "ppo.jsonl"), Enumerable.Range(0, 4).Select(i => $$"""{"step":{{4 * i}},"iteration":{{i}},"meanScore":{{i}},"meanKl":0.5,"meanResponseLength":40}"""));
        var eval = new EvalReport("x", [new TaskScore("author", 0, 0.29, 0.24, 0.25, 100), new TaskScore("author", 4, 0.33, 0.26, 0.25, 100),
            new TaskScore("form-steer", 0, 0.02, 0.02, 0, 100), new TaskScore("form-steer", 4, 0.62, 0.62, 0, 100)], [new CorpusScore("tang", 2.6, 195, 6855), new CorpusScore("sotu", 26.5, 1e8, 9000)]);
        Directory.CreateDirectory(Path.Combine(run, "data"));
        File.WriteAllText(Path.Combine(run, "data", GptSharp.Data.ShardSummary.MetaFile),
            System.Text.Json.JsonSerializer.Serialize(new GptSharp.Data.ShardSummary("tokenizer", 8192, ["tang"], 10, 1, 100, 10, 300, 1)));
        File.WriteAllText(Path.Combine(run, "pretrain", EvalRun.FileName), System.Text.Json.JsonSerializer.Serialize(eval, GptSharp.Runs.Checkpoint.Json));

        string path = ReportCard.Write(run);
        string report = File.ReadAllText(path);
        Assert.Contains("| pretrain | 279 |", report);
        Assert.Contains("| **total** | **406** |", report);
        Assert.Contains("gptsharp ppo --from RUN/sft --reward-model RUN/reward", report);   // the command line's one vocabulary
        Assert.Contains("| ppo | 70.0% |", report);
        Assert.Contains("| author | 25% | 29.0% (24.0%) | 33.0% (26.0%) |", report);
        Assert.Contains("| form-steer | — | 2.0% (2.0%) | 62.0% (62.0%) |", report);   // generative: no chance, 0 shots is its baseline
        Assert.Contains("tang 2.600 bits/byte", report);
        Assert.Contains("tang 2.600 bits/byte (pretrained on)", report);   // which corpora the base saw, so 10^8 reads as unseen text, not a bug
        Assert.Contains("sotu 26.500 bits/byte (never seen)", report);
        Assert.Contains("In-context tasks (label-copy, label-form, form-steer)", report);
        foreach (string png in new[] { "pretrain/loss.png", "ppo-reward.png", "ppo-kl.png", "ppo-length.png", "form-score.png", "kshot-base.png" })
        {
            Assert.Contains($"]({png})", report);
            var bytes = File.ReadAllBytes(Path.Combine(run, png));
            Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], bytes[..4]);
        }
        Assert.Throws<DirectoryNotFoundException>(() => ReportCard.Write(dir.File("missing")));
    }
}
