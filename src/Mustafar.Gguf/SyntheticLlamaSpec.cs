namespace Mustafar.Gguf;

/// <summary>The shape of a generated llama model; see <see cref="SyntheticLlama"/>. Defaults give a tiny F32 model.</summary>
public sealed record SyntheticLlamaSpec
{
    private readonly int? _headDim;

    /// <summary>A tiny model for fast tests: n_embd 128, 4 heads / 2 KV heads (head_dim 32), 2 layers, ffn 256, ctx 512, F32.</summary>
    public static SyntheticLlamaSpec Tiny => new();

    /// <summary>A small model with Llama's attention shape: head_dim 128, GQA 4 (8 heads / 2 KV heads), n_embd 1024, 2 layers, ffn 1024, ctx 2048, F32.</summary>
    public static SyntheticLlamaSpec SmallHd128 => new()
    {
        Name = "synthetic-llama-hd128",
        EmbeddingLength = 1024,
        HeadCount = 8,
        KvHeadCount = 2,
        LayerCount = 2,
        FeedForwardLength = 1024,
        ContextLength = 2048,
    };

    /// <summary>Llama-3-8B's shape in F16 (about 16 GB; for benchmarks, not CI): 32 layers, n_embd 4096, 32/8 heads, head_dim 128, ffn 14336, ctx 32768, rope base 500000.</summary>
    public static SyntheticLlamaSpec Llama3_8B_F16 => new()
    {
        Name = "synthetic-llama3-8b-f16",
        EmbeddingLength = 4096,
        HeadCount = 32,
        KvHeadCount = 8,
        LayerCount = 32,
        FeedForwardLength = 14336,
        ContextLength = 32768,
        RopeFreqBase = 500000f,
        WeightType = GgmlType.F16,
    };

    /// <summary><c>general.name</c>.</summary>
    public string Name { get; init; } = "synthetic-llama";

    /// <summary>Model width n_embd.</summary>
    public int EmbeddingLength { get; init; } = 128;

    /// <summary>Number of transformer blocks.</summary>
    public int LayerCount { get; init; } = 2;

    /// <summary>Number of query heads.</summary>
    public int HeadCount { get; init; } = 4;

    /// <summary>Number of key/value heads; must divide <see cref="HeadCount"/>.</summary>
    public int KvHeadCount { get; init; } = 2;

    /// <summary>Size of one head; defaults to EmbeddingLength / HeadCount (recomputed after <c>with</c> unless set).</summary>
    public int HeadDim
    {
        get => _headDim ?? (HeadCount > 0 ? EmbeddingLength / HeadCount : 0);
        init => _headDim = value;
    }

    /// <summary>Hidden size of the SwiGLU feed-forward network.</summary>
    public int FeedForwardLength { get; init; } = 256;

    /// <summary>Training context length (<c>llama.context_length</c>).</summary>
    public int ContextLength { get; init; } = 512;

    /// <summary>RoPE base frequency (10000 for Llama 2, 500000 for Llama 3).</summary>
    public float RopeFreqBase { get; init; } = 10000f;

    /// <summary>Type of the weight matrices and token embeddings: <see cref="GgmlType.F32"/> or <see cref="GgmlType.F16"/>; norms are always F32.</summary>
    public GgmlType WeightType { get; init; } = GgmlType.F32;

    /// <summary>Seed of the weights; the same spec always gives a byte-identical file.</summary>
    public ulong Seed { get; init; } = 1;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first inconsistent field.</summary>
    public void Validate()
    {
        foreach (var (value, name) in new[] { (EmbeddingLength, nameof(EmbeddingLength)), (LayerCount, nameof(LayerCount)), (HeadCount, nameof(HeadCount)),
            (KvHeadCount, nameof(KvHeadCount)), (HeadDim, nameof(HeadDim)), (FeedForwardLength, nameof(FeedForwardLength)), (ContextLength, nameof(ContextLength)) })
        {
            Require(value > 0, $"{name} must be positive; it is {value}.");
        }

        Require(HeadCount % KvHeadCount == 0, $"HeadCount ({HeadCount}) must be a multiple of KvHeadCount ({KvHeadCount}).");
        Require(HeadDim % 2 == 0, $"HeadDim must be even for RoPE; it is {HeadDim}.");
        Require(WeightType is GgmlType.F32 or GgmlType.F16, $"WeightType must be F32 or F16; it is {WeightType}.");

        static void Require(bool ok, string message)
        {
            if (!ok)
            {
                throw new ArgumentException("SyntheticLlamaSpec." + message);
            }
        }
    }
}
