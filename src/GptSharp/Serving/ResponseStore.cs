namespace GptSharp.Serving;

/// <summary>A stored Responses API answer: its JSON (for GET) and the conversation it ends (for <c>previous_response_id</c>).</summary>
sealed record StoredResponse(object Json, IReadOnlyList<ConversationEntry> Conversation);

/// <summary>
/// The Responses API's stored answers, at most <c>capacity</c>, the oldest evicted first, so a long-running server's
/// memory stays bounded. Safe to use from many requests at once.
/// </summary>
sealed class ResponseStore(int capacity)
{
    readonly Dictionary<string, LinkedListNode<(string Id, StoredResponse Response)>> _byId = [];
    readonly LinkedList<(string Id, StoredResponse Response)> _order = new();   // oldest first
    readonly Lock _gate = new();

    public int Count { get { lock (_gate) return _byId.Count; } }

    public void Add(string id, StoredResponse response)
    {
        if (capacity == 0) return;
        lock (_gate)
        {
            if (_byId.Remove(id, out var old)) _order.Remove(old);
            _byId[id] = _order.AddLast((id, response));
            while (_byId.Count > capacity)
            {
                _byId.Remove(_order.First!.Value.Id);
                _order.RemoveFirst();
            }
        }
    }

    public StoredResponse? Find(string id)
    {
        lock (_gate) return _byId.TryGetValue(id, out var node) ? node.Value.Response : null;
    }

    public bool Remove(string id)
    {
        lock (_gate)
        {
            if (!_byId.Remove(id, out var node)) return false;
            _order.Remove(node);
            return true;
        }
    }
}
