using System.Threading.Channels;
using GptSharp.Inference;
using GptSharp.Tokenization;

namespace GptSharp.Serving;

/// <summary>A piece of a choice's streamed text, with the log-probability of the token that released it.</summary>
readonly record struct ChoicePiece(int Choice, string Text, TokenLogprob? Logprob);

/// <summary>A request's token counts: its prompt, the tokens generated over all its choices, and the prompt tokens found in the prefix cache.</summary>
readonly record struct TokenUsage(int Prompt, int Completion, int Cached);

/// <summary>The fields an API names when a request does not fit: where its prompt came from, and its answer-length limit.</summary>
readonly record struct RequestFields(string Prompt, string MaxTokens)
{
    public static RequestFields Chat => new("messages", "max_tokens");
    public static RequestFields Completion => new("prompt", "max_tokens");
}

/// <summary>
/// One completion request turned into generation rows, one per choice (<c>n</c>): the sampling options the request
/// asks for, checked against the model's context; as tokens arrive, each choice's text (held back while it might begin a
/// stop sequence, silent inside a tool call) and log-probabilities as <see cref="Pieces"/>; and each row's outcome with
/// its stops read as errors (client gone, timeout, shutdown).
/// </summary>
sealed class RequestChoices : IDisposable
{
    readonly ServedModel _model;
    readonly CancellationTokenSource _limit;
    readonly CancellationToken _aborted, _stopping;
    readonly double _timeoutSeconds;
    readonly AnswerText[] _answers;
    readonly string[] _held;   // text a choice's last token released, not yet sent
    readonly List<int>[] _heldCall;   // tokens held back as (maybe) a tool call
    readonly AnswerShape _shape;
    readonly GptTokenizer _tokenizer;
    readonly Channel<ChoicePiece> _pieces = Channel.CreateUnbounded<ChoicePiece>();

    public RequestChoices(ServedModel model, int[] prompt, RequestSampling sampling, bool chat, AnswerShape shape,
        double timeoutSeconds, CancellationToken aborted, CancellationToken stopping, Action onFirstToken, RequestFields? fields = null,
        Inference.Cpu.CpuAdapter? adapter = null)
    {
        var (promptField, maxField) = fields ?? (chat ? RequestFields.Chat : RequestFields.Completion);
        if (prompt.Length >= model.ContextLength)
            throw new ApiError(400, $"The prompt is {prompt.Length} tokens; model '{model.Name}' reads at most {model.ContextLength} (prompt and answer together).",
                promptField, "context_length_exceeded");
        if (sampling.MaxTokens > model.ContextLength)
            throw new ApiError(400, $"'{maxField}' {sampling.MaxTokens} is more than model '{model.Name}''s context of {model.ContextLength} tokens.", maxField);
        var tokenizer = model.Tokenizer;
        var options = new SamplingOptions(Temperature: sampling.Temperature, TopP: sampling.TopP, TopK: sampling.TopK,
            MaxNewTokens: Math.Min(sampling.MaxTokens ?? model.ContextLength, model.ContextLength - prompt.Length),
            Seed: sampling.Seed ?? Random.Shared.NextInt64(), StopTokens: chat ? [tokenizer.EndId, tokenizer.BosId] : [tokenizer.BosId, tokenizer.EosId],
            StopSequences: sampling.Stop, PresencePenalty: sampling.PresencePenalty, FrequencyPenalty: sampling.FrequencyPenalty, TopLogprobs: sampling.TopLogprobs);
        if (shape.Constrained && options.MaxNewTokens < shape.MinTokens(tokenizer))
            throw new ApiError(400, $"'{maxField}' leaves room for {options.MaxNewTokens} tokens; the response format or tool call asked for needs up to {shape.MinTokens(tokenizer)} to be complete.",
                sampling.MaxTokens is null ? promptField : maxField);

        _model = model;
        _aborted = aborted;
        _stopping = stopping;
        _timeoutSeconds = timeoutSeconds;
        // A generation ends early when its client leaves, the server shuts down, or it runs past the request timeout.
        _limit = CancellationTokenSource.CreateLinkedTokenSource(aborted, stopping);
        if (timeoutSeconds > 0) _limit.CancelAfter(TimeSpan.FromSeconds(timeoutSeconds));

        var syntax = shape.Calls ? ToolCallSyntax.For(tokenizer) : null;
        int toolCall = syntax?.OpenToken ?? -1;
        // A format whose call is the answer's own JSON (Llama 3.1): a required call is all call; otherwise an answer that
        // opens with '{' is held back as a call until it ends (it is read as one, or released as text if it is not).
        bool bareCalls = syntax is { OpenToken: < 0 };
        bool forcedBare = bareCalls && shape.ToolChoice is Inference.Structured.ToolChoiceMode.Required or Inference.Structured.ToolChoiceMode.Named;
        int n = sampling.Choices;
        _answers = new AnswerText[n];
        _held = new string[n];
        _heldCall = new List<int>[n];
        (_shape, _tokenizer) = (shape, tokenizer);
        var calling = new bool[n];   // the choice began a tool call: its tokens are the call, not text
        int firstToken = 0;
        var rows = new List<BatchRow>(n);
        for (int i = 0; i < n; i++)
        {
            int choice = i;
            TokenLogprob? pending = null;
            _held[i] = "";
            _answers[i] = new AnswerText(tokenizer, sampling.Stop, text => _held[choice] += text);
            bool deciding = bareCalls && !forcedBare;   // a bare-call format's answer that may still open a call
            _heldCall[i] = [];
            calling[i] = forcedBare;
            void OnToken(int token)
            {
                if (Interlocked.Exchange(ref firstToken, 1) == 0) onFirstToken();
                if (!sampling.Stream) return;
                if (token == toolCall && toolCall >= 0) calling[choice] = true;
                if (calling[choice] || deciding) _heldCall[choice].Add(token);
                if (deciding)
                {
                    string lead = tokenizer.Decode(_heldCall[choice]).TrimStart();
                    if (lead.Length == 0) return;               // only whitespace yet: undecided
                    deciding = false;
                    if (lead[0] == '{') { calling[choice] = true; return; }
                    var leading = _heldCall[choice][..^1];      // text after all: release what was held before this token
                    _heldCall[choice].Clear();
                    foreach (int held in leading) _answers[choice].Add(held);
                }
                if (calling[choice]) return;
                bool counts = !_answers[choice].Stopped && !tokenizer.IsSpecial(token);
                _answers[choice].Add(token);
                var logprob = counts ? pending : null;
                if (_held[choice].Length > 0 || logprob is not null) _pieces.Writer.TryWrite(new ChoicePiece(choice, _held[choice], logprob));
                (_held[choice], pending) = ("", null);
            }
            rows.Add(new BatchRow(prompt, options with { Seed = options.Seed + i }, OnToken, _limit.Token, model.Decode,
                Constraint: shape.NewConstraint(model), OnLogprob: sampling.Stream ? logprob => pending = logprob : null, Adapter: adapter));
        }
        Rows = rows;
    }

