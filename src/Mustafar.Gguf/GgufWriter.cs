using System.Runtime.InteropServices;
using System.Text;

namespace Mustafar.Gguf;

/// <summary>Fills <paramref name="destination"/> with a tensor's elements starting at flat index <paramref name="firstElement"/> (ne[0] fastest).</summary>
/// <param name="firstElement">Flat index of <paramref name="destination"/>[0] within the tensor.</param>
/// <param name="destination">The chunk to fill; its length is at most the writer's chunk size.</param>
public delegate void TensorFill(long firstElement, Span<float> destination);

/// <summary>
/// Writes a GGUF v3 file: metadata plus F32/F16 tensors. Tensor data is pulled chunk by chunk from a <see cref="TensorFill"/>
/// when <see cref="WriteTo"/> runs, so a model of many GB is never held in memory.
/// </summary>
public sealed class GgufWriter
{
    private const int ChunkElements = 1 << 20;
    private readonly List<KeyValuePair<string, object>> _metadata = [];
    private readonly List<(string Name, GgmlType Type, ulong[] Dims, TensorFill Fill)> _tensors = [];

    /// <summary>Alignment of tensor data; a value other than 32 is also written as <c>general.alignment</c> unless that key was set explicitly (then it is written as given, even if inconsistent).</summary>
    public uint Alignment { get; init; } = GgufFile.DefaultAlignment;

    /// <summary>The metadata keys in the order they will be written.</summary>
    public IEnumerable<string> Keys => _metadata.Select(kv => kv.Key);

    /// <summary>The tensor names in the order they will be written.</summary>
    public IEnumerable<string> TensorNames => _tensors.Select(t => t.Name);

    /// <summary>
    /// Adds or replaces a metadata value. The CLR type picks the GGUF type: byte, sbyte, ushort, short, uint (u32), int (i32),
    /// float (f32), bool, string, ulong (u64), long (i64), double (f64), a one-dimensional array of any of these, or
    /// <c>object[]</c> of such arrays. Write <c>5u</c>, not <c>5</c>, where a key must be u32.
    /// </summary>
    /// <returns>This writer.</returns>
    public GgufWriter Set(string key, object value)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentNullException.ThrowIfNull(value);
        TypeOf(value); // reject an unsupported type now, not halfway through writing
        int i = _metadata.FindIndex(kv => kv.Key == key);
        if (i >= 0)
        {
            _metadata[i] = new(key, value);
        }
        else
        {
            _metadata.Add(new(key, value));
        }

