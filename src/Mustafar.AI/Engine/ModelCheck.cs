using Mustafar.Gguf;

namespace Mustafar.AI.Engine;

/// <summary>What we read from a GGUF before llama.cpp loads it, so that bad input fails with a specific message.</summary>
internal sealed record ModelShape(string Architecture, int LayerCount, int HeadCount, int KvHeadCount, int HeadDim, int HeadDimV)
{
    /// <summary>Architectures whose graphs use the ops our backend implements (llama family).</summary>
    public static readonly IReadOnlySet<string> SupportedArchitectures = new HashSet<string>(StringComparer.Ordinal) { "llama" };

    public const int MaxHeadDim = 256;

    public static ModelShape Read(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Model file '{path}' does not exist.", path);
        }

        GgufFile file = GgufFile.Read(path);
        // LLamaSharp 0.30.0 reads every metadata value as text and fails on an empty string (an ArgumentNullException
        // from inside LLamaWeights.LoadFromFile).
        string? empty = file.Metadata.FirstOrDefault(kv => kv.Value is string { Length: 0 }).Key;
        if (empty is not null)
        {
            throw new NotSupportedException(
                $"'{path}' has the metadata key {empty} with an empty string value, which LLamaSharp 0.30.0 cannot load; remove the key or give it a value.");
        }

        string arch = file.Architecture ?? throw new InvalidDataException($"'{path}' has no general.architecture key; it is not a llama.cpp model.");
        if (!SupportedArchitectures.Contains(arch))
        {
            throw new NotSupportedException(
                $"'{path}' is a '{arch}' model; Mustafar supports the architectures {string.Join(", ", SupportedArchitectures)}.");
        }

        int layers = Required(file, path, $"{arch}.block_count");
        int embd = Required(file, path, $"{arch}.embedding_length");
        int heads = Required(file, path, $"{arch}.attention.head_count");
        int kvHeads = file.TryGetInt64($"{arch}.attention.head_count_kv", out long kv) ? (int)kv : heads;
        int headDim = file.TryGetInt64($"{arch}.attention.key_length", out long kl) ? (int)kl : embd / heads;
        int headDimV = file.TryGetInt64($"{arch}.attention.value_length", out long vl) ? (int)vl : headDim;
        foreach (int size in new[] { headDim, headDimV })
        {
            if (size % 8 != 0 || size > MaxHeadDim)
            {
                throw new NotSupportedException(
                    $"'{path}' has head size {size}; the Mustafar cache supports head sizes that are multiples of 8 up to {MaxHeadDim}.");
            }
        }

        return new ModelShape(arch, layers, heads, kvHeads, headDim, headDimV);
    }

    private static int Required(GgufFile file, string path, string key) =>
        file.TryGetInt64(key, out long value) && value > 0
            ? (int)value
            : throw new InvalidDataException($"'{path}' lacks the metadata key {key} that a {file.Architecture} model needs.");
}
