namespace Mustafar.Gguf;

/// <summary>The header of a GGUF file: version, metadata and tensor infos (not the tensor data).</summary>
public sealed class GgufFile
{
    /// <summary>The file's first four bytes, "GGUF", read as a little-endian u32.</summary>
    public const uint Magic = 0x46554747;

    /// <summary>Alignment of tensor data when the file has no <c>general.alignment</c> key.</summary>
    public const uint DefaultAlignment = 32;

    internal GgufFile(string path, uint version, Dictionary<string, object> metadata, List<GgufTensorInfo> tensors, uint alignment, long dataOffset)
    {
        Path = path;
        Version = version;
        Metadata = metadata;
        Tensors = tensors;
        Alignment = alignment;
        DataOffset = dataOffset;
    }

    /// <summary>The path the file was read from.</summary>
    public string Path { get; }

    /// <summary>GGUF format version (2 or 3).</summary>
    public uint Version { get; }

    /// <summary>
    /// Metadata in file order. Values are CLR types matching <see cref="GgufValueType"/>: byte, sbyte, ushort, short, uint,
    /// int, float, bool, string, ulong, long, double, or a typed array of those (<c>object[]</c> for arrays of arrays).
    /// </summary>
    public IReadOnlyDictionary<string, object> Metadata { get; }

    /// <summary>Tensor infos in file order.</summary>
    public IReadOnlyList<GgufTensorInfo> Tensors { get; }

    /// <summary>Alignment of tensor data (<c>general.alignment</c>, default 32).</summary>
    public uint Alignment { get; }

    /// <summary>Absolute file offset where tensor data starts; tensor offsets are relative to it.</summary>
    public long DataOffset { get; }

    /// <summary>The model architecture (<c>general.architecture</c>), or null when the key is missing or not a string.</summary>
    public string? Architecture => TryGetString("general.architecture", out string? value) ? value : null;

    /// <summary>Parses the header of the GGUF file at <paramref name="path"/>.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not GGUF, is truncated or corrupt.</exception>
    /// <exception cref="NotSupportedException">The GGUF version is not 2 or 3.</exception>
    public static GgufFile Read(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"GGUF file '{path}' does not exist.", path);
        }

        using var reader = new GgufReader(path);
        return reader.ReadFile();
    }

    /// <summary>Returns the string value of <paramref name="key"/>.</summary>
    /// <exception cref="KeyNotFoundException">The key is missing.</exception>
    /// <exception cref="InvalidDataException">The value is not a string.</exception>
    public string GetString(string key) => Metadata.TryGetValue(key, out object? value)
        ? value as string ?? throw new InvalidDataException($"'{Path}': metadata key {key} is a {Describe(value)}, not a string.")
        : throw new KeyNotFoundException($"'{Path}' has no metadata key {key}.");

    /// <summary>Gets the string value of <paramref name="key"/>; false when missing or not a string.</summary>
    public bool TryGetString(string key, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out string? value)
    {
        value = Metadata.TryGetValue(key, out object? v) ? v as string : null;
        return value is not null;
    }

    /// <summary>Gets an integer value of any GGUF integer type as u32; false when missing, not an integer or out of range.</summary>
    public bool TryGetUInt32(string key, out uint value)
    {
        bool ok = TryGetInteger(key, out Int128 v) && v >= uint.MinValue && v <= uint.MaxValue;
        value = ok ? (uint)v : 0;
        return ok;
    }

    /// <summary>Gets an integer value of any GGUF integer type as i64; false when missing, not an integer or out of range.</summary>
    public bool TryGetInt64(string key, out long value)
    {
        bool ok = TryGetInteger(key, out Int128 v) && v >= long.MinValue && v <= long.MaxValue;
        value = ok ? (long)v : 0;
        return ok;
    }

    /// <summary>Gets an array value as <typeparamref name="T"/>[] (e.g. string[] for tokenizer.ggml.tokens); false otherwise.</summary>
    public bool TryGetArray<T>(string key, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out T[]? value)
    {
        value = Metadata.TryGetValue(key, out object? v) ? v as T[] : null;
        return value is not null;
    }

    private bool TryGetInteger(string key, out Int128 value)
    {
        // Int128 holds every GGUF integer type, so one range check serves all targets.
        (bool ok, value) = Metadata.TryGetValue(key, out object? v) ? v switch
        {
            byte x => (true, (Int128)x),
            sbyte x => (true, x),
            ushort x => (true, x),
            short x => (true, x),
            uint x => (true, x),
            int x => (true, x),
            ulong x => (true, x),
            long x => (true, x),
            _ => (false, Int128.Zero),
        } : (false, Int128.Zero);
        return ok;
    }

    private static string Describe(object value) => value is Array a ? $"{a.GetType().GetElementType()!.Name} array" : value.GetType().Name;
}
