using System.Net;
using System.Text;
using System.Text.Json;
using GptSharp.Encoders;
using GptSharp.Evaluation;
using GptSharp.Serving;
using GptSharp.Training;
using Microsoft.Extensions.AI;

namespace GptSharp.Tests;

/// <summary>A BERT run served for /v1/embeddings beside a GPT, in process as an IEmbeddingGenerator, and the embedding scores.</summary>
public class EncoderServingTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    static StringContent Json(object body) => new(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");

    string TinyBert(TempDirectory dir)
    {
        string poems = dir.File("poems.jsonl");
        File.WriteAllLines(poems, Enumerable.Range(0, 100).Select(i => JsonSerializer.Serialize(new { text = $"床前明月光，疑是地上霜。{i}" })));
        var config = new BertConfig { ContextLength = 16, Layers = 1, Heads = 2, Width = 16, Dropout = 0 };
        BertPretrainRun.Execute(config, new TrainingConfig { Steps = 2, BatchSize = 8, WarmupSteps = 1, EvalEvery = 1000, EvalBatches = 1, CheckpointEvery = 1000 },
            new MaskingConfig(), [poems], fixture.Directory, new RunOptions(dir.File("bert")) { Resume = false }, heldOutFraction: 0.1);
        return dir.File("bert");
    }

    [Fact]
    public async Task ABertRunServesEmbeddingsOnlyPooledAsAskedAndRefusesWhatItCannotRead()
    {
        using var dir = new TempDirectory();
        string run = TinyBert(dir);
        Assert.True(ServedEncoder.IsEncoderRun(run));
        fixture.SaveInitialRun(dir.File("gpt"), context: 32);
        Assert.False(ServedEncoder.IsEncoderRun(dir.File("gpt")));
        using var mean = ServedEncoder.Load($"bert={run}");
        using var cls = ServedEncoder.Load($"bert-cls={run}", Pooling.Cls);
        using var gpt = ServedModel.Load(dir.File("gpt"));
        await using var server = new GptServer([gpt], new ServerOptions(Port: 0), [mean, cls]);
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(server.Address) };

        // The vector is the encoder's own: mean pooling is the mean of the hidden states over [CLS] text [SEP], CLS the first.
        int[] tokens = mean.Tokenizer.Encode("床前明月光");
        var reply = await http.PostAsync("/v1/embeddings", Json(new { model = "bert", input = new[] { "床前明月光", "疑是地上霜" } }));
        string text = await reply.Content.ReadAsStringAsync();
        Assert.True(reply.IsSuccessStatusCode, text);
        using var doc = JsonDocument.Parse(text);
        var first = doc.RootElement.GetProperty("data")[0].GetProperty("embedding").EnumerateArray().Select(x => x.GetSingle()).ToArray();
        Assert.Equal(16, first.Length);
        using (var noGrad = TorchSharp.torch.no_grad())
        {
            var hidden = mean.Encoder.Hidden(TorchSharp.torch.tensor([mean.Tokenizer.BosId, .. tokens.Select(t => (long)t), mean.Tokenizer.EosId]).unsqueeze(0), null, null)[0];
            Assert.Equal(hidden.mean([0]).data<float>().ToArray(), first, new FloatTolerance(1e-5f));
            Assert.Equal(hidden[0].data<float>().ToArray(), cls.Embed(tokens), new FloatTolerance(1e-5f));
        }
        Assert.Equal(tokens.Length + mean.Tokenizer.Encode("疑是地上霜").Length, doc.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());

        // In process, the same vectors through Microsoft.Extensions.AI.
        IEmbeddingGenerator<string, Embedding<float>> generator = mean;
        Assert.Equal(first, (await generator.GenerateAsync(["床前明月光"]))[0].Vector.ToArray());

        // The encoder is listed, but chat refuses it; too much text is refused by its index, never cut.
        Assert.Contains("\"bert\"", await http.GetStringAsync("/v1/models"));
        var chat = await http.PostAsync("/v1/chat/completions", Json(new { model = "bert", messages = new[] { new { role = "user", content = "hi" } } }));
        Assert.Equal(HttpStatusCode.BadRequest, chat.StatusCode);
        Assert.Contains("/v1/embeddings only", await chat.Content.ReadAsStringAsync());
        var tooLong = await http.PostAsync("/v1/embeddings", Json(new { model = "bert", input = new[] { "床", string.Concat(Enumerable.Repeat("床前明月光", 10)) } }));
        Assert.Equal(HttpStatusCode.BadRequest, tooLong.StatusCode);
        using var error = JsonDocument.Parse(await tooLong.Content.ReadAsStringAsync());
        Assert.Equal("input[1]", error.RootElement.GetProperty("error").GetProperty("param").GetString());
        Assert.Contains("at most 14", error.RootElement.GetProperty("error").GetProperty("message").GetString());
        // The GPT beside it still embeds.
        Assert.True((await http.PostAsync("/v1/embeddings", Json(new { model = "gpt", input = "床前明月光" }))).IsSuccessStatusCode);
    }

    [Fact]
    public void NearestNeighboursAndRecallAreCountedAsDefined()
    {
        float[][] train = [[1, 0], [0.9f, 0.1f], [0, 1], [0.1f, 0.9f], [0.2f, 0.8f]];
        int[] labels = [0, 0, 1, 1, 1];
        // (1, 0.05) is nearest to the two label-0 points, then label 1: with k = 1 and k = 3 it is 0; with k = 5 the vote is 2 vs 3.
        float[][] test = [[1, 0.05f]];
        Assert.Equal(1.0, EmbeddingScore.NearestNeighbourAccuracy(train, labels, test, [0], k: 1));
        Assert.Equal(1.0, EmbeddingScore.NearestNeighbourAccuracy(train, labels, test, [0], k: 3));
        Assert.Equal(0.0, EmbeddingScore.NearestNeighbourAccuracy(train, labels, test, [0], k: 5));
        // Query i's document is document i: query 0 finds it first, query 1's is only second.
        float[][] documents = [[1, 0], [0.8f, 0.2f], [0, 1]];
        float[][] queries = [[1, 0], [1, 0.1f]];
        Assert.Equal(0.5, EmbeddingScore.RecallAtK(queries, documents, k: 1));
        Assert.Equal(1.0, EmbeddingScore.RecallAtK(queries, documents, k: 2));
    }
}
