using System.Net;
using System.Net.Sockets;

namespace GptSharp.Serving;

/// <summary>Where and how the server listens.</summary>
/// <param name="Host">An IP address or a host name that resolves; never silently every interface.</param>
/// <param name="Port">0 picks a free port (see <see cref="GptServer.Address"/>).</param>
/// <param name="ApiKey">When set, every /v1 request needs <c>Authorization: Bearer KEY</c> or <c>x-api-key: KEY</c>.</param>
/// <param name="MaxBodyBytes">Larger request bodies are answered 413.</param>
/// <param name="MaxConcurrent">Requests decoded at once per model (KV-cache slots); more wait for a free slot.</param>
/// <param name="MaxQueue">Choices that may wait for a batch per model (a request of <c>n</c> choices takes <c>n</c> places, all
/// or none); a request that does not fit is answered 429 with Retry-After, one with more choices than this 400.</param>
/// <param name="AllowedHosts">Host header names served besides loopback names and <paramref name="Host"/> itself
/// (guards a keyless local server against DNS rebinding); <c>*</c> allows any.</param>
/// <param name="PrefixCache">Reuse the KV cache of an earlier request whose tokens a new prompt starts with.</param>
/// <param name="RequestTimeoutSeconds">A generation still running after this long is stopped (0: never).</param>
/// <param name="ShutdownGraceSeconds">On shutdown, how long running generations may go on before they are stopped.</param>
/// <param name="AdminKey">When set, <c>POST</c> and <c>DELETE /v1/adapters</c> load and unload LoRA adapters at run time with it (and only with it); unset, they are refused.</param>
/// <param name="StoredResponses">Responses API answers kept for <c>previous_response_id</c> and GET (the oldest evicted first; 0 stores none).</param>
/// <param name="PromptLookupTokens">Speculative decoding by prompt lookup: tokens drafted per request and step (0: off; the CPU engine only).</param>
/// <param name="PrefillChunk">Prompt tokens read between two decode steps: smaller chunks let a newly arrived prompt
/// and the running answers in sooner, larger ones read long prompts in fewer passes.</param>
public sealed record ServerOptions(string Host = "127.0.0.1", int Port = 8000, string? ApiKey = null, long MaxBodyBytes = 1 << 20,
    int MaxConcurrent = 4, int MaxQueue = 64, IReadOnlyList<string>? AllowedHosts = null,
    bool PrefixCache = true, double RequestTimeoutSeconds = 600, double ShutdownGraceSeconds = 10, int StoredResponses = 1000, string? AdminKey = null,
    int PromptLookupTokens = 0, int PrefillChunk = 256)
{
    /// <summary>Checks every field; errors name the option and say what is expected.</summary>
    public ServerOptions Validate()
    {
        if (Port is < 0 or > 65535) throw new ArgumentException($"--port {Port} is not a TCP port: expected 0 (any free port) to 65535.");
        if (MaxConcurrent < 1) throw new ArgumentException($"--max-concurrent {MaxConcurrent}: expected at least 1 request per batch.");
        if (MaxQueue < 1) throw new ArgumentException($"--max-queue {MaxQueue}: expected at least 1 waiting choice.");
        if (MaxBodyBytes < 1) throw new ArgumentException($"The body limit {MaxBodyBytes} must be at least 1 byte.");
        if (RequestTimeoutSeconds < 0 || double.IsNaN(RequestTimeoutSeconds))
            throw new ArgumentException($"--request-timeout {RequestTimeoutSeconds}: expected seconds >= 0 (0: no limit).");
        if (ShutdownGraceSeconds < 0 || double.IsNaN(ShutdownGraceSeconds))
            throw new ArgumentException($"--shutdown-grace {ShutdownGraceSeconds}: expected seconds >= 0.");
        if (StoredResponses < 0) throw new ArgumentException($"--stored-responses {StoredResponses}: expected 0 (store none) or more.");
        if (AdminKey is { Length: 0 }) throw new ArgumentException("--admin-key is empty: give a key, or leave the option out.");
        if (ApiKey is { Length: 0 }) throw new ArgumentException("--api-key is empty: give a key, or leave the option out.");
        if (PromptLookupTokens is < 0 or > Inference.SpeculativeDecoding.MaxDraftTokens)
            throw new ArgumentException($"--draft-tokens {PromptLookupTokens}: expected 1 to {Inference.SpeculativeDecoding.MaxDraftTokens} (0: no drafting).");
        if (PrefillChunk < 1) throw new ArgumentException($"--prefill-chunk {PrefillChunk}: expected at least 1 prompt token a step.");
        return this;
    }

    /// <summary>
    /// The address to bind: <see cref="Host"/> parsed as an IP address, or resolved by DNS (IPv4 first). A name that
    /// does not resolve is an error: a typo must never widen the server to every interface.
    /// </summary>
    public IPAddress BindAddress()
    {
        string host = Host.Trim();
        if (host.StartsWith('[') && host.EndsWith(']')) host = host[1..^1];
        if (host.Length == 0) throw new ArgumentException("--host is empty: give an address such as 127.0.0.1.");
        if (IPAddress.TryParse(host, out var address) && LooksLikeAddress(host)) return address;
        if (host.All(c => char.IsAsciiDigit(c) || c == '.'))
            throw new ArgumentException($"--host '{Host}' is not a valid IP address (each of the four numbers is 0 to 255).");
        if (host.Equals("localhost", StringComparison.OrdinalIgnoreCase)) return IPAddress.Loopback;
        IPAddress[] resolved;
        try { resolved = Dns.GetHostAddresses(host); }
        catch (Exception e) when (e is SocketException or ArgumentException)
        {
            throw new ArgumentException($"--host '{Host}' is neither an IP address nor a host name that resolves ({e.Message}).", e);
        }
        return resolved.OrderBy(a => a.AddressFamily != AddressFamily.InterNetwork).FirstOrDefault()
            ?? throw new ArgumentException($"--host '{Host}' resolves to no address.");
    }

    // IPAddress.TryParse also takes shorthand such as "1" or "127.1"; only full dotted quads or IPv6 are meant here.
    static bool LooksLikeAddress(string host) => host.Contains(':') || host.Split('.').Length == 4;
}

