using System.Reflection;
using System.Runtime.InteropServices;
using LLama.Native;

namespace Mustafar.AI.Native;

/// <summary>
/// Loads LLamaSharp's llama.cpp, then our ggml backend (libggml-mustafar.so) into it, once per process:
/// ggml keeps a process-wide backend registry, so registration is inherently global.
/// </summary>
internal static class NativeBackend
{
    internal const string LibraryFileName = "libggml-mustafar.so";
    internal const string DeviceName = "Mustafar";
    private const int ExpectedAbiVersion = 3; // MUSTAFAR_ABI_VERSION in native/include/mustafar.h

    private static readonly Lazy<BackendHandle> Registration = new(Register, LazyThreadSafetyMode.ExecutionAndPublication);
    private static readonly Lazy<(string Path, IntPtr Handle)> Loaded = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Our library, loaded (not registered as a backend) and of the ABI this assembly expects.</summary>
    internal static IntPtr Library => Loaded.Value.Handle;

    /// <summary>Registers the backend before the first model load; throws with the reason when it cannot.</summary>
    public static BackendHandle EnsureRegistered() => Registration.Value;

    /// <summary>Ensures llama.cpp itself is loaded (LLamaSharp loads it lazily on first use).</summary>
    public static void EnsureLlamaLoaded()
    {
        LlamaLog.Install();
        _ = NativeApi.llama_max_devices();
    }

    private static (string Path, IntPtr Handle) Load()
    {
        EnsureLlamaLoaded();
        string path = FindLibrary();
        // dlopen resolves our NEEDED libggml-base.so to the copy LLamaSharp has already loaded (same soname).
        IntPtr lib = NativeLibrary.Load(path);
        var abiVersion = GetExport<AbiVersionFn>(lib, "mustafar_abi_version")();
        if (abiVersion != ExpectedAbiVersion)
        {
            throw new InvalidOperationException(
                $"{path} implements Mustafar native ABI {abiVersion}, but this Mustafar.AI expects {ExpectedAbiVersion}; rebuild native/ (dotnet build does it).");
        }

        return (path, lib);
    }

    private static BackendHandle Register()
    {
        var (path, lib) = Loaded.Value;
        string abiError = Marshal.PtrToStringUTF8(GetExport<StringFn>(lib, "mustafar_abi_error")()) ?? string.Empty;
        if (abiError.Length != 0)
        {
            throw new InvalidOperationException($"The Mustafar backend cannot run on this llama.cpp: {abiError}");
        }

        IntPtr reg = Ggml.ggml_backend_load(path);
        if (reg == IntPtr.Zero)
        {
            throw new InvalidOperationException($"ggml_backend_load refused {path}; see the llama.cpp log for the reason.");
        }

        string flavour = Marshal.PtrToStringUTF8(GetExport<StringFn>(lib, "mustafar_flavour")()) ?? "unknown";
        return new BackendHandle(flavour, GetExport<KvStatsFn>(lib, "mustafar_get_kv_stats"),
            GetExport<SetCacheConfigFn>(lib, "mustafar_set_cache_config"), GetExport<StringFn>(lib, "mustafar_last_error"));
    }

    private static string FindLibrary()
    {
        string[] candidates =
        [
            Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", LibraryFileName),
            Path.Combine(Path.GetDirectoryName(typeof(NativeBackend).Assembly.Location) ?? AppContext.BaseDirectory, "runtimes", "linux-x64", "native", LibraryFileName),
            Path.Combine(AppContext.BaseDirectory, LibraryFileName),
        ];
        foreach (string candidate in candidates)
        {
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new DllNotFoundException(
            $"{LibraryFileName} was not found next to the application (looked in: {string.Join(", ", candidates.Distinct())}). " +
            "It is built by `dotnet build` from native/ (needs cmake and a C++17 compiler) and copied to runtimes/linux-x64/native/.");
    }

    private static T GetExport<T>(IntPtr lib, string name) where T : Delegate =>
        Marshal.GetDelegateForFunctionPointer<T>(NativeLibrary.GetExport(lib, name));

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int AbiVersionFn();

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate IntPtr StringFn();

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate void KvStatsFn(long owner, out NativeKvStats stats);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate int SetCacheConfigFn(IntPtr config);

    /// <summary>The registered backend and our C API (native/include/mustafar.h).</summary>
    internal sealed class BackendHandle(string flavour, KvStatsFn getKvStats, SetCacheConfigFn setCacheConfig, StringFn lastError)
    {
        private static long _nextOwner;

        public string Flavour { get; } = flavour;

        /// <summary>A fresh tag for the caches of one context.</summary>
        public static long NewOwner() => Interlocked.Increment(ref _nextOwner);

        /// <summary>Stats of the caches tagged <paramref name="owner"/> (0: all live caches).</summary>
        public NativeKvStats GetKvStats(long owner = 0)
        {
            getKvStats(owner, out var stats);
            return stats;
        }

        /// <summary>Storage for the caches allocated from now on; <c>KSparsity &lt; 0</c> means dense.</summary>
        public unsafe void SetCacheConfig(NativeCacheConfig config)
        {
            if (setCacheConfig((IntPtr)(&config)) != 0)
            {
                throw new ArgumentException($"The Mustafar backend refused the cache configuration: {Marshal.PtrToStringUTF8(lastError())}");
            }
        }

        /// <summary>Forgets the configuration: later caches are dense and belong to no client.</summary>
        public void ClearCacheConfig() => setCacheConfig(IntPtr.Zero);
    }
}

/// <summary>mustafar_kv_stats of native/include/mustafar.h.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct NativeKvStats
{
    public ulong KvBytes;
    public ulong KvDenseBytes;
    public ulong KvTensors;
    public ulong KvElements;
    public ulong RowsDense;
    public ulong RowsCompressed;
}

/// <summary>mustafar_cache_config of native/include/mustafar.h.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct NativeCacheConfig
{
    public double KSparsity;
    public double VSparsity;
    public int LocalWindow;
    public int HeadDimK;
    public int HeadDimV;
    public int SeqMax;
    public int UBatch;
    public long Owner;

    public static NativeCacheConfig Dense => new() { KSparsity = -1 };
}

/// <summary>The few libggml exports we call ourselves (LLamaSharp binds the rest).</summary>
internal static partial class Ggml
{
    // Resolved by soname to the libggml.so that LLamaSharp has already loaded.
    private const string GgmlLibrary = "libggml.so";

    [LibraryImport(GgmlLibrary, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial IntPtr ggml_backend_load(string path);
}
