using Microsoft.Extensions.Options;

namespace Mustafar.AI;

/// <summary>Options of a Mustafar chat client: the model, its context and the Mustafar KV cache.</summary>
public sealed class MustafarOptions
{
    /// <summary>The largest sparsity accepted for K and V (90 % of each vector pruned).</summary>
    public const double MaxSparsity = 0.9;

    /// <summary>Path of the GGUF model file (llama-family architecture).</summary>
    public string ModelPath { get; set; } = string.Empty;

    /// <summary>Model id reported in <c>ChatClientMetadata</c> and responses; defaults to the file name.</summary>
    public string? ModelId { get; set; }

    /// <summary>
    /// Context size in tokens (the KV cache holds this many cells). 0 uses the model's training context. With
    /// <see cref="CacheLayout"/> <see cref="MustafarCacheLayout.PerRequest"/> a request holds at most
    /// <c>ContextSize / MaxConcurrentRequests</c> of them.
    /// </summary>
    public int ContextSize { get; set; } = 4096;

    /// <summary>Most tokens handed to llama.cpp in one decode call (a longer prompt is split).</summary>
    public int BatchSize { get; set; } = 512;

    /// <summary>CPU threads for the work that runs on ggml's CPU backend; null picks the core count.</summary>
    public int? Threads { get; set; }

    /// <summary>Fraction of each key vector pruned once it leaves the local window (0 keeps it dense, at most 0.9).</summary>
    public double KSparsity { get; set; } = 0.5;

    /// <summary>Fraction of each value vector pruned once it leaves the local window (0 keeps it dense, at most 0.9).</summary>
    public double VSparsity { get; set; } = 0.5;

    /// <summary>The most recent tokens of each sequence that stay dense (the paper uses 32).</summary>
    public int LocalWindow { get; set; } = 32;

    /// <summary>
    /// Runs the model through the Mustafar backend (true, the product) or on llama.cpp's own CPU backend
    /// with a plain f16 cache (false: a reference to compare against).
    /// </summary>
    public bool UseMustafarBackend { get; set; } = true;

    /// <summary>
    /// Requests decoded together, each as a sequence of the one context (continuous batching); more wait
    /// in FIFO order. Sizes llama.cpp's n_seq_max and the dense window pool. With <see cref="CachedPrefixes"/>, at most
    /// <see cref="BatchSize"/> and at most <see cref="ContextSize"/> (when set).
    /// </summary>
    public int MaxConcurrentRequests { get; set; } = 4;

    /// <summary>
    /// Finished requests whose cache (prompt and answer) is kept, least recently used evicted first, so that
    /// a new prompt starting with the same tokens (same document, next question; the next turn of a chat)
    /// reuses it instead of decoding it again, and reports it as <c>CachedInputTokenCount</c>. 0 (the
    /// default) turns reuse off. At sparsity above 0 a reused prefix is attended in its compressed form,
    /// as a long prompt's later micro-batches are, so answers can differ from a fresh run's; at sparsity 0
    /// they are identical.
    /// </summary>
    public int CachedPrefixes { get; set; }

    /// <summary>
    /// Whether running requests draw their cells from one pool (<see cref="MustafarCacheLayout.Shared"/>, the default) or
    /// each owns an equal share of the context (<see cref="MustafarCacheLayout.PerRequest"/>: faster steps when many long
    /// requests decode together; no <see cref="CachedPrefixes"/>).
    /// </summary>
    public MustafarCacheLayout CacheLayout { get; set; } = MustafarCacheLayout.Shared;

    /// <summary>Requests that may wait for a free sequence; further callers wait until one is admitted (back-pressure).</summary>
    public int MaxQueuedRequests { get; set; } = 64;

    /// <summary>
    /// With both sparsities 0 the cache is stored dense (ggml's layout, no bitmap overhead); tests set
    /// this to run the compressed store anyway, where nothing is pruned.
    /// </summary>
    internal bool ForceCompressedStore { get; set; }

    /// <summary>Default cap on generated tokens when a request sets no <c>MaxOutputTokens</c>.</summary>
    public int DefaultMaxOutputTokens { get; set; } = 512;
}