        return this;
    }

    /// <summary>Removes a metadata key (e.g. to write a deliberately incomplete model).</summary>
    /// <returns>Whether the key was present.</returns>
    public bool Remove(string key) => _metadata.RemoveAll(kv => kv.Key == key) > 0;

    /// <summary>Adds a tensor whose data is already in memory.</summary>
    /// <param name="name">Tensor name (under 64 UTF-8 bytes).</param>
    /// <param name="type"><see cref="GgmlType.F32"/> or <see cref="GgmlType.F16"/> (converted on write).</param>
    /// <param name="dims">ggml dimensions, ne[0] first.</param>
    /// <param name="data">The elements, ne[0] fastest; its length must be the product of <paramref name="dims"/>.</param>
    /// <returns>This writer.</returns>
    public GgufWriter AddTensor(string name, GgmlType type, ulong[] dims, float[] data)
    {
        ArgumentNullException.ThrowIfNull(data);
        ulong count = ElementCount(dims);
        if ((ulong)data.LongLength != count)
        {
            throw new ArgumentException($"Tensor {name} has {count} elements by its dimensions but {data.LongLength} were given.", nameof(data));
        }

        return AddTensor(name, type, dims, (first, dest) => data.AsSpan((int)first, dest.Length).CopyTo(dest));
    }

    /// <summary>Adds a tensor whose data <paramref name="fill"/> produces chunk by chunk, in order, while the file is written.</summary>
    /// <param name="name">Tensor name (under 64 UTF-8 bytes).</param>
    /// <param name="type"><see cref="GgmlType.F32"/> or <see cref="GgmlType.F16"/> (converted on write).</param>
    /// <param name="dims">ggml dimensions, ne[0] first.</param>
    /// <param name="fill">Produces the elements.</param>
    /// <returns>This writer.</returns>
    public GgufWriter AddTensor(string name, GgmlType type, ulong[] dims, TensorFill fill)
    {
        ArgumentNullException.ThrowIfNull(fill);
        if (string.IsNullOrEmpty(name) || Encoding.UTF8.GetByteCount(name) >= 64)
        {
            throw new ArgumentException($"Tensor name '{name}' must be 1 to 63 UTF-8 bytes (ggml's limit).", nameof(name));
        }

        if (type is not (GgmlType.F32 or GgmlType.F16))
        {
            throw new ArgumentException($"Tensor {name}: only F32 and F16 can be written, not {type}.", nameof(type));
        }

        ElementCount(dims);
        if (_tensors.Exists(t => t.Name == name))
        {
            throw new ArgumentException($"Tensor {name} was already added.", nameof(name));
        }

        _tensors.Add((name, type, (ulong[])dims.Clone(), fill));
        return this;
    }

    /// <summary>Removes a tensor (e.g. to write a deliberately incomplete model).</summary>
    /// <returns>Whether the tensor was present.</returns>
    public bool RemoveTensor(string name) => _tensors.RemoveAll(t => t.Name == name) > 0;

    /// <summary>Writes the file. It is written under a temporary name and then moved, so an interrupted write leaves no partial <paramref name="path"/>.</summary>
    public void WriteTo(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Alignment == 0 || (Alignment & (Alignment - 1)) != 0)
        {
            throw new InvalidOperationException($"Alignment must be a power of two; it is {Alignment}.");
        }

        string temp = path + ".partial";
        try
        {
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            using (var w = new BinaryWriter(stream, Encoding.UTF8))
            {
                Write(w);
            }

            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
    }

    private void Write(BinaryWriter w)
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("GGUF tensor data is written little-endian; this machine is big-endian.");
        }

        var metadata = _metadata.ToList();
        if (Alignment != GgufFile.DefaultAlignment && !metadata.Exists(kv => kv.Key == "general.alignment"))
        {
            metadata.Add(new("general.alignment", Alignment));
        }

        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)metadata.Count);
        foreach (var (key, value) in metadata)
        {
            WriteString(w, key);
            w.Write((uint)TypeOf(value));
            WriteValue(w, value);
        }

        // llama.cpp requires each tensor at exactly the previous one's end rounded up to the alignment.
        ulong offset = 0;
        foreach (var t in _tensors)
        {
            WriteString(w, t.Name);
            w.Write((uint)t.Dims.Length);
            foreach (ulong d in t.Dims)
            {
                w.Write(d);
            }

            w.Write((uint)t.Type);
            w.Write(offset);
            offset += Pad(ByteSize(t.Type, t.Dims));
        }

        Align(w);
        var floats = new float[ChunkElements];
        var halves = new Half[ChunkElements];
        foreach (var t in _tensors)
        {
            long total = (long)ElementCount(t.Dims);
            for (long first = 0; first < total; first += ChunkElements)
            {
                Span<float> chunk = floats.AsSpan(0, (int)Math.Min(ChunkElements, total - first));
                t.Fill(first, chunk);
                if (t.Type == GgmlType.F32)
                {
                    w.Write(MemoryMarshal.AsBytes(chunk));
                }
                else
                {
                    Span<Half> h = halves.AsSpan(0, chunk.Length);
                    for (int i = 0; i < chunk.Length; i++)
                    {
                        h[i] = (Half)chunk[i]; // round to nearest even, as ggml's fp32->fp16
                    }

                    w.Write(MemoryMarshal.AsBytes(h));
                }
            }

            Align(w);
        }
    }

    private ulong Pad(ulong n) => (n + Alignment - 1) / Alignment * Alignment;

    private void Align(BinaryWriter w)
    {
        w.Flush();
        long pos = w.BaseStream.Position;
        w.Write(new byte[(int)(Pad((ulong)pos) - (ulong)pos)]);
    }

    private static ulong ByteSize(GgmlType type, ulong[] dims) => ElementCount(dims) * (type == GgmlType.F32 ? 4UL : 2UL);

    private static ulong ElementCount(ulong[] dims)
    {
        ArgumentNullException.ThrowIfNull(dims);
        if (dims.Length is 0 or > 4 || Array.Exists(dims, d => d == 0))
        {
            throw new ArgumentException($"Tensor dimensions [{string.Join(", ", dims)}] must be 1 to 4 positive numbers.", nameof(dims));
        }

        return checked(dims.Aggregate(1UL, (a, d) => a * d));
    }

    private static readonly Dictionary<Type, GgufValueType> Scalars = new()
    {
        [typeof(byte)] = GgufValueType.UInt8, [typeof(sbyte)] = GgufValueType.Int8,
        [typeof(ushort)] = GgufValueType.UInt16, [typeof(short)] = GgufValueType.Int16,
        [typeof(uint)] = GgufValueType.UInt32, [typeof(int)] = GgufValueType.Int32,
        [typeof(ulong)] = GgufValueType.UInt64, [typeof(long)] = GgufValueType.Int64,
        [typeof(float)] = GgufValueType.Float32, [typeof(double)] = GgufValueType.Float64,
        [typeof(bool)] = GgufValueType.Bool, [typeof(string)] = GgufValueType.String,
    };

    private static GgufValueType TypeOf(object value) =>
        Scalars.TryGetValue(value.GetType(), out GgufValueType t) ? t
        : value is Array a && ElementTypeOf(a) is not null ? GgufValueType.Array
        : throw new ArgumentException($"{value.GetType().Name} is not a GGUF metadata type.", nameof(value));

    /// <summary>The GGUF element type of a one-dimensional array; <c>object[]</c> only as an array of arrays, the way GgufFile reads them.</summary>
    private static GgufValueType? ElementTypeOf(Array a)
    {
        Type e = a.GetType().GetElementType()!;
        return a.Rank != 1 ? null
            : Scalars.TryGetValue(e, out GgufValueType t) ? t
            : e == typeof(object) && Array.TrueForAll((object[])a, x => x is Array inner && ElementTypeOf(inner) is not null) ? GgufValueType.Array
            : null;
    }

    private static void WriteValue(BinaryWriter w, object value)
    {
        switch (value)
        {
            case byte v: w.Write(v); break;
            case sbyte v: w.Write(v); break;
            case ushort v: w.Write(v); break;
            case short v: w.Write(v); break;
            case uint v: w.Write(v); break;
            case int v: w.Write(v); break;
            case float v: w.Write(v); break;
            case bool v: w.Write((byte)(v ? 1 : 0)); break;
            case string v: WriteString(w, v); break;
            case ulong v: w.Write(v); break;
            case long v: w.Write(v); break;
            case double v: w.Write(v); break;
            case Array a:
                w.Write((uint)ElementTypeOf(a)!.Value);
                w.Write((ulong)a.Length);
                foreach (object e in a)
                {
                    WriteValue(w, e); // an inner array brings its own element type and count
                }

                break;
        }
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }
}
