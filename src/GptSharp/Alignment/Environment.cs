using GptSharp.Tokenization;

namespace GptSharp.Alignment;

/// <summary>What an environment answers to one turn of the model: the text the model reads next (a tool's result, a
/// user's reply), the reward for that turn, and whether the episode is over (the observation is then not shown).</summary>
/// <param name="Role">Who speaks the observation: <see cref="ChatRoles.Tool"/> or <see cref="ChatRoles.User"/>.</param>
public sealed record EnvironmentStep(string Observation, double Reward, bool Done, string Role = ChatRoles.Tool)
{
    /// <summary>The episode ends with this reward.</summary>
    public static EnvironmentStep Finish(double reward) => new("", reward, true);

    /// <summary>The model reads <paramref name="observation"/> and takes another turn.</summary>
    public static EnvironmentStep Reply(string observation, double reward = 0, string role = ChatRoles.Tool) => new(observation, reward, false, role);
}

/// <summary>
/// A world the policy acts in over several turns (an agent's tools, a user who answers back). An episode begins with
/// <see cref="Reset"/> for one prompt; each assistant turn the model writes (up to its <c>&lt;|end|&gt;</c>) goes to
/// <see cref="Step"/>, whose observation the model reads before its next turn, until the environment says done or the
/// turn limit ends it. One instance serves one episode, so an environment may keep state (a calculator's last result).
/// </summary>
public interface IEnvironment
{
    /// <summary>The conversation the episode opens with: what the model reads before its first turn (a system turn
    /// offering tools, the user's prompt).</summary>
    IReadOnlyList<ChatMessage> Reset(string prompt);

    /// <summary>The model's turn — its text, and its tool call if it made one — and what the environment answers.</summary>
    EnvironmentStep Step(ChatMessage turn);
}

/// <summary>Makes a fresh <see cref="IEnvironment"/> for every episode; <paramref name="Name"/> is how runs and errors name it.</summary>
public sealed record EnvironmentFactory(string Name, Func<IEnvironment> Create);

/// <summary>Thrown when an environment fails (throws, or gives a reward that is not a finite number): names the
/// environment, the prompt and the turn.</summary>
public sealed class EnvironmentException(string environment, string prompt, int turn, string problem, Exception? inner = null)
    : Exception($"The environment '{environment}' failed on the prompt \"{prompt}\" at turn {turn}: {problem}", inner)
{
    public string Prompt { get; } = prompt;
    /// <summary>The model's turn the environment failed on (1 for the first; 0 when it failed to reset).</summary>
    public int Turn { get; } = turn;
}

/// <summary>How an episode ended: its total reward (the sum of its steps'), the model's turns, and whether the
/// environment said done (false: the turn limit or the length limit cut it).</summary>
public sealed record EpisodeOutcome(double Reward, int Turns, bool Done);

/// <summary>
/// One episode driven inside decoding: after each <c>&lt;|end|&gt;</c> the model samples, its turn goes to the
/// environment and the observation comes back as tokens the decoder feeds in — a tool or user turn, then
/// <c>&lt;|assistant|&gt;</c> — marked as not the model's (no loss, no log-probability). When the environment says done,
/// or after the turn limit, nothing is fed and the answer stops at that <c>&lt;|end|&gt;</c>.
/// </summary>
public sealed class Episode
{
    /// <summary>Model turns an episode may take unless told otherwise.</summary>
    public const int DefaultMaxTurns = 4;

    readonly IEnvironment _environment;
    readonly string _name;
    readonly int _maxTurns;
    int _turnStart;

    public Episode(EnvironmentFactory factory, string prompt, int maxTurns = DefaultMaxTurns)
    {
        if (maxTurns < 1) throw new ArgumentOutOfRangeException(nameof(maxTurns), maxTurns, "An episode needs at least one turn.");
        (_name, _maxTurns, Prompt) = (factory.Name, maxTurns, prompt);
        try
        {
            _environment = factory.Create();
            Opening = _environment.Reset(prompt);
        }
        catch (Exception e) { throw new EnvironmentException(_name, prompt, 0, e.Message, e); }
        if (Opening is null || Opening.Count == 0 || Opening[^1].Role != ChatRoles.User)
            throw new EnvironmentException(_name, prompt, 0, "its opening conversation must end with the user's turn.");
    }

