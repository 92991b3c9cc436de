namespace Mustafar.AI;

/// <summary>Memory of the KV cache, as the Mustafar backend allocated it. Returned by <c>GetService</c>.</summary>
/// <param name="KvBytes">Bytes allocated for the KV cache tensors.</param>
/// <param name="KvDenseBytes">Bytes an f16 cache of the same cells would take.</param>
/// <param name="CacheTensors">Number of cache tensors (K and V per layer).</param>
public sealed record MustafarKvStatistics(long KvBytes, long KvDenseBytes, int CacheTensors)
{
    /// <summary>KvBytes over KvDenseBytes (1 for a dense f16 cache).</summary>
    public double Ratio => KvDenseBytes == 0 ? 0 : (double)KvBytes / KvDenseBytes;
}
