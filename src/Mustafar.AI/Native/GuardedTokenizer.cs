using System.Runtime.InteropServices;
using System.Text;
using LLama.Native;

namespace Mustafar.AI.Native;

/// <summary>
/// Tokenization by llama.cpp's <c>llama_tokenize</c>, which our library calls behind a C++ catch
/// (<c>mustafar_tokenize</c>): llama.cpp throws from inside tokenization when an SPM vocabulary has neither a
/// token nor a byte token for a character of the text (a tiny model's vocabulary, for one), and a C++ exception
/// that reaches .NET's P/Invoke frame ends the process. Here the text is refused with an
/// <see cref="ArgumentException"/> that names the character.
/// </summary>
internal static unsafe partial class GuardedTokenizer
{
    private const string LlamaLibrary = "libllama.so";  // by soname: the copy LLamaSharp has loaded
    private const int ErrorBytes = 512;

    private static readonly Lazy<(IntPtr Guard, IntPtr Tokenize)> Exports = new(() =>
        (NativeLibrary.GetExport(NativeBackend.Library, "mustafar_tokenize"), NativeLibrary.GetExport(NativeLibrary.Load(LlamaLibrary), "llama_tokenize")),
        LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The tokens of <paramref name="text"/>, as llama.cpp's tokenizer gives them.</summary>
    /// <exception cref="ArgumentException">The model's tokenizer cannot encode the text.</exception>
    public static LLamaToken[] Tokenize(SafeLlamaModelHandle model, string text, bool addBos, bool special)
    {
        ArgumentNullException.ThrowIfNull(text);
        bool added = false;
        model.DangerousAddRef(ref added);
        try
        {
            IntPtr vocab = llama_model_get_vocab(model.DangerousGetHandle());
            if (TryTokenize(vocab, text, addBos, special, out var tokens, out string error))
            {
                return tokens;
            }

            throw new ArgumentException(Explain(vocab, text, error), nameof(text));
        }
        finally
        {
            if (added)
            {
                model.DangerousRelease();
            }
        }
    }

    private static bool TryTokenize(IntPtr vocab, string text, bool addBos, bool special, out LLamaToken[] tokens, out string error)
    {
        var guard = (delegate* unmanaged[Cdecl]<IntPtr, IntPtr, byte*, int, int*, int, int, int, int*, byte*, int, int>)Exports.Value.Guard;
        int length = Encoding.UTF8.GetByteCount(text);
        var utf8 = new byte[length + 1];  // never empty, so that the pointer below is not null
        Encoding.UTF8.GetBytes(text, utf8);
        byte* message = stackalloc byte[ErrorBytes];
        int capacity = length + 8;  // a token per byte at most, and the special ones
        while (true)
        {
            var buffer = new int[capacity];
            int result;
            fixed (byte* bytes = utf8)
            fixed (int* ids = buffer)
            {
                if (guard(Exports.Value.Tokenize, vocab, bytes, length, ids, capacity, addBos ? 1 : 0, special ? 1 : 0, &result, message, ErrorBytes) != 0)
                {
                    tokens = [];
                    error = Marshal.PtrToStringUTF8((IntPtr)message) ?? "";
                    return false;
                }
            }

            if (result >= 0)
            {
                tokens = [.. buffer.AsSpan(0, result).ToArray().Select(id => (LLamaToken)id)];
                error = "";
                return true;
            }

            capacity = -result;  // llama.cpp asks for a larger buffer
        }
    }

    // Which character llama.cpp could not encode: the first that it cannot encode on its own.
    private static string Explain(IntPtr vocab, string text, string error)
    {
        foreach (Rune rune in text.EnumerateRunes().Distinct())
        {
            if (!TryTokenize(vocab, rune.ToString(), addBos: false, special: false, out _, out _))
            {
                return $"The model's tokenizer cannot encode the text: its vocabulary has no token and no byte-fallback token for the character " +
                       $"'{rune}' (U+{rune.Value:X4}) (llama.cpp: {error}).";
            }
        }

        return $"The model's tokenizer cannot encode the text (llama.cpp: {error}).";
    }

    [LibraryImport(LlamaLibrary)]
    private static partial IntPtr llama_model_get_vocab(IntPtr model);
}