/// <summary>Validates <see cref="MustafarOptions"/> at start-up with messages that name the option and the rule.</summary>
public sealed class MustafarOptionsValidator : IValidateOptions<MustafarOptions>
{
    /// <inheritdoc />
    public ValidateOptionsResult Validate(string? name, MustafarOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        List<string> failures = [];
        if (string.IsNullOrWhiteSpace(options.ModelPath))
        {
            failures.Add("MustafarOptions.ModelPath is required: the path of a GGUF model file.");
        }
        else if (!File.Exists(options.ModelPath))
        {
            failures.Add($"MustafarOptions.ModelPath '{options.ModelPath}' does not exist.");
        }

        if (options.ContextSize < 0)
        {
            failures.Add($"MustafarOptions.ContextSize must be 0 (the model's training context) or positive; got {options.ContextSize}.");
        }

        if (options.BatchSize < 1)
        {
            failures.Add($"MustafarOptions.BatchSize must be at least 1; got {options.BatchSize}.");
        }

        if (options.Threads is < 1)
        {
            failures.Add($"MustafarOptions.Threads must be at least 1 when set; got {options.Threads}.");
        }

        CheckSparsity(nameof(MustafarOptions.KSparsity), options.KSparsity, failures);
        CheckSparsity(nameof(MustafarOptions.VSparsity), options.VSparsity, failures);
        if (options.LocalWindow < 0)
        {
            failures.Add($"MustafarOptions.LocalWindow must be 0 or more tokens; got {options.LocalWindow}.");
        }

        if (options.MaxConcurrentRequests < 1)
        {
            failures.Add($"MustafarOptions.MaxConcurrentRequests must be at least 1; got {options.MaxConcurrentRequests}.");
        }

        if (options.CachedPrefixes < 0)
        {
            failures.Add($"MustafarOptions.CachedPrefixes must be 0 (off) or more; got {options.CachedPrefixes}.");
        }

        // Every running or cached request is a llama.cpp sequence, and llama.cpp reserves one output per sequence
        // within a decode call's batch, which is at most BatchSize and at most the context (more aborts the process).
        long sequences = (long)options.MaxConcurrentRequests + options.CachedPrefixes;
        if (options.MaxConcurrentRequests >= 1 && options.CachedPrefixes >= 0)
        {
            if (sequences > options.BatchSize && options.BatchSize >= 1)
            {
                failures.Add($"MustafarOptions.MaxConcurrentRequests ({options.MaxConcurrentRequests}) plus CachedPrefixes ({options.CachedPrefixes}) " +
                    $"must be at most BatchSize ({options.BatchSize}): a decode call carries one output of every sequence.");
            }

            if (options.ContextSize > 0 && sequences > options.ContextSize)
            {
                failures.Add($"MustafarOptions.ContextSize ({options.ContextSize}) must be at least MaxConcurrentRequests plus CachedPrefixes ({sequences}): " +
                    "llama.cpp's decode calls are no larger than the context.");
            }
        }

        if (!Enum.IsDefined(options.CacheLayout))
        {
            failures.Add($"MustafarOptions.CacheLayout must be Shared or PerRequest; got {(int)options.CacheLayout}.");
        }
        else if (options.CacheLayout == MustafarCacheLayout.PerRequest)
        {
            if (options.CachedPrefixes > 0)
            {
                failures.Add($"MustafarOptions.CachedPrefixes must be 0 with CacheLayout PerRequest (got {options.CachedPrefixes}): " +
                    "a cached prefix is reused by sharing its cells, which requests of that layout do not.");
            }

            if (options.ContextSize > 0 && options.MaxConcurrentRequests >= 1 && options.ContextSize % (256L * options.MaxConcurrentRequests) != 0)
            {
                failures.Add($"MustafarOptions.ContextSize ({options.ContextSize}) must be a multiple of 256 times MaxConcurrentRequests " +
                    $"({256L * options.MaxConcurrentRequests}) with CacheLayout PerRequest: llama.cpp rounds each request's share up to a multiple of 256 cells.");
            }
        }

        if (options.MaxQueuedRequests < 1)
        {
            failures.Add($"MustafarOptions.MaxQueuedRequests must be at least 1; got {options.MaxQueuedRequests}.");
        }

        if (options.DefaultMaxOutputTokens < 1)
        {
            failures.Add($"MustafarOptions.DefaultMaxOutputTokens must be at least 1; got {options.DefaultMaxOutputTokens}.");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    private static void CheckSparsity(string option, double value, List<string> failures)
    {
        if (double.IsNaN(value) || value < 0 || value > MustafarOptions.MaxSparsity)
        {
            failures.Add($"MustafarOptions.{option} must be between 0 (dense) and {MustafarOptions.MaxSparsity}; got {value}.");
        }
    }

    /// <summary>Throws <see cref="OptionsValidationException"/> listing every failure.</summary>
    internal static void ThrowIfInvalid(MustafarOptions options)
    {
        var result = new MustafarOptionsValidator().Validate(Options.DefaultName, options);
        if (result.Failed)
        {
            throw new OptionsValidationException(Options.DefaultName, typeof(MustafarOptions), result.Failures);
        }
    }
}
