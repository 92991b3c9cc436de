using System.Text;
using System.Text.RegularExpressions;
using LLama;
using LLama.Common;
using LLama.Native;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Mustafar.AI.Mapping;
using Mustafar.AI.Native;

namespace Mustafar.AI.Engine;

/// <summary>
/// Owns one llama.cpp model and context; requests run concurrently as sequences of that context,
/// batched by the <see cref="BatchScheduler"/>.
/// </summary>
internal sealed partial class LlamaEngine : IAsyncDisposable, IDisposable
{
    // Loading is serialised process-wide so that the llama.cpp log lines we read belong to this load.
    private static readonly SemaphoreSlim LoadGate = new(1, 1);

    private readonly BatchScheduler _scheduler;
    private readonly Lazy<PromptTokens.Specials> _specialTokens;
    private readonly IDisposable _logSubscription;
    private readonly ILogger _logger;
    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;
    private readonly NativeBackend.BackendHandle? _backend;
    private readonly long _owner;
    private bool _disposed;

    private LlamaEngine(MustafarOptions options, ModelShape shape, LLamaWeights weights, LLamaContext context,
        NativeBackend.BackendHandle? backend, long owner, IReadOnlyDictionary<int, string> kvDevices, ILogger logger)
    {
        _owner = owner;
        Options = options;
        Shape = shape;
        _weights = weights;
        _context = context;
        _backend = backend;
        KvLayerDevices = kvDevices;
        _logger = logger;
        ChatTemplate = weights.Metadata.TryGetValue("tokenizer.chat_template", out string? template) && !string.IsNullOrWhiteSpace(template) ? template : null;
        TurnTemplate = ChatTemplate;
        _specialTokens = new(() => PromptTokens.Specials.Of(LlamaCalls.SpecialTokens(weights.NativeHandle)), LazyThreadSafetyMode.ExecutionAndPublication);
        if (ChatTemplate is not null && !PromptBuilder.CanFormat(ChatTemplate))
        {
            // As llama.cpp's server does: ChatML, said in the log, rather than failing every chat request.
            logger.ChatTemplateNotRecognised(options.ModelPath);
            TurnTemplate = PromptBuilder.FallbackTemplate;
        }

        _scheduler = new BatchScheduler(context, weights, options.MaxConcurrentRequests, options.CachedPrefixes, options.MaxQueuedRequests);
        // llama.cpp's and the backend's log (one process-wide stream) reaches this client's logger while it lives.
        _logSubscription = LlamaLog.Subscribe((level, line) => logger.Native(LlamaLog.ToLogLevel(level), line));
    }

    public MustafarOptions Options { get; }

    public ModelShape Shape { get; }

    /// <summary>Device of each layer's KV cache, as llama.cpp logged it ("llama_kv_cache: layer N: dev = X").</summary>
    public IReadOnlyDictionary<int, string> KvLayerDevices { get; }

    /// <summary>The model's chat template (GGUF tokenizer.chat_template), or null when it has none.</summary>
    public string? ChatTemplate { get; }

    /// <summary>The template that formats chat turns: the model's, ChatML where llama.cpp does not recognise it, or null (plain text).</summary>
    public string? TurnTemplate { get; }

    public int ContextSize => (int)_context.ContextSize;

    /// <summary>Tokens one request can hold: <see cref="ContextSize"/>, or its share with <see cref="MustafarCacheLayout.PerRequest"/>.</summary>
    public int RequestContextSize => _scheduler.RequestContextSize;

    /// <summary>Requests running as sequences now.</summary>
    public int RunningRequests => _scheduler.Running;

    /// <summary>The most requests one decode step has run together.</summary>
    public int PeakRunningRequests => _scheduler.PeakRunning;

    internal LLamaWeights Weights => _weights;

    /// <summary>The llama.cpp context, for tests that drive sequences and state directly.</summary>
    internal LLamaContext Context => _context;

