namespace Mustafar.AI;

/// <summary>A prompt does not fit in the context (KV cache) that the client was created with.</summary>
public sealed class MustafarContextOverflowException : InvalidOperationException
{
    /// <summary>Creates the exception for a prompt of <paramref name="promptTokens"/> tokens.</summary>
    public MustafarContextOverflowException(int promptTokens, int contextSize)
        : this(promptTokens, contextSize, $"The prompt has {promptTokens} tokens but the context holds {contextSize}; " +
               "shorten the prompt or raise MustafarOptions.ContextSize (the model's training context is the usual limit).")
    {
    }

    private MustafarContextOverflowException(int promptTokens, int contextSize, string message)
        : base(message)
    {
        PromptTokens = promptTokens;
        ContextSize = contextSize;
    }

    /// <summary>A prompt longer than a request's share of the context (<see cref="MustafarCacheLayout.PerRequest"/>).</summary>
    internal static MustafarContextOverflowException ForRequestShare(int promptTokens, int share, int requests) =>
        new(promptTokens, share,
            $"The prompt has {promptTokens} tokens but a request's share of the context holds {share} (MustafarOptions.ContextSize " +
            $"divided among MaxConcurrentRequests = {requests} with CacheLayout PerRequest); shorten the prompt, raise ContextSize, " +
            "lower MaxConcurrentRequests or use CacheLayout Shared.");

    /// <summary>Tokens in the rejected prompt.</summary>
    public int PromptTokens { get; }

    /// <summary>Context size in tokens that the prompt had to fit in (a request's share with <see cref="MustafarCacheLayout.PerRequest"/>).</summary>
    public int ContextSize { get; }
}
