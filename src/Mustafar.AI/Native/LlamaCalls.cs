using System.Runtime.InteropServices;
using System.Text;
using LLama.Native;

namespace Mustafar.AI.Native;

/// <summary>
/// The llama.cpp calls that can throw a C++ exception, made by our library behind a catch (<c>mustafar_tokenize</c>,
/// <c>mustafar_sample</c> in native/src/llama_calls.cpp): an exception that reaches .NET's P/Invoke frame ends the
/// process. Tokenization throws when an SPM vocabulary has neither a token nor a byte token for a character of the
/// text (a tiny model's vocabulary, for one); grammar-constrained sampling throws (or aborts) when the vocabulary
/// has no token the grammar allows. Here the request fails with an exception that says which.
/// </summary>
internal static unsafe partial class LlamaCalls
{
    private const string LlamaLibrary = "libllama.so";  // by soname: the copy LLamaSharp has loaded
    private const int ErrorBytes = 512;
    private const int CallOk = 0, NoAllowedToken = 2;  // MUSTAFAR_CALL_OK, MUSTAFAR_SAMPLE_NO_ALLOWED_TOKEN

    private static readonly Lazy<Exports> Loaded = new(Exports.Load, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The tokens of <paramref name="text"/>, as llama.cpp's tokenizer gives them.</summary>
    /// <exception cref="ArgumentException">The model's tokenizer cannot encode the text.</exception>
    public static LLamaToken[] Tokenize(SafeLlamaModelHandle model, string text, bool addBos, bool special)
    {
        ArgumentNullException.ThrowIfNull(text);
        using var lease = new Lease(model);
        IntPtr vocab = llama_model_get_vocab(lease.Handle);
        return TryTokenize(vocab, text, addBos, special, out var tokens, out string error)
            ? tokens
            : throw new ArgumentException(Explain(vocab, text, error), nameof(text));
    }

    private static bool TryTokenize(IntPtr vocab, string text, bool addBos, bool special, out LLamaToken[] tokens, out string error)
    {
        var guard = (delegate* unmanaged[Cdecl]<IntPtr, IntPtr, byte*, int, int*, int, int, int, int*, byte*, int, int>)Loaded.Value.Tokenize;
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
                if (guard(Loaded.Value.LlamaTokenize, vocab, bytes, length, ids, capacity, addBos ? 1 : 0, special ? 1 : 0, &result, message, ErrorBytes) != CallOk)
                {
                    tokens = [];
                    error = Marshal.PtrToStringUTF8((IntPtr)message) ?? "";
                    return false;
                }
            }

            if (result >= 0)
            {
                tokens = [.. buffer.Take(result).Select(id => (LLamaToken)id)];
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
                string shown = Rune.IsControl(rune) ? $"U+{rune.Value:X4}" : $"'{rune}' (U+{rune.Value:X4})";
                return $"The model's tokenizer cannot encode the text: its vocabulary has no token and no byte-fallback token for the character " +
                       $"{shown} (llama.cpp: {error}).";
            }
        }

