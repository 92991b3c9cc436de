using System.Text;

namespace Mustafar.Gguf;

/// <summary>Bounds-checked sequential reader for a GGUF header: every length is checked against the bytes left in the file before anything is allocated.</summary>
internal sealed class GgufReader : IDisposable
{
    private const int MaxArrayDepth = 8;
    private const int MaxDims = 4; // GGML_MAX_DIMS
    private readonly string _path;
    private readonly BinaryReader _in;
    private readonly long _length;
    private long _pos;
    private string _what = "the header"; // what is being read, for error messages

    public GgufReader(string path)
    {
        _path = path;
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        _length = stream.Length;
        _in = new BinaryReader(stream, Encoding.UTF8, leaveOpen: false);
    }

    public void Dispose() => _in.Dispose();

    public GgufFile ReadFile()
    {
        _what = "the magic";
        if (_length < 4 || U32() != GgufFile.Magic)
        {
            _in.BaseStream.Position = 0;
            byte[] head = _in.ReadBytes(4);
            string shown = string.Join(" ", head.Select(b => $"0x{b:X2}"));
            throw new InvalidDataException($"'{_path}' is not a GGUF file (it starts with bytes {(head.Length == 0 ? "<empty file>" : shown)}).");
        }

        _what = "the version";
        uint version = U32();
        if (version is not (2 or 3))
        {
            throw new NotSupportedException($"'{_path}' is GGUF version {version}; only versions 2 and 3 are supported"
                + (version > 0xFFFF ? " (a byte-swapped version suggests a big-endian file)." : "."));
        }

        _what = "the tensor count";
        ulong tensorCount = U64();
        _what = "the metadata count";
        ulong kvCount = U64();
        // Smallest possible entries: a KV is key length + type + 1 byte, a tensor info is name length + n_dims + type + offset.
        CheckCount(kvCount, 8 + 4 + 1, "metadata entries");
        CheckCount(tensorCount, 8 + 4 + 4 + 8, "tensor infos");

        var metadata = new Dictionary<string, object>((int)kvCount, StringComparer.Ordinal);
        for (ulong i = 0; i < kvCount; i++)
        {
            _what = $"the key of metadata entry {i}";
            string key = Str();
            _what = $"the type of metadata key {key}";
            var type = (GgufValueType)U32();
            _what = $"the value of metadata key {key}";
            if (!metadata.TryAdd(key, Value(type, 0)))
            {
                throw new InvalidDataException($"'{_path}' has metadata key {key} twice.");
            }
        }

        var tensors = new List<GgufTensorInfo>((int)tensorCount);
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (ulong i = 0; i < tensorCount; i++)
        {
            _what = $"the name of tensor {i}";
            string name = Str();
            _what = $"the info of tensor {name}";
            uint nDims = U32();
            if (nDims is 0 or > MaxDims)
            {
                throw new InvalidDataException($"'{_path}': tensor {name} has {nDims} dimensions; ggml allows 1 to {MaxDims}.");
            }

            var dims = new ulong[nDims];
            UInt128 elements = 1; // wide enough that the product of four u64 dims cannot wrap
            for (int d = 0; d < nDims; d++)
            {
                elements *= dims[d] = U64();
                if (elements > long.MaxValue)
                {
                    throw new InvalidDataException($"'{_path}': tensor {name} has dimensions too large for ggml.");
                }
            }

            var info = new GgufTensorInfo(name, dims, (GgmlType)U32(), U64());
            if (!names.Add(name))
            {
                throw new InvalidDataException($"'{_path}' has tensor {name} twice.");
            }

            tensors.Add(info);
        }

        uint alignment = GgufFile.DefaultAlignment;
        if (metadata.TryGetValue("general.alignment", out object? a))
        {
            alignment = a is uint u && u != 0 && (u & (u - 1)) == 0
                ? u
                : throw new InvalidDataException($"'{_path}': general.alignment must be a power-of-two u32; it is {a}.");
        }

        long dataOffset = (_pos + alignment - 1) / alignment * alignment;
        foreach (GgufTensorInfo t in tensors)
        {
            // Only the data of types with a known layout can be checked; it must lie inside the file.
            if (GgmlTypes.Layout(t.Type) is (int block, int bytes)
                && (UInt128)(ulong)dataOffset + t.Offset + (UInt128)t.ElementCount / (uint)block * (uint)bytes > (ulong)_length)
            {
                throw new InvalidDataException(
                    $"'{_path}' is truncated: the data of tensor {t.Name} ends past the end of the file ({_length} bytes).");
            }
        }

        return new GgufFile(_path, version, metadata, tensors, alignment, dataOffset);
    }

