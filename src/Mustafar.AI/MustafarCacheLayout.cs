namespace Mustafar.AI;

/// <summary>How the requests that run together share the <see cref="MustafarOptions.ContextSize"/> cells of the KV cache.</summary>
public enum MustafarCacheLayout
{
    /// <summary>
    /// One pool of cells: a request may use up to <see cref="MustafarOptions.ContextSize"/> tokens while the others use
    /// the rest, and finished requests' caches can be reused (<see cref="MustafarOptions.CachedPrefixes"/>). Every decode
    /// step, llama.cpp builds each running request's attention mask over all used cells on the CPU, so the host time a
    /// step takes grows with running requests times used cells.
    /// </summary>
    Shared,

    /// <summary>
    /// Each of the <see cref="MustafarOptions.MaxConcurrentRequests"/> requests owns <c>ContextSize / MaxConcurrentRequests</c>
    /// cells (a llama.cpp stream of its own): a request holds at most that many tokens, and
    /// <see cref="MustafarOptions.CachedPrefixes"/> must be 0, but a step's masks and attention cover only each request's
    /// own cells. For many long requests decoding together.
    /// </summary>
    PerRequest,
}