        return $"The model's tokenizer cannot encode the text (llama.cpp: {error}).";
    }

    /// <summary>
    /// One token for row <paramref name="index"/> of the context's last logits, as <c>llama_sampler_sample</c> picks
    /// it, with the <paramref name="grammar"/> chain (if any) applied on its own first.
    /// </summary>
    /// <exception cref="InvalidOperationException">The grammar allows no token of the vocabulary, or llama.cpp threw.</exception>
    public static LLamaToken Sample(SafeLLamaContextHandle context, int index, int vocabSize, SafeLLamaSamplerChainHandle? grammar,
        SafeLLamaSamplerChainHandle chain)
    {
        var sample = (delegate* unmanaged[Cdecl]<LlamaApi*, IntPtr, int, int, IntPtr, IntPtr, int*, byte*, int, int>)Loaded.Value.Sample;
        using Lease ctx = new(context), grammarLease = new(grammar), chainLease = new(chain);
        LlamaApi api = Loaded.Value.Api;
        byte* message = stackalloc byte[ErrorBytes];
        int token;
        int status = sample(&api, ctx.Handle, index, vocabSize, grammarLease.Handle, chainLease.Handle, &token, message, ErrorBytes);
        return status switch
        {
            CallOk => (LLamaToken)token,
            NoAllowedToken => throw new InvalidOperationException(
                "No token of the model's vocabulary continues the output in the format this request requires (ChatOptions.ResponseFormat " +
                "or a required tool call): the model cannot write it."),
            _ => throw new InvalidOperationException($"llama.cpp's sampling failed: {Marshal.PtrToStringUTF8((IntPtr)message)}"),
        };
    }

    /// <summary>Tokens one sequence of the context can hold: the whole context when its cells are shared, else its share.</summary>
    public static int SequenceContext(SafeLLamaContextHandle context)
    {
        using var lease = new Lease(context);
        return checked((int)llama_n_ctx_seq(lease.Handle));
    }

    /// <summary>Adds a sampler of <paramref name="grammar"/> (GBNF, rule "root") to <paramref name="chain"/>.</summary>
    /// <exception cref="ArgumentException">llama.cpp refuses the grammar.</exception>
    public static void AddGrammar(SafeLLamaSamplerChainHandle chain, SafeLlamaModelHandle model, string grammar)
    {
        using Lease modelLease = new(model), chainLease = new(chain);
        // llama.cpp returns no sampler for a grammar it cannot parse or that is left-recursive (LLamaSharp's
        // AddGrammar would add that null to the chain, and the first sampling would dereference it).
        IntPtr sampler = llama_sampler_init_grammar(llama_model_get_vocab(modelLease.Handle), grammar, "root");
        if (sampler == IntPtr.Zero)
        {
            throw new ArgumentException(
                "llama.cpp refused the grammar made for this request's required format (ChatOptions.ResponseFormat's JSON schema or the " +
                "tools' parameter schemas); a schema whose $ref refers to itself before any value is read makes a left-recursive grammar. " +
                "The llama.cpp log says why.");
        }

        llama_sampler_chain_add(chainLease.Handle, sampler);  // the chain owns it from here
    }

    /// <summary>
    /// The tokens that llama.cpp's tokenizer finds in text when it parses special tokens (its control, user-defined and
    /// unknown tokens, by their text), longest text first, as llama.cpp orders its own search.
    /// </summary>
    public static IReadOnlyList<(string Text, LLamaToken Token)> SpecialTokens(SafeLlamaModelHandle model)
    {
        const int Unknown = 1 << 0, Control = 1 << 3, UserDefined = 1 << 4;  // llama.h's llama_token_attr
        using var lease = new Lease(model);
        IntPtr vocab = llama_model_get_vocab(lease.Handle);
        var found = new List<(string Text, LLamaToken Token)>();
        for (int id = 0, n = llama_vocab_n_tokens(vocab); id < n; id++)
        {
            if ((llama_vocab_get_attr(vocab, id) & (Unknown | Control | UserDefined)) != 0 &&
                Marshal.PtrToStringUTF8(llama_vocab_get_text(vocab, id)) is { Length: > 0 } text)
            {
                found.Add((text, (LLamaToken)id));
            }
        }

        return [.. found.OrderByDescending(t => t.Text.Length)];
    }

    [LibraryImport(LlamaLibrary)]
    private static partial IntPtr llama_model_get_vocab(IntPtr model);

    [LibraryImport(LlamaLibrary)]
    private static partial uint llama_n_ctx_seq(IntPtr context);

    [LibraryImport(LlamaLibrary)]
    private static partial int llama_vocab_n_tokens(IntPtr vocab);

    [LibraryImport(LlamaLibrary)]
    private static partial int llama_vocab_get_attr(IntPtr vocab, int token);

    [LibraryImport(LlamaLibrary)]
    private static partial IntPtr llama_vocab_get_text(IntPtr vocab, int token);

    [LibraryImport(LlamaLibrary, StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr llama_sampler_init_grammar(IntPtr vocab, string grammar, string root);

    [LibraryImport(LlamaLibrary)]
    private static partial void llama_sampler_chain_add(IntPtr chain, IntPtr sampler);

    /// <summary>A native handle kept alive (its release deferred) while a call uses its pointer; none for a null handle.</summary>
    private readonly ref struct Lease
    {
        private readonly SafeHandle? _handle;
        private readonly bool _added;

        public Lease(SafeHandle? handle)
        {
            _handle = handle;
            handle?.DangerousAddRef(ref _added);
        }

        public IntPtr Handle => _handle?.DangerousGetHandle() ?? IntPtr.Zero;

        public void Dispose()
        {
            if (_added)
            {
                _handle!.DangerousRelease();
            }
        }
    }

    /// <summary>mustafar_llama_api of native/include/mustafar.h.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct LlamaApi
    {
        public IntPtr GetLogitsIth;
        public IntPtr SamplerApply;
        public IntPtr SamplerAccept;
    }

    private sealed class Exports
    {
        public required IntPtr Tokenize { get; init; }

        public required IntPtr Sample { get; init; }

        public required LlamaApi Api { get; init; }

        public required IntPtr LlamaTokenize { get; init; }

        public static Exports Load()
        {
            IntPtr llama = NativeLibrary.Load(LlamaLibrary);
            return new Exports
            {
                Tokenize = NativeLibrary.GetExport(NativeBackend.Library, "mustafar_tokenize"),
                Sample = NativeLibrary.GetExport(NativeBackend.Library, "mustafar_sample"),
                Api = new LlamaApi
                {
                    GetLogitsIth = NativeLibrary.GetExport(llama, "llama_get_logits_ith"),
                    SamplerApply = NativeLibrary.GetExport(llama, "llama_sampler_apply"),
                    SamplerAccept = NativeLibrary.GetExport(llama, "llama_sampler_accept"),
                },
                LlamaTokenize = NativeLibrary.GetExport(llama, "llama_tokenize"),
            };
        }
    }
}
