using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Threading.Channels;
using GptSharp.Inference;
using GptSharp.Inference.Structured;
using GptSharp.Tokenization;
using Microsoft.Extensions.AI;
using static TorchSharp.torch;
using AI = Microsoft.Extensions.AI;
using ChatMessage = GptSharp.Tokenization.ChatMessage;

namespace GptSharp.Serving;

/// <summary>
/// A loaded run as a Microsoft.Extensions.AI <see cref="IChatClient"/>, in process, no HTTP: streaming, the usual
/// options (temperature, top-p, top-k, max tokens, stop, seed, penalties), JSON output from a schema
/// (<c>GetResponseAsync&lt;T&gt;</c>) and tool calls (<c>UseFunctionInvocation()</c>), decoded by the same continuous
/// batcher and constraints as <c>gptsharp serve</c>. Also an <see cref="IEmbeddingGenerator{TInput, TEmbedding}"/>: the
/// mean of the final hidden states over a text's tokens.
/// </summary>
public sealed class GptChatClient : IChatClient, IEmbeddingGenerator<string, Embedding<float>>
{
    readonly ServedModel _model;
    readonly ContinuousBatcher _batcher;
    readonly bool _ownsModel;

    /// <param name="model">The run to answer with; with <paramref name="ownsModel"/>, disposed with this client.</param>
    public GptChatClient(ServedModel model, BatcherOptions? options = null, bool ownsModel = false)
    {
        (_model, _ownsModel) = (model, ownsModel);
        _batcher = ContinuousBatcher.For(model.Model, model.Decoder, options ?? new BatcherOptions());
    }

    /// <summary>Loads a run folder (as <c>gptsharp serve</c> does) and answers with it.</summary>
    public static GptChatClient Load(string runDirectory, BatcherOptions? options = null) => new(ServedModel.Load(runDirectory), options, ownsModel: true);

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<AI.ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var request = Prepare(messages, options);
        var result = await _batcher.Enqueue(request.Row(null, cancellationToken));
        cancellationToken.ThrowIfCancellationRequested();
        if (result.Error is { } error) throw new InvalidOperationException($"Generation failed: {error.Message}", error);
        var generation = result.Generation;
        var message = new AI.ChatMessage(ChatRole.Assistant, request.Contents(generation)) { MessageId = request.Id };
        return new ChatResponse(message)
        {
            ResponseId = request.Id, ModelId = _model.Name, CreatedAt = DateTimeOffset.UtcNow,
            FinishReason = request.Finish(generation),
            Usage = new UsageDetails
            {
                InputTokenCount = request.Prompt.Length, OutputTokenCount = generation.Tokens.Length,
                TotalTokenCount = request.Prompt.Length + generation.Tokens.Length, CachedInputTokenCount = result.Timings?.CachedTokens,
            },
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<AI.ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var request = Prepare(messages, options);
        var pieces = Channel.CreateUnbounded<string>();
        var text = new AnswerText(_model.Tokenizer, request.Options.StopSequences, piece => pieces.Writer.TryWrite(piece));
        int toolCall = request.Shape.Calls ? ToolCallSyntax.For(_model.Tokenizer)?.OpenToken ?? -1 : -1;
        bool calling = false;
        var done = _batcher.Enqueue(request.Row(token =>
        {
            calling |= token == toolCall;
            if (!calling) text.Add(token);
        }, cancellationToken));
        _ = done.ContinueWith(_ => { text.Finish(); pieces.Writer.TryComplete(); }, TaskScheduler.Default);
        await foreach (string piece in pieces.Reader.ReadAllAsync(cancellationToken))
            yield return Update(request, ChatRole.Assistant, [new TextContent(piece)]);
        var result = await done;
        cancellationToken.ThrowIfCancellationRequested();
        if (result.Error is { } error) throw new InvalidOperationException($"Generation failed: {error.Message}", error);
        var generation = result.Generation;
        var contents = request.Contents(generation).Where(c => c is not TextContent).ToList();
        contents.Add(new UsageContent(new UsageDetails
        {
            InputTokenCount = request.Prompt.Length, OutputTokenCount = generation.Tokens.Length, TotalTokenCount = request.Prompt.Length + generation.Tokens.Length,
        }));
        var last = Update(request, ChatRole.Assistant, contents);
        last.FinishReason = request.Finish(generation);
        yield return last;
    }

    ChatResponseUpdate Update(Request request, ChatRole role, IList<AIContent> contents) =>
        new(role, contents) { ResponseId = request.Id, MessageId = request.Id, ModelId = _model.Name, CreatedAt = DateTimeOffset.UtcNow };

    /// <summary>One request, ready to decode: its prompt, sampling options and shape.</summary>
    sealed record Request(ServedModel Model, string Id, int[] Prompt, SamplingOptions Options, AnswerShape Shape)
    {
        public BatchRow Row(Action<int>? onToken, CancellationToken cancellation) =>
            new(Prompt, Options, onToken, cancellation, Model.Decode, Constraint: Shape.NewConstraint(Model));

        public List<AIContent> Contents(Generation generation)
        {
            var contents = new List<AIContent>();
            int start = Shape.CallStart(Model.Tokenizer, generation.Tokens);
            var before = start < 0 ? generation.Tokens : generation.Tokens[..start];
            string text = Model.Text(generation with { Tokens = before }, Options.StopSequences);
            if (text.Length > 0) contents.Add(new TextContent(text));
            if (Shape.ReadCall(Model.Tokenizer, generation.Tokens) is { } call)
                contents.Add(new FunctionCallContent(call.Id, call.Name, Arguments(call.Arguments)));
            return contents;
        }

        public ChatFinishReason Finish(Generation generation) =>
            Shape.CallStart(Model.Tokenizer, generation.Tokens) >= 0 ? ChatFinishReason.ToolCalls
            : generation.Finish == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;