    public string Prompt { get; }
    /// <summary>What the model reads before its first turn.</summary>
    public IReadOnlyList<ChatMessage> Opening { get; }
    public int Turns { get; private set; }
    public double Reward { get; private set; }
    public bool Done { get; private set; }
    public EpisodeOutcome Outcome => new(Reward, Turns, Done);

    /// <summary>Passes one model turn to the environment; null when the episode is over (done or at the turn limit).</summary>
    public EnvironmentStep? Step(ChatMessage turn)
    {
        if (Done || Turns >= _maxTurns) return null;
        Turns++;
        EnvironmentStep step;
        try { step = _environment.Step(turn) ?? throw new InvalidOperationException("it returned no step"); }
        catch (Exception e) { throw new EnvironmentException(_name, Prompt, Turns, e.Message, e); }
        if (!double.IsFinite(step.Reward)) throw new EnvironmentException(_name, Prompt, Turns, $"its reward was {step.Reward}, not a finite number.");
        if (!step.Done && step.Role is not (ChatRoles.Tool or ChatRoles.User))
            throw new EnvironmentException(_name, Prompt, Turns, $"an observation speaks as '{step.Role}'; expected '{ChatRoles.Tool}' or '{ChatRoles.User}'.");
        Reward += step.Reward;
        Done = step.Done;
        return Done || Turns >= _maxTurns ? null : step;
    }

    /// <summary>The decoder's interjection for this episode's row (see <see cref="Inference.BatchRow.Interject"/>).</summary>
    public Func<IReadOnlyList<int>, int[]?> Interjection(GptTokenizer tokenizer)
    {
        int end = tokenizer.EndId, assistant = tokenizer.SpecialId(SpecialTokens.Assistant);
        int tool = tokenizer.SpecialId(SpecialTokens.Tool), user = tokenizer.SpecialId(SpecialTokens.User);
        return answer =>
        {
            if (answer.Count == 0 || answer[^1] != end) return null;
            var turn = Inference.ToolBox.Messages(tokenizer, [.. answer.Skip(_turnStart)])[0];   // this turn's text and call
            if (Step(turn) is not { } step) return null;
            int[] observation = [step.Role == ChatRoles.User ? user : tool, .. tokenizer.Encode(step.Observation), end, assistant];
            _turnStart = answer.Count + observation.Length;
            return observation;
        };
    }
}

/// <summary>Episodes played in one decoding batch: the way rollouts and scores run an environment.</summary>
public static class Episodes
{
    /// <summary>
    /// Plays one episode per prompt, all in one batch: prompt i samples with seed <c>options.Seed + i</c>, its opening
    /// rendered with the chat template. The first failure (an <see cref="EnvironmentException"/>) is thrown.
    /// </summary>
    /// <param name="contextLength">The model's context: each episode's answer is held to the room its own opening
    /// leaves, so prompt and answer fit one training forward.</param>
    public static (IReadOnlyList<Inference.Generation> Answers, IReadOnlyList<Episode> Episodes, IReadOnlyList<int[]> Rendered) Play(
        Inference.TokenDecoder decoder, GptTokenizer tokenizer, EnvironmentFactory environment, IReadOnlyList<string> prompts,
        Inference.SamplingOptions options, int maxTurns = Episode.DefaultMaxTurns, int? contextLength = null)
    {
        var template = new ChatTemplate(tokenizer);
        if (!template.SupportsTools)
            throw new ArgumentException($"The environment '{environment.Name}' speaks in tool and user turns, but tokenizer '{tokenizer.Spec.Name}' has no tool tokens: train a new tokenizer and model.", nameof(tokenizer));
        var episodes = prompts.Select(p => new Episode(environment, p, maxTurns)).ToList();
        var rendered = episodes.Select(e => template.RenderPrompt(e.Opening)).ToList();
        int Room(int[] opening)
        {
            if (contextLength is not { } context) return options.MaxNewTokens;
            if (context - opening.Length < 1) throw new ArgumentException($"A prompt's opening fills the model's context of {context} tokens: no room for an answer.", nameof(prompts));
            return Math.Min(options.MaxNewTokens, context - opening.Length);
        }
        var results = decoder.Generate([.. rendered.Select((r, i) => new Inference.BatchRow(r, options with { Seed = options.Seed + i, MaxNewTokens = Room(r) },
            Interject: episodes[i].Interjection(tokenizer)))]);
        foreach (var result in results)
            if (result.Error is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(result.Error);
        return ([.. results.Select(r => r.Generation)], episodes, rendered);
    }
}
