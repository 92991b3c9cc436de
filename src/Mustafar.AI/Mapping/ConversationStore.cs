using Microsoft.Extensions.AI;

namespace Mustafar.AI.Mapping;

/// <summary>
/// The messages of conversations that callers continue by ConversationId, the least recently used
/// forgotten beyond a bound. With prefix reuse on, a continued conversation's history is also still
/// in the KV cache, so it is not decoded again.
/// </summary>
internal sealed class ConversationStore(int capacity = 256)
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, (List<ChatMessage> Messages, long Used)> _conversations = new(StringComparer.Ordinal);
    private long _clock;

    public IReadOnlyList<ChatMessage> Get(string id)
    {
        lock (_gate)
        {
            return _conversations.TryGetValue(id, out var c) ? [.. c.Messages] : [];
        }
    }

    public void Append(string id, IEnumerable<ChatMessage> turn, ChatMessage answer)
    {
        lock (_gate)
        {
            var messages = _conversations.TryGetValue(id, out var c) ? c.Messages : [];
            messages.AddRange(turn);
            messages.Add(answer);
            _conversations[id] = (messages, ++_clock);
            if (_conversations.Count > capacity)
            {
                _conversations.Remove(_conversations.MinBy(kv => kv.Value.Used).Key);
            }
        }
    }
}
