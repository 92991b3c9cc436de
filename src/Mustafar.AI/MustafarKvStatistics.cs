namespace Mustafar.AI;

/// <summary>
/// Memory of one client's KV cache as the Mustafar backend holds it. Returned by <c>GetService</c>
/// and reported in <c>UsageDetails.AdditionalCounts</c>.
/// </summary>
/// <param name="KvBytes">Bytes allocated for the KV cache (compressed records plus the dense window pool).</param>
/// <param name="KvDenseBytes">Bytes a dense f16 cache of the same cells would take.</param>
/// <param name="CacheTensors">Cache tensors (K and V per layer).</param>
/// <param name="Elements">Cache elements (cells x channels over all cache tensors).</param>
/// <param name="DenseRows">Cache rows (one cell of one tensor) held dense now: the local windows.</param>
/// <param name="CompressedRows">Cache rows held pruned and compressed now.</param>
public sealed record MustafarKvStatistics(long KvBytes, long KvDenseBytes, int CacheTensors, long Elements, long DenseRows, long CompressedRows)
{
    /// <summary>KvBytes over KvDenseBytes (about 0.56 at s = 0.5 and 0.38 at s = 0.7 for head size 128).</summary>
    public double Ratio => KvDenseBytes == 0 ? 0 : (double)KvBytes / KvDenseBytes;

    /// <summary>Allocated bytes per cache element (2 for a dense f16 cache).</summary>
    public double BytesPerElement => Elements == 0 ? 0 : (double)KvBytes / Elements;
}