    private object Value(GgufValueType type, int depth) => type switch
    {
        GgufValueType.UInt8 => Take(1, _in.ReadByte),
        GgufValueType.Int8 => Take(1, _in.ReadSByte),
        GgufValueType.UInt16 => Take(2, _in.ReadUInt16),
        GgufValueType.Int16 => Take(2, _in.ReadInt16),
        GgufValueType.UInt32 => U32(),
        GgufValueType.Int32 => Take(4, _in.ReadInt32),
        GgufValueType.Float32 => Take(4, _in.ReadSingle),
        GgufValueType.Bool => Take(1, _in.ReadByte) != 0,
        GgufValueType.String => Str(),
        GgufValueType.Array => Array(depth + 1),
        GgufValueType.UInt64 => U64(),
        GgufValueType.Int64 => Take(8, _in.ReadInt64),
        GgufValueType.Float64 => Take(8, _in.ReadDouble),
        _ => throw new InvalidDataException($"'{_path}': {_what} has unknown GGUF value type {(uint)type} at offset {_pos - 4}."),
    };

    private object Array(int depth)
    {
        if (depth > MaxArrayDepth)
        {
            throw new InvalidDataException($"'{_path}': {_what} nests arrays more than {MaxArrayDepth} deep.");
        }

        var type = (GgufValueType)U32();
        ulong n = U64();
        CheckCount(n, type switch
        {
            GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
            GgufValueType.UInt16 or GgufValueType.Int16 => 2,
            GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
            GgufValueType.Array => 12,
            _ => 8,
        }, "array elements");
        return type switch
        {
            GgufValueType.UInt8 => Fill(n, 1, _in.ReadByte),
            GgufValueType.Int8 => Fill(n, 1, _in.ReadSByte),
            GgufValueType.UInt16 => Fill(n, 2, _in.ReadUInt16),
            GgufValueType.Int16 => Fill(n, 2, _in.ReadInt16),
            GgufValueType.UInt32 => Fill(n, 4, _in.ReadUInt32),
            GgufValueType.Int32 => Fill(n, 4, _in.ReadInt32),
            GgufValueType.Float32 => Fill(n, 4, _in.ReadSingle),
            GgufValueType.Bool => Fill(n, 1, () => _in.ReadByte() != 0),
            GgufValueType.String => Fill(n, 0, Str),
            GgufValueType.UInt64 => Fill(n, 8, _in.ReadUInt64),
            GgufValueType.Int64 => Fill(n, 8, _in.ReadInt64),
            GgufValueType.Float64 => Fill(n, 8, _in.ReadDouble),
            GgufValueType.Array => Fill(n, 0, () => Array(depth + 1)),
            _ => throw new InvalidDataException($"'{_path}': {_what} is an array of unknown GGUF value type {(uint)type}."),
        };
    }

    /// <summary>Reads <paramref name="n"/> elements; <paramref name="size"/> is the fixed size of one, 0 for those that check their own bytes.</summary>
    private T[] Fill<T>(ulong n, int size, Func<T> read)
    {
        var items = new T[n];
        for (ulong i = 0; i < n; i++)
        {
            items[i] = Take(size, read);
        }

        return items;
    }

    private uint U32() => Take(4, _in.ReadUInt32);

    private ulong U64() => Take(8, _in.ReadUInt64);

    private string Str()
    {
        ulong n = U64();
        CheckCount(n, 1, "string bytes");
        Need((long)n);
        return Encoding.UTF8.GetString(_in.ReadBytes((int)n));
    }

    private T Take<T>(int size, Func<T> read)
    {
        Need(size);
        return read();
    }

    private void Need(long bytes)
    {
        if (bytes > _length - _pos)
        {
            throw new InvalidDataException(
                $"'{_path}' is truncated: reading {_what} needs {bytes} bytes at offset {_pos}, but the file has only {_length - _pos} left.");
        }

        _pos += bytes;
    }

    /// <summary>Rejects a count whose smallest encoding would not fit in the rest of the file (or in a CLR array).</summary>
    private void CheckCount(ulong count, int minBytesEach, string what)
    {
        if (count > (ulong)(_length - _pos) / (ulong)minBytesEach || count > int.MaxValue)
        {
            throw new InvalidDataException(
                $"'{_path}' is truncated or corrupt: {_what} claims {count} {what} at offset {_pos}, but the file has only {_length - _pos} bytes left.");
        }
    }
}
