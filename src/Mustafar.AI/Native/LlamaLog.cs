using LLama.Native;
using Microsoft.Extensions.Logging;

namespace Mustafar.AI.Native;

/// <summary>
/// Routes llama.cpp's and ggml's log (one process-wide callback in llama.cpp) to whoever listens:
/// the clients' ILoggers and, in tests, observers that assert on llama.cpp's own lines.
/// </summary>
internal static class LlamaLog
{
    private static readonly Lock Gate = new();
    private static readonly List<Action<LLamaLogLevel, string>> Listeners = [];
    // Kept in a field so that the delegate llama.cpp calls back into is never collected.
    private static readonly NativeLogConfig.LLamaLogCallback Callback = OnLog;
    private static bool _installed;
    private static string _pending = string.Empty;

    public static void Install()
    {
        lock (Gate)
        {
            if (_installed)
            {
                return;
            }

            NativeLogConfig.llama_log_set(Callback);
            _installed = true;
        }
    }

    /// <summary>Listens to complete log lines until the returned handle is disposed.</summary>
    public static IDisposable Subscribe(Action<LLamaLogLevel, string> listener)
    {
        Install();
        lock (Gate)
        {
            Listeners.Add(listener);
        }

        return new Subscription(listener);
    }

    private static void OnLog(LLamaLogLevel level, string message)
    {
        Action<LLamaLogLevel, string>[] listeners;
        List<string> lines = [];
        lock (Gate)
        {
            // llama.cpp sends pieces of lines (CONT); hand out whole lines only.
            string text = _pending + message;
            int newline;
            while ((newline = text.IndexOf('\n')) >= 0)
            {
                lines.Add(text[..newline]);
                text = text[(newline + 1)..];
            }

            _pending = text;
            listeners = [.. Listeners];
        }

        foreach (string line in lines)
        {
            foreach (var listener in listeners)
            {
                listener(level, line);
            }
        }
    }

    private sealed class Subscription(Action<LLamaLogLevel, string> listener) : IDisposable
    {
        public void Dispose()
        {
            lock (Gate)
            {
                Listeners.Remove(listener);
            }
        }
    }

    internal static LogLevel ToLogLevel(LLamaLogLevel level) => level switch
    {
        LLamaLogLevel.Error => LogLevel.Error,
        LLamaLogLevel.Warning => LogLevel.Warning,
        LLamaLogLevel.Info => LogLevel.Debug,
        _ => LogLevel.Trace,
    };
}