    public static async Task<LlamaEngine> LoadAsync(MustafarOptions options, ILogger logger, CancellationToken cancellationToken)
    {
        MustafarOptionsValidator.ThrowIfInvalid(options);
        ModelShape shape = ModelShape.Read(options.ModelPath);
        NativeBackend.BackendHandle? backend = options.UseMustafarBackend ? NativeBackend.EnsureRegistered() : null;
        if (backend is null)
        {
            NativeBackend.EnsureLlamaLoaded();
        }

        long maxSequences = NativeApi.llama_max_parallel_sequences();
        if (options.MaxConcurrentRequests + options.CachedPrefixes > maxSequences)
        {
            throw new OptionsValidationException(Microsoft.Extensions.Options.Options.DefaultName, typeof(MustafarOptions),
            [
                $"MustafarOptions.MaxConcurrentRequests ({options.MaxConcurrentRequests}) plus CachedPrefixes ({options.CachedPrefixes}) " +
                $"must be at most {maxSequences}, the sequences one llama.cpp context holds.",
            ]);
        }

        var parameters = new ModelParams(options.ModelPath)
        {
            ContextSize = options.ContextSize == 0 ? null : (uint)options.ContextSize,
            BatchSize = (uint)options.BatchSize,
            UBatchSize = (uint)options.BatchSize,
            GpuLayerCount = backend is null ? 0 : shape.LayerCount + 1,
            FlashAttention = true, // the Mustafar cache stores V like K, which needs flash attention
            Threads = options.Threads,
            BatchThreads = options.Threads,
            SeqMax = (uint)(options.MaxConcurrentRequests + options.CachedPrefixes),
            KVUnified = options.CacheLayout == MustafarCacheLayout.Shared, // else one llama.cpp stream per sequence
            TypeK = GGMLType.GGML_TYPE_F16,
            TypeV = GGMLType.GGML_TYPE_F16,
        };

        var kvDevices = new Dictionary<int, string>();
        var nativeErrors = new List<string>();
        long owner = NativeBackend.BackendHandle.NewOwner();
        await LoadGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        LLamaWeights? weights = null;
        LLamaContext? context = null;
        try
        {
            using (LlamaLog.Subscribe((level, line) =>
                   {
                       var match = KvLayerLine().Match(line);
                       if (match.Success)
                       {
                           kvDevices[int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)] = match.Groups[2].Value;
                       }

                       if (level == LLamaLogLevel.Error)
                       {
                           lock (nativeErrors)
                           {
                               nativeErrors.Add(line.Trim());
                           }
                       }

                       logger.Native(LlamaLog.ToLogLevel(level), line);
                   }))
            {
                try
                {
                    weights = await Task.Run(() => LLamaWeights.LoadFromFile(parameters), cancellationToken).ConfigureAwait(false);
                }
                catch (LLama.Exceptions.LoadWeightsFailedException e)
                {
                    throw new InvalidOperationException($"llama.cpp could not load '{options.ModelPath}'{Reasons(nativeErrors)}.", e);
                }

                // The cache is allocated when the context is created: the backend stores it as configured now.
                bool dense = options is { KSparsity: 0, VSparsity: 0, ForceCompressedStore: false };
                backend?.SetCacheConfig(dense ? NativeCacheConfig.Dense with { Owner = owner } : new NativeCacheConfig
                {
                    KSparsity = options.KSparsity,
                    VSparsity = options.VSparsity,
                    LocalWindow = options.LocalWindow,
                    HeadDimK = shape.HeadDim,
                    HeadDimV = shape.HeadDimV,
                    SeqMax = options.MaxConcurrentRequests + options.CachedPrefixes,
                    UBatch = options.BatchSize,
                    Owner = owner,
                });
                try
                {
                    context = await Task.Run(() => weights.CreateContext(parameters), cancellationToken).ConfigureAwait(false);
                }
                finally
                {
                    backend?.ClearCacheConfig();
                }

                if (context.NativeHandle.IsInvalid)
                {
                    // LLamaSharp 0.30.0 does not notice that llama.cpp failed (e.g. the cache did not fit): it returns a
                    // context over a null handle, whose first use crashes the process, and keeps the reference on the
                    // model that only a live context's release gives back.
                    context.Dispose();
                    context = null;
                    weights.NativeHandle.DangerousRelease();
                    string size = options.ContextSize == 0 ? "the model's training context" : $"{options.ContextSize} tokens";
                    string reasons = Reasons(nativeErrors);
                    string hint = reasons.Contains("allocate", StringComparison.Ordinal) ? " A smaller MustafarOptions.ContextSize needs less memory." : "";
                    throw new InvalidOperationException($"llama.cpp could not create a context of {size} for '{options.ModelPath}'{reasons}.{hint}");
                }
            }

            CheckKvPlacement(shape, kvDevices, backend is null ? "CPU" : NativeBackend.DeviceName);
            var engine = new LlamaEngine(options, shape, weights, context, backend, owner, kvDevices, logger);
            logger.ModelLoaded(options.ModelPath, shape.LayerCount, shape.HeadDim, shape.HeadCount, shape.KvHeadCount,
                engine.ContextSize, engine.RequestContextSize, backend is null ? "llama.cpp CPU" : $"Mustafar ({backend.Flavour})", kvDevices.Count,
                string.Join(",", kvDevices.Values.Distinct()));
            return engine;
        }
        catch
        {
            context?.Dispose();
            weights?.Dispose();
            throw;
        }
        finally
        {
            LoadGate.Release();
        }
    }

    private static string Reasons(List<string> nativeErrors)
    {
        lock (nativeErrors)
        {
            return nativeErrors.Count == 0 ? "" : $" ({string.Join("; ", nativeErrors)})";
        }
    }

    private static void CheckKvPlacement(ModelShape shape, IReadOnlyDictionary<int, string> kvDevices, string expected)
    {
        var wrong = Enumerable.Range(0, shape.LayerCount)
            .Where(layer => !kvDevices.TryGetValue(layer, out string? dev) || dev != expected).ToList();
        if (wrong.Count > 0)
        {
            throw new InvalidOperationException(
                $"llama.cpp did not place the KV cache of layers {string.Join(", ", wrong)} on {expected} " +
                $"(it logged: {string.Join("; ", kvDevices.Select(kv => $"layer {kv.Key}: {kv.Value}"))}).");
        }
    }

    /// <summary>KV memory from the backend (null when running on llama.cpp's own CPU backend).</summary>
    public MustafarKvStatistics? GetKvStatistics()
    {
        if (_backend is null)
        {
            return null;
        }

        var s = _backend.GetKvStats(_owner);
        return new MustafarKvStatistics((long)s.KvBytes, (long)s.KvDenseBytes, (int)s.KvTensors, (long)s.KvElements,
            (long)s.RowsDense, (long)s.RowsCompressed);
    }

    /// <exception cref="ArgumentException">The model's tokenizer cannot encode <paramref name="text"/>.</exception>
    public IReadOnlyList<LLamaToken> Tokenize(string text, bool addBos, bool special) =>
        LlamaCalls.Tokenize(_weights.NativeHandle, text, addBos, special);

    /// <summary>
    /// Runs <paramref name="prompt"/> as a new sequence beside the other running requests and streams its
    /// tokens until the consumer calls Stop, end of generation, the token budget or the end of the context.
    /// </summary>
    public IAsyncEnumerable<GeneratedToken> GenerateAsync(IReadOnlyList<LLamaToken> prompt, SamplingSettings sampling,
        int maxTokens, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (prompt.Count == 0)
        {
            throw new ArgumentException("The prompt is empty.", nameof(prompt));
        }

        if (prompt.Count >= RequestContextSize)
        {
            throw Options.CacheLayout == MustafarCacheLayout.PerRequest
                ? MustafarContextOverflowException.ForRequestShare(prompt.Count, RequestContextSize, Options.MaxConcurrentRequests)
                : new MustafarContextOverflowException(prompt.Count, ContextSize);
        }

        return _scheduler.RunAsync(prompt, sampling, maxTokens, cancellationToken);
    }

    public string Detokenize(IEnumerable<LLamaToken> tokens)
    {
        var decoder = CreateDecoder();
        foreach (var token in tokens)
        {
            decoder.Add(token);
        }

        return decoder.Read();
    }

    internal StreamingTokenDecoder CreateDecoder() => new(Encoding.UTF8, _weights);

    public int VocabularySize => _weights.NativeHandle.Vocab.Count;

    /// <summary>The vocabulary's special tokens by text, longest first (<see cref="LlamaCalls.SpecialTokens"/>), read once.</summary>
    public PromptTokens.Specials SpecialTokens => _specialTokens.Value;

    /// <summary>The vocabulary's BOS token, if it has one.</summary>
    public LLamaToken? BosToken => _weights.NativeHandle.Vocab.BOS;

    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        await _scheduler.DisposeAsync().ConfigureAwait(false);  // running requests end first
        _logSubscription.Dispose();
        _context.Dispose();
        _weights.Dispose();
    }

    [GeneratedRegex(@"llama_kv_cache:\s+layer\s+(\d+):\s+dev\s*=\s*(\S+)")]
    private static partial Regex KvLayerLine();
}

/// <summary>Why generation stopped, or None while it goes on.</summary>
internal enum GenerationEnd
{
    None,
    EndOfGeneration,
    MaxTokens,
    ContextFull,
}

/// <summary>
/// One step of generation; <see cref="Stop"/> ends it after this token (e.g. a stop sequence matched).
/// <see cref="CachedPromptTokens"/> is how many prompt tokens came from a cached prefix instead of being decoded.
/// </summary>
internal readonly record struct GeneratedToken(LLamaToken Token, GenerationEnd End, Action? Stop = null, int CachedPromptTokens = 0);
