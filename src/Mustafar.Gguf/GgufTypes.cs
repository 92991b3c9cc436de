namespace Mustafar.Gguf;

/// <summary>The type ids of GGUF metadata values (as stored in the file).</summary>
public enum GgufValueType : uint
{
    /// <summary>Unsigned 8-bit integer (<see cref="byte"/>).</summary>
    UInt8 = 0,
    /// <summary>Signed 8-bit integer (<see cref="sbyte"/>).</summary>
    Int8 = 1,
    /// <summary>Unsigned 16-bit integer (<see cref="ushort"/>).</summary>
    UInt16 = 2,
    /// <summary>Signed 16-bit integer (<see cref="short"/>).</summary>
    Int16 = 3,
    /// <summary>Unsigned 32-bit integer (<see cref="uint"/>).</summary>
    UInt32 = 4,
    /// <summary>Signed 32-bit integer (<see cref="int"/>).</summary>
    Int32 = 5,
    /// <summary>32-bit float (<see cref="float"/>).</summary>
    Float32 = 6,
    /// <summary>Boolean stored as one byte (<see cref="bool"/>).</summary>
    Bool = 7,
    /// <summary>UTF-8 string with a u64 byte length (<see cref="string"/>).</summary>
    String = 8,
    /// <summary>Array: element type, u64 count, elements (a CLR array; arrays of arrays are <c>object[]</c>).</summary>
    Array = 9,
    /// <summary>Unsigned 64-bit integer (<see cref="ulong"/>).</summary>
    UInt64 = 10,
    /// <summary>Signed 64-bit integer (<see cref="long"/>).</summary>
    Int64 = 11,
    /// <summary>64-bit float (<see cref="double"/>).</summary>
    Float64 = 12,
}

/// <summary>ggml tensor types (the ids stored in GGUF tensor infos). Only the common ones are named; others still round-trip as numbers.</summary>
public enum GgmlType : uint
{
#pragma warning disable CS1591 // The names are the ggml names; a comment per quantisation format would add nothing.
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, BF16 = 30,
#pragma warning restore CS1591
}

/// <summary>One tensor's entry in the GGUF header.</summary>
/// <param name="Name">Tensor name, e.g. <c>blk.0.attn_q.weight</c>.</param>
/// <param name="Dimensions">ggml dimensions, <c>ne[0]</c> (the fastest-varying, a matrix's input dimension) first.</param>
/// <param name="Type">ggml type of the data.</param>
/// <param name="Offset">Offset of the data relative to <see cref="GgufFile.DataOffset"/>.</param>
public sealed record GgufTensorInfo(string Name, IReadOnlyList<ulong> Dimensions, GgmlType Type, ulong Offset)
{
    /// <summary>Number of elements (product of the dimensions).</summary>
    public ulong ElementCount => Dimensions.Aggregate(1UL, (a, d) => a * d);

    /// <summary>Size of the data in bytes, or null for a type whose block layout this library does not know.</summary>
    public ulong? ByteSize => GgmlTypes.Layout(Type) is (int block, int bytes) ? ElementCount / (ulong)block * (ulong)bytes : null;
}

internal static class GgmlTypes
{
    /// <summary>Elements per block and bytes per block; from ggml's block structs (e.g. Q8_0: f16 scale + 32 int8).</summary>
    public static (int Block, int Bytes)? Layout(GgmlType type) => type switch
    {
        GgmlType.F32 or GgmlType.I32 => (1, 4),
        GgmlType.F16 or GgmlType.BF16 or GgmlType.I16 => (1, 2),
        GgmlType.I8 => (1, 1),
        GgmlType.I64 or GgmlType.F64 => (1, 8),
        GgmlType.Q4_0 => (32, 18),
        GgmlType.Q4_1 => (32, 20),
        GgmlType.Q5_0 => (32, 22),
        GgmlType.Q5_1 => (32, 24),
        GgmlType.Q8_0 => (32, 34),
        GgmlType.Q8_1 => (32, 36),
        GgmlType.Q2_K => (256, 84),
        GgmlType.Q3_K => (256, 110),
        GgmlType.Q4_K => (256, 144),
        GgmlType.Q5_K => (256, 176),
        GgmlType.Q6_K => (256, 210),
        GgmlType.Q8_K => (256, 292),
        _ => null,
    };
}