    /// <summary>One row per choice, choice i sampled with the request's seed + i.</summary>
    public IReadOnlyList<BatchRow> Rows { get; }

    /// <summary>Streamed text as it is released (filled only for a streamed request; complete when <see cref="Complete"/> is called).</summary>
    public ChannelReader<ChoicePiece> Pieces => _pieces.Reader;

    /// <summary>Ends <see cref="Pieces"/> (the generations are over).</summary>
    public void Complete() => _pieces.Writer.TryComplete();

    /// <summary>
    /// What a streamed choice held back (what might have begun a stop sequence), released at its end — with the tokens held
    /// as a possible tool call when they turned out not to be one (a Llama 3.1 answer that opened with '{' but is no call).
    /// </summary>
    public string Rest(int choice)
    {
        if (_heldCall[choice].Count > 0 && _shape.CallStart(_tokenizer, _heldCall[choice]) < 0)
            foreach (int token in _heldCall[choice]) _answers[choice].Add(token);
        _answers[choice].Finish();
        return _held[choice];
    }

    /// <summary>Every row's result, a stopped or failed row read as the error its client gets.</summary>
    public Task<BatchResult[]> Outcomes(IEnumerable<Task<BatchResult>> queued) => Task.WhenAll(queued.Select(Outcome));

    async Task<BatchResult> Outcome(Task<BatchResult> task)
    {
        var result = await task;
        if (result.Cancelled)
        {
            if (_aborted.IsCancellationRequested) throw new OperationCanceledException(_aborted);
            if (_stopping.IsCancellationRequested) throw new ApiError(503, "The server is shutting down; this generation was stopped.", code: "server_shutting_down", type: "server_error");
            throw new ApiError(408, $"The generation ran past the server's limit of {_timeoutSeconds:G} s (--request-timeout).", code: "request_timeout");
        }
        if (result.Error is { } error) throw Failed(error);
        return result;
    }

    /// <summary>One request's generation failed (the rest of its batch went on): an OpenAI error without native detail.</summary>
    static ApiError Failed(Exception error)
    {
        if (error is ApiError api) return api;
        if (error is ArgumentException) return new ApiError(400, $"This request cannot be generated: {error.Message.Split('\n', 2)[0].Trim()}");
        Console.Error.WriteLine($"gptsharp serve: a generation failed: {error}");
        return new ApiError(500, "Generation failed for this request (other requests are unaffected); the server log has the details.", type: "server_error");
    }

    /// <summary>Stops the generations still running (their slots come free now).</summary>
    public void Cancel() => _limit.Cancel();

    public void Dispose() => _limit.Dispose();
}