        static Dictionary<string, object?> Arguments(string json)
        {
            using var document = JsonDocument.Parse(json);
            return document.RootElement.ValueKind == JsonValueKind.Object
                ? document.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value.Clone())
                : [];
        }
    }

    Request Prepare(IEnumerable<AI.ChatMessage> messages, ChatOptions? options)
    {
        var shape = Shape(options);
        var turns = new List<(ChatMessage Message, IReadOnlyList<FunctionCall> Calls, string? AnswersCall)>();
        if (options?.Instructions is { Length: > 0 } instructions) turns.Add((new ChatMessage(ChatRoles.System, instructions), [], null));
        foreach (var message in messages)
        {
            string text = string.Concat(message.Contents.OfType<TextContent>().Select(t => t.Text));
            if (message.Role == ChatRole.Tool)
            {
                foreach (var result in message.Contents.OfType<FunctionResultContent>())
                    turns.Add((new ChatMessage(ChatRoles.Tool, ResultText(result.Result)), [], result.CallId));
                continue;
            }
            string role = message.Role == ChatRole.System ? ChatRoles.System : message.Role == ChatRole.Assistant ? ChatRoles.Assistant
                : message.Role == ChatRole.User ? ChatRoles.User
                : throw new ArgumentException($"Chat role '{message.Role}' is not supported; expected system, user, assistant or tool.", nameof(messages));
            var calls = message.Contents.OfType<FunctionCallContent>()
                .Select(c => new FunctionCall(c.CallId, c.Name, JsonSerializer.Serialize(c.Arguments ?? new Dictionary<string, object?>()))).ToList();
            turns.Add((new ChatMessage(role, text), calls, null));
        }
        var conversation = AnswerShape.Turns(turns);
        if (shape.NeedsToolTokens(conversation) && !_model.Template.SupportsTools)
            throw new NotSupportedException($"Model '{_model.Name}' cannot take tools: its tokenizer has no tool-call tokens.");
        int[] prompt = shape.Prompt(_model.Template, conversation);
        if (prompt.Length >= _model.ContextLength)
            throw new ArgumentException($"The conversation is {prompt.Length} tokens; model '{_model.Name}' reads at most {_model.ContextLength}.", nameof(messages));
        int room = _model.ContextLength - prompt.Length;
        var sampling = new SamplingOptions(
            Temperature: options?.Temperature ?? 1.0, TopP: options?.TopP ?? 1.0, TopK: options?.TopK ?? 0,
            MaxNewTokens: Math.Min(options?.MaxOutputTokens ?? room, room), Seed: options?.Seed ?? Random.Shared.NextInt64(),
            StopTokens: [_model.Tokenizer.EndId, _model.Tokenizer.BosId], StopSequences: options?.StopSequences is { Count: > 0 } stops ? [.. stops] : null,
            PresencePenalty: options?.PresencePenalty ?? 0, FrequencyPenalty: options?.FrequencyPenalty ?? 0);
        if (shape.Constrained && sampling.MaxNewTokens < shape.MinTokens(_model.Tokenizer))
            throw new ArgumentException($"MaxOutputTokens leaves room for {sampling.MaxNewTokens} tokens; the response format or tool call needs up to {shape.MinTokens(_model.Tokenizer)}.", nameof(options));
        return new Request(_model, "chatcmpl-" + Guid.NewGuid().ToString("N")[..24], prompt, sampling, shape);
    }

    static string ResultText(object? result) => result switch
    {
        null => "",
        string s => s,
        JsonElement e when e.ValueKind == JsonValueKind.String => e.GetString()!,
        _ => JsonSerializer.Serialize(result),
    };

    static AnswerShape Shape(ChatOptions? options)
    {
        SchemaNode? format = options?.ResponseFormat switch
        {
            ChatResponseFormatJson { Schema: { } schema } => JsonSchema.Compile(schema),
            ChatResponseFormatJson => JsonSchema.AnyObject(),
            _ => null,
        };
        var tools = options?.Tools?.OfType<AIFunctionDeclaration>()
            .Select(f => new FunctionTool(f.Name, f.Description, JsonSchema.Compile(f.JsonSchema), f.JsonSchema)).ToList();
        if (tools is { Count: 0 }) tools = null;
        var (mode, named) = options?.ToolMode switch
        {
            NoneChatToolMode => (ToolChoiceMode.None, null),
            RequiredChatToolMode { RequiredFunctionName: { } name } => (ToolChoiceMode.Named, name),
            RequiredChatToolMode => (ToolChoiceMode.Required, (string?)null),
            _ => (ToolChoiceMode.Auto, null),
        };
        if (named is not null && tools?.All(t => t.Name != named) != false)
            throw new ArgumentException($"ToolMode requires '{named}', which is not among the tools.", nameof(options));
        return new AnswerShape(format, tools, mode, named);
    }

    /// <summary>Each text's embedding (<see cref="ServedModel.Embed"/>): the mean of the model's final hidden states over
    /// its tokens (BOS first); a text longer than the context is refused, naming its index.</summary>
    public Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        Task.FromResult(EmbeddingGeneration.Embed(_model, values, cancellationToken));

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? new ChatClientMetadata("gptsharp", null, _model.Name)
        : serviceType == typeof(EmbeddingGeneratorMetadata) ? new EmbeddingGeneratorMetadata("gptsharp", null, _model.Name, (int)_model.Model.Config.Width)
        : serviceType.IsInstanceOfType(this) ? this
        : null;

    public void Dispose()
    {
        _batcher.DisposeAsync().AsTask().GetAwaiter().GetResult();
        if (_ownsModel) _model.Dispose();
    }
}
