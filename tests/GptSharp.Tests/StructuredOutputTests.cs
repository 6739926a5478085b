using System.Text;
using System.Text.Json;
using GptSharp.Inference;
using GptSharp.Inference.Structured;
using GptSharp.Models;
using TorchSharp;
using Validator = Json.Schema.JsonSchema;

namespace GptSharp.Tests;

/// <summary>
/// Structured output: a schema compiles to a byte grammar, the grammar masks a vocabulary, and whatever a model samples
/// under the mask parses and validates — checked by an independent validator (JsonSchema.Net), not by the grammar itself.
/// </summary>
public class StructuredOutputTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    /// <summary>Nested objects, arrays with bounds, enums, nullable numbers, integers, and a recursive <c>$ref</c>.</summary>
    public const string NestedSchema = """
        {
          "type": "object",
          "properties": {
            "title": {"type": "string", "maxLength": 12, "description": "annotations are ignored"},
            "lines": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 8}, "minItems": 1, "maxItems": 3},
            "meta": {
              "type": "object",
              "properties": {
                "year": {"type": "integer"},
                "score": {"type": ["number", "null"]},
                "form": {"enum": ["jueju", "lushi", 7]}
              },
              "required": ["year", "form"],
              "additionalProperties": false
            },
            "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "maxItems": 3},
            "ok": {"type": "boolean"},
            "note": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}]}
          },
          "required": ["title", "lines", "meta"],
          "additionalProperties": false,
          "$defs": {
            "tag": {
              "type": "object",
              "properties": {"name": {"type": "string", "maxLength": 6}, "children": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "maxItems": 2}},
              "required": ["name"]
            }
          }
        }
        """;

    /// <summary>A random-weight model over the trained tokenizer, and that tokenizer's vocabulary trie.</summary>
    (Gpt Model, VocabularyTrie Vocabulary) RandomModel(int seed, int context)
    {
        torch.manual_seed(seed);
        var model = new Gpt(GptConfig.Gpt2(vocab: fixture.Tokenizer.VocabSize, context: context, layers: 2, heads: 4, width: 32));
        model.eval();
        return (model, new VocabularyTrie(fixture.Tokenizer.OrdinaryTokens, fixture.Tokenizer.VocabSize));
    }

    static SchemaNode Compile(string schema) => JsonSchema.Compile(JsonDocument.Parse(schema).RootElement);

    internal static void AssertValid(string schema, string text)
    {
        using var document = JsonDocument.Parse(text);   // throws when the text is not JSON
        var result = Validator.FromText(schema).Evaluate(document.RootElement, new Json.Schema.EvaluationOptions { OutputFormat = Json.Schema.OutputFormat.List });
        Assert.True(result.IsValid, $"{text} does not validate: {string.Join("; ", result.Details?.Where(d => d.Errors is not null).SelectMany(d => d.Errors!.Values) ?? [])}");
    }

    [Fact]
    public void RandomByteWalksThroughTheGrammarAlwaysEndInValidJson()
    {
        var root = Compile(NestedSchema);
        var random = new Random(5);
        for (int walk = 0; walk < 300; walk++)
        {
            int budget = 60 + random.Next(200);
            IByteState state = JsonState.Start(root);
            var bytes = new List<byte>();
            while (state.Remaining > 0 || (random.Next(3) > 0 && Continuations(state, budget - bytes.Count).Count > 0))
            {
                var next = Continuations(state, budget - bytes.Count);
                Assert.True(next.Count > 0, $"stuck after '{Encoding.UTF8.GetString([.. bytes])}' ({bytes.Count} of {budget} bytes, {state.Remaining} to go)");   // the budget rule never paints the walk into a corner
                var (b, after) = next[random.Next(next.Count)];
                bytes.Add(b);
                state = after;
            }
            Assert.True(bytes.Count <= budget, $"walk {walk} wrote {bytes.Count} bytes over a budget of {budget}");
            AssertValid(NestedSchema, Encoding.UTF8.GetString([.. bytes]));
        }
    }

    /// <summary>The bytes that may come next and still leave a complete text within <paramref name="left"/> bytes.</summary>
    static List<(byte, IByteState)> Continuations(IByteState state, int left)
    {
        var next = new List<(byte, IByteState)>();
        for (int b = 0; b < 256; b++)
            if (state.Feed((byte)b) is { } after && after.Remaining <= left - 1) next.Add(((byte)b, after));
        return next;
    }

    [Theory]
    [InlineData("{\"title\":\"t\",\"lines\":[\"a\"],\"meta\":{\"year\":1,\"form\":7}}", true)]
    [InlineData("{\"title\":\"t\",\"lines\":[],\"meta\":{\"year\":1,\"form\":7}}", false)]        // minItems
    [InlineData("{\"title\":\"t\",\"lines\":[\"a\"],\"meta\":{\"year\":1.5,\"form\":7}}", false)]   // integer
    [InlineData("{\"title\":\"t\",\"lines\":[\"a\"],\"meta\":{\"form\":7}}", false)]                // required year
    [InlineData("{\"title\":\"t\",\"lines\":[\"a\"],\"meta\":{\"year\":1,\"form\":\"x\"}}", false)] // enum
    [InlineData("{\"title\":\"t\",\"lines\":[\"a\"],\"meta\":{\"year\":1,\"form\":7},\"x\":1}", false)] // additionalProperties false
    [InlineData("{\"title\":\"t\",\"lines\":[\"a\"],\"meta\":{\"year\":1,\"form\":7},\"tags\":[{\"name\":\"n\",\"children\":[{\"name\":\"m\"}]}]}", true)]
    [InlineData("{\"title\":\"t\",\"lines\":[\"a\"],\"meta\":{\"year\":1,\"form\":7},\"tags\":[{\"children\":[]}]}", false)] // recursive required
    [InlineData("{\"title\":\"t\\u0041\",\"lines\":[\"a\"],\"meta\":{\"year\":1,\"form\":7}}", false)]  // \u escapes are not written
    [InlineData("{\"title\":\"春眠\\n\",\"lines\":[\"a\"],\"meta\":{\"year\":-0,\"score\":null,\"form\":\"lushi\"}}", true)]
    [InlineData("{\"title\": \"t\",\"lines\":[\"a\"],\"meta\":{\"year\":1,\"form\":7}}", false)]  // no insignificant whitespace
    [InlineData("{\"title\":\"t\",\"lines\":[\"a\"],\"meta\":{\"year\":01,\"form\":7}}", false)]   // no leading zero
    public void TheGrammarAcceptsExactlyTheCompactTextsItShould(string text, bool accepted)
    {
        IByteState? state = JsonState.Start(Compile(NestedSchema));
        foreach (byte b in Encoding.UTF8.GetBytes(text)) state = state?.Feed(b);
        Assert.Equal(accepted, state is { Remaining: 0 });
        if (accepted) AssertValid(NestedSchema, text);
    }

    [Fact]
    public void TwoHundredAnswersSampledFromARandomModelUnderTheMaskAllValidate()
    {
        var tokenizer = fixture.Tokenizer;
        var (model, vocabulary) = RandomModel(seed: 11, context: 192);
        using var _ = model;
        var root = Compile(NestedSchema);
        int[] prompt = [tokenizer.BosId, .. tokenizer.Encode("床前明月光")];
        var decoder = new TokenDecoder(model);
        var answers = new List<string>();
        for (int batch = 0; batch < 10; batch++)
        {
            var rows = Enumerable.Range(0, 20).Select(i => new BatchRow(prompt,
                new SamplingOptions(Temperature: 1.0, MaxNewTokens: 60 + 5 * i, Seed: batch * 100 + i, StopTokens: [tokenizer.EndId]),
                Constraint: new GrammarConstraint(JsonState.Start(root), vocabulary, tokenizer.TokenBytes, [tokenizer.EndId]))).ToList();
            foreach (var result in decoder.Generate(rows))
            {
                Assert.Null(result.Error);
                Assert.Equal(FinishReason.Stop, result.Generation.Finish);   // closed in time, never cut by the length limit
                answers.Add(tokenizer.Decode(result.Generation.Tokens.Where(t => !tokenizer.IsSpecial(t))));
            }
        }
        Assert.Equal(200, answers.Count);
        foreach (string answer in answers) AssertValid(NestedSchema, answer);
        Assert.True(answers.Distinct().Count() > 150, "sampling under the mask still varies");
    }

    [Fact]
    public void JsonObjectModeClosesAnyObjectWithinTheLimit()
    {
        var tokenizer = fixture.Tokenizer;
        var (model, vocabulary) = RandomModel(seed: 12, context: 96);
        using var _ = model;
        var rows = Enumerable.Range(0, 16).Select(i => new BatchRow([tokenizer.BosId],
            new SamplingOptions(Temperature: 1.0, MaxNewTokens: 10 + 3 * i, Seed: i, StopTokens: [tokenizer.EndId]),
            Constraint: new GrammarConstraint(JsonState.Start(JsonSchema.AnyObject()), vocabulary, tokenizer.TokenBytes, [tokenizer.EndId]))).ToList();
        foreach (var result in new TokenDecoder(model).Generate(rows))
        {
            string text = tokenizer.Decode(result.Generation.Tokens.Where(t => !tokenizer.IsSpecial(t)));
            Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(text).RootElement.ValueKind);
            Assert.Equal(FinishReason.Stop, result.Generation.Finish);   // the object closed within the limit, even at 10 tokens
        }
    }

    [Theory]
    [InlineData("""{"type": "strnig"}""", "#/type")]
    [InlineData("""{"type": "object", "properties": []}""", "#/properties")]
    [InlineData("""{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}""", "#/required")]
    [InlineData("""{"type": "string", "pattern": "^a+$"}""", "#/pattern")]
    [InlineData("""{"type": "integer", "minimum": 3}""", "#/minimum")]
    [InlineData("""{"type": "string", "minLength": 5, "maxLength": 2}""", "#/minLength")]
    [InlineData("""{"type": "array", "items": {"type": "nope"}}""", "#/items/type")]
    [InlineData("""{"$ref": "#/$defs/missing"}""", "#/$ref")]
    [InlineData("""{"$ref": "https://example.com/schema"}""", "#/$ref")]
    [InlineData("""{"anyOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]}""", "#/anyOf")]
    [InlineData("""{"$ref": "#/$defs/a", "$defs": {"a": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "required": ["a"]}}}""", "#")]
    [InlineData("""{"type": "array", "minItems": -1}""", "#/minItems")]
    [InlineData("""17""", "#")]
    public void SchemasTheGrammarCannotFollowAreRejectedNamingWhere(string schema, string path)
    {
        var error = Assert.Throws<JsonSchemaException>(() => Compile(schema));
        Assert.Equal(path, error.Path);
    }

    [Fact]
    public void ANamedToolCallIsForcedAndItsArgumentsFollowTheToolsSchema()
    {
        var tokenizer = fixture.Tokenizer;
        Assert.True(tokenizer.Spec.SpecialTokens.ContainsKey(Tokenization.SpecialTokens.ToolCall));
        var (model, vocabulary) = RandomModel(seed: 13, context: 96);
        using var _ = model;
        int call = tokenizer.SpecialId(Tokenization.SpecialTokens.ToolCall);
        const string weather = """{"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}, "days": {"type": "integer"}}, "required": ["city"]}""";
        (string, SchemaNode)[] tools = [("get_weather", Compile(weather)), ("lookup", Compile("""{"type": "object", "properties": {"q": {"type": "string"}}}"""))];
        foreach (var (mode, expected) in new[] { (ToolChoiceMode.Named, "get_weather"), (ToolChoiceMode.Required, null) })
            for (int seed = 0; seed < 8; seed++)
            {
                var offered = mode == ToolChoiceMode.Named ? tools[..1] : tools;
                var constraint = new ToolCallConstraint(vocabulary, tokenizer.TokenBytes, Tokenization.ToolCallSyntax.For(tokenizer)!, tokenizer.EndId, offered, mode, null);
                var generation = new TokenDecoder(model).Generate([new BatchRow([tokenizer.BosId],
                    new SamplingOptions(Temperature: 1.0, MaxNewTokens: 60, Seed: seed, StopTokens: [tokenizer.EndId]), Constraint: constraint)])[0].Generation;
                Assert.Equal(call, generation.Tokens[0]);
                Assert.Equal(tokenizer.EndId, generation.Tokens[^1]);
                var parsed = Tokenization.ToolCall.Parse(tokenizer.Decode(generation.Tokens[1..^1]));
                if (expected is not null) Assert.Equal(expected, parsed.Name);
                AssertValid(parsed.Name == "get_weather" ? weather : """{"type": "object", "properties": {"q": {"type": "string"}}}""", parsed.Arguments);
            }
    }
}
