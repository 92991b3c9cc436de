namespace Mustafar.AI.Mapping;

/// <summary>
/// Streams text while holding back what could still become a stop sequence, so that no part of a
/// stop sequence ever reaches the caller.
/// </summary>
internal sealed class StopSequenceFilter(IReadOnlyList<string> stopSequences)
{
    private readonly string[] _stops = stopSequences.Where(s => s.Length > 0).ToArray();
    private string _held = string.Empty;

    public bool Stopped { get; private set; }

    /// <summary>Adds generated text; returns what can be released now.</summary>
    public string Push(string text)
    {
        if (Stopped)
        {
            return string.Empty;
        }

        string buffer = _held + text;
        int cut = -1;
        foreach (string stop in _stops)
        {
            int at = buffer.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (cut < 0 || at < cut))
            {
                cut = at;
            }
        }

        if (cut >= 0)
        {
            Stopped = true;
            _held = string.Empty;
            return buffer[..cut];
        }

        int keep = 0;
        foreach (string stop in _stops)
        {
            for (int n = Math.Min(stop.Length - 1, buffer.Length); n > keep; n--)
            {
                if (buffer.AsSpan(buffer.Length - n).SequenceEqual(stop.AsSpan(0, n)))
                {
                    keep = n;
                    break;
                }
            }
        }

        _held = buffer[(buffer.Length - keep)..];
        return buffer[..(buffer.Length - keep)];
    }

    /// <summary>Releases what was held back when generation ends without a stop sequence.</summary>
    public string Flush()
    {
        string rest = Stopped ? string.Empty : _held;
        _held = string.Empty;
        return rest;
    }
}
