using LLama.Native;
using Mustafar.AI.Native;

namespace Mustafar.AI.Engine;

/// <summary>
/// A request's samplers: the grammar (when its output has a required format) as a chain of its own, applied
/// before the others, so that a vocabulary with no allowed token fails the request (<see cref="LlamaCalls.Sample"/>).
/// </summary>
internal sealed class TokenSampler(SafeLLamaSamplerChainHandle? grammar, SafeLLamaSamplerChainHandle chain) : IDisposable
{
    /// <summary>The token for row <paramref name="index"/> of the context's last logits.</summary>
    /// <exception cref="InvalidOperationException">The grammar allows no token, or llama.cpp's sampling threw.</exception>
    public LLamaToken Sample(SafeLLamaContextHandle context, int index, int vocabSize) =>
        LlamaCalls.Sample(context, index, vocabSize, grammar, chain);

    public void Dispose()
    {
        grammar?.Dispose();
        chain.Dispose();
    }
}
