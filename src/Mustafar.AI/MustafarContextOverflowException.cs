namespace Mustafar.AI;

/// <summary>A prompt does not fit in the context (KV cache) that the client was created with.</summary>
public sealed class MustafarContextOverflowException : InvalidOperationException
{
    /// <summary>Creates the exception for a prompt of <paramref name="promptTokens"/> tokens.</summary>
    public MustafarContextOverflowException(int promptTokens, int contextSize)
        : base($"The prompt has {promptTokens} tokens but the context holds {contextSize}; " +
               "shorten the prompt or raise MustafarOptions.ContextSize (the model's training context is the usual limit).")
    {
        PromptTokens = promptTokens;
        ContextSize = contextSize;
    }

    /// <summary>Tokens in the rejected prompt.</summary>
    public int PromptTokens { get; }

    /// <summary>Context size in tokens.</summary>
    public int ContextSize { get; }
}
