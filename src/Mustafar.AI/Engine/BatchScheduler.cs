using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using LLama;
using LLama.Native;
using Mustafar.AI.Mapping;
using Mustafar.AI.Native;

namespace Mustafar.AI.Engine;

/// <summary>
/// Continuous batching over one llama.cpp context: every running request is a sequence, and each
/// step decodes one token of every generating sequence plus prompt chunks of newly admitted ones,
/// in one batch. Requests join between steps and leave when done; beyond the sequence limit they
/// wait in FIFO order, and beyond the queue limit submitters wait (back-pressure). Finished
/// sequences stay cached (LRU) so that a prompt sharing their prefix copies those cells instead of
/// decoding them again. Only the loop's thread touches the context.
/// </summary>
internal sealed class BatchScheduler : IAsyncDisposable
{
    private readonly LLamaContext _context;
    private readonly SafeLlamaModelHandle _model;
    private readonly SafeLlamaModelHandle.Vocabulary _vocab;
    private readonly int _vocabSize;
    private readonly Channel<Request> _queue;
    private readonly SemaphoreSlim _wake = new(0);
    private readonly CancellationTokenSource _shutdown = new();
    private readonly Thread _loop;
    private readonly int _maxRunning;
    private readonly int _maxCached;

    // With a stream of cells per sequence (MustafarCacheLayout.PerRequest), llama.cpp splits a decode call into
    // micro-batches of equally many tokens per sequence: prompt chunks of unequal length would be cut where the
    // shorter ones end, several times a step, and each later piece would attend its earlier pieces' rows that left
    // the window compressed. So there every prompting request gets an equal chunk a step (its first token aside,
    // which goes with the generating sequences' tokens), and prompts that arrive together finish together.
    private readonly bool _equalPromptChunks;

    /// <summary>Shortest shared prefix worth copying instead of decoding.</summary>
    private const int MinReusedTokens = 4;

    public BatchScheduler(LLamaContext context, LLamaWeights weights, int maxRunning, int maxCached, int maxQueued)
    {
        _context = context;
        _model = weights.NativeHandle;
        _vocab = weights.NativeHandle.Vocab;
        _vocabSize = _vocab.Count;
        _maxRunning = maxRunning;
        _maxCached = maxCached;
        RequestContextSize = LlamaCalls.SequenceContext(context.NativeHandle);
        _equalPromptChunks = RequestContextSize < (int)context.ContextSize;
        _queue = Channel.CreateBounded<Request>(new BoundedChannelOptions(maxQueued) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true });
        _loop = new Thread(Loop) { IsBackground = true, Name = "Mustafar batch scheduler" };
        _loop.Start();
    }

    /// <summary>Tokens one request can hold (llama.cpp's cells per sequence).</summary>
    public int RequestContextSize { get; }

    /// <summary>Requests running now (sequences in the context).</summary>
    public int Running { get; private set; }

    /// <summary>The most requests one step has decoded together since the scheduler started.</summary>
    public int PeakRunning { get; private set; }

    /// <summary>Streams the tokens of one request; enumeration ends with a token whose End is set, or by Stop.</summary>
    public async IAsyncEnumerable<GeneratedToken> RunAsync(IReadOnlyList<LLamaToken> prompt, SamplingSettings sampling, int maxTokens,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        // The sampler chain (and its grammar) is built here, so that a bad one fails this caller only.
        var request = new Request(prompt, sampling.CreateSampler(_model), maxTokens, cancellationToken);
        try
        {
            await _queue.Writer.WriteAsync(request, cancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException)
        {
            request.Sampler.Dispose();
            throw new ObjectDisposedException(nameof(LlamaEngine), "The chat client was disposed before the request started.");
        }
        catch
        {
            request.Sampler.Dispose();
            throw;
        }

        _wake.Release();
        try
        {
            await foreach (var token in request.Output.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                yield return token with { Stop = request.RequestStop };
            }
        }
        finally
        {
            // Cancelled, stopped or abandoned: the loop frees the sequence before its next step.
            request.RequestStop();
            _wake.Release();
        }
    }

    private void Loop()
    {
        var state = new LoopState(_maxRunning + _maxCached);
        try
        {
            while (!_shutdown.IsCancellationRequested)
            {
                try
                {
                    Step(state);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // A failed step fails its requests, never the process.
                    foreach (var r in state.Active.ToList())
                    {
                        Finish(state, r, e);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (_shutdown.IsCancellationRequested)
        {
        }
        finally
        {
            var disposed = new ObjectDisposedException(nameof(LlamaEngine), "The chat client was disposed while the request ran.");
            foreach (var r in state.Active.ToList())
            {
                Finish(state, r, disposed);
            }

            while (_queue.Reader.TryRead(out var waiting))
            {
                waiting.Sampler.Dispose();
                waiting.Output.Writer.TryComplete(disposed);
            }
        }
    }

    private void Step(LoopState st)
    {
        long start = Stopwatch.GetTimestamp();
        var handle = _context.NativeHandle;
        foreach (var r in st.Active.Where(r => r.Stopped).ToList())
        {
            // Stopped by its consumer (a stop sequence): its cells are valid and may be reused.
            Finish(st, r, null, keep: !r.Cancelled);
        }

        Admit(st);
        Running = st.Active.Count;
        PeakRunning = Math.Max(PeakRunning, Running);
        if (st.Active.Count == 0)
        {
            _wake.Wait(_shutdown.Token);
            return;
        }

        // Generating sequences first (one token each), then prompt chunks with what is left.
        var batch = st.Batch;
        batch.Clear();
        int budget = (int)_context.BatchSize;
        foreach (var r in st.Active)
        {
            r.LogitIndex = -1;
            r.StepTokens = r.StepPromptTokens = 0;
        }

        foreach (var r in st.Active.Where(r => r.PromptDone == r.Prompt.Count))
        {
            r.LogitIndex = batch.TokenCount;
            r.StepTokens = 1;
            r.Decoded.Add(r.NextToken);
            batch.Add(r.NextToken, r.Position++, (LLamaSeqId)r.Seq, true);
            budget--;
        }

        int generatedTokens = batch.TokenCount;

        var prompting = st.Active.Where(r => r.PromptDone < r.Prompt.Count).ToList();
        int chunk = _equalPromptChunks && prompting.Count > 0
            ? Math.Max(1, Math.Min(budget / prompting.Count, prompting.Min(r => r.Prompt.Count - r.PromptDone)))
            : int.MaxValue;
        foreach (var r in prompting)
        {
            int n = Math.Min(Math.Min(budget, chunk), r.Prompt.Count - r.PromptDone);
            r.StepTokens = r.StepPromptTokens = n;
            for (int i = 0; i < n; i++)
            {
                bool last = r.PromptDone + 1 == r.Prompt.Count;
                if (last)
                {
                    r.LogitIndex = batch.TokenCount;
                }

                r.Decoded.Add(r.Prompt[r.PromptDone]);
                batch.Add(r.Prompt[r.PromptDone++], r.Position++, (LLamaSeqId)r.Seq, last);
            }

            budget -= n;
            if (budget == 0)
            {
                break;
            }
        }

        bool generationOnly = batch.TokenCount == generatedTokens;
        long decodeStart = Stopwatch.GetTimestamp();
        var result = handle.Decode(batch);
        long decodeEnd = Stopwatch.GetTimestamp();
        if (result == DecodeResult.NoKvSlot)
        {
            // The shared cache is full: drop the least recently used cached prefix, or else end the
            // request holding the most cells, and retry.
            foreach (var r in st.Active)
            {
                r.Rewind();
            }

            if (st.Cached.Count > 0)
            {
                Evict(st, st.Cached[0]);
                return;
            }

            var largest = st.Active.MaxBy(r => r.Position)!;
            Emit(largest, new GeneratedToken(default, GenerationEnd.ContextFull));
            Finish(st, largest, null);
            return;
        }

        if (result != DecodeResult.Ok)
        {
            throw new InvalidOperationException($"llama_decode failed with {result} ({(int)result}); see the llama.cpp log.");
        }

        int contextSize = RequestContextSize;
        long sampleTicks = 0;
        foreach (var r in st.Active.Where(r => r.LogitIndex >= 0 && !r.Stopped).ToList())
        {
            long sampleStart = Stopwatch.GetTimestamp();
            LLamaToken token;
            try
            {
                token = r.Sampler.Sample(handle, r.LogitIndex, _vocabSize);
            }
            catch (InvalidOperationException e)
            {
                Finish(st, r, e);  // this request's output cannot go on; the others can
                continue;
            }
            finally
            {
                sampleTicks += Stopwatch.GetTimestamp() - sampleStart;
            }

            if (token.IsEndOfGeneration(_vocab))
            {
                Emit(r, new GeneratedToken(token, GenerationEnd.EndOfGeneration));
                Finish(st, r, null, keep: true);
                continue;
            }

            Emit(r, new GeneratedToken(token, GenerationEnd.None));
            r.NextToken = token;
            if (++r.Generated >= r.MaxTokens || r.Position >= contextSize)
            {
                Emit(r, new GeneratedToken(default, r.Generated >= r.MaxTokens ? GenerationEnd.MaxTokens : GenerationEnd.ContextFull));
                Finish(st, r, null, keep: true);
            }
        }

        EngineMetrics.RecordStep(generationOnly, batch.TokenCount, start, decodeStart, decodeEnd, Stopwatch.GetTimestamp(), sampleTicks);
    }

    // Admits queued requests while fewer than the limit run; a prompt that shares a prefix with a
    // cached sequence gets a copy of those cells (no data moves: the cells gain a sequence id).
    private void Admit(LoopState st)
    {
        while (st.Active.Count < _maxRunning && _queue.Reader.TryRead(out var next))
        {
            if (next.Stopped)
            {
                next.Sampler.Dispose();
                next.Output.Writer.TryComplete();
                continue;
            }

            (CachedSequence? Entry, int Shared) source = (null, 0);
            foreach (var c in st.Cached)
            {
                int shared = SharedPrefix(c.Tokens, next.Prompt);
                if (shared >= MinReusedTokens && shared > source.Shared)
                {
                    source = (c, shared);
                }
            }

            next.Seq = st.Free.Min;  // ids: running + cached, so one is free while fewer run than allowed
            st.Free.Remove(next.Seq);
            if (source.Entry is { } entry)
            {
                // The last prompt token is decoded again for its logits.
                int reuse = Math.Min(source.Shared, next.Prompt.Count - 1);
                _context.NativeHandle.MemorySequenceCopy((LLamaSeqId)entry.Seq, (LLamaSeqId)next.Seq, 0, reuse);
                next.PromptDone = next.Position = next.CachedPromptTokens = reuse;
                next.Decoded.AddRange(next.Prompt.Take(reuse));
                st.Cached.Remove(entry);
                st.Cached.Add(entry);
            }

            st.Active.Add(next);
        }
    }

    // A request that completed normally leaves its cells cached for prefix reuse; a cancelled or
    // failed one frees them at once.
    private void Finish(LoopState st, Request r, Exception? error, bool keep = false)
    {
        r.Sampler.Dispose();
        r.Output.Writer.TryComplete(error);
        st.Active.Remove(r);
        Running = st.Active.Count;
        if (keep && _maxCached > 0 && r.Decoded.Count >= MinReusedTokens)
        {
            if (st.Cached.Count == _maxCached)
            {
                Evict(st, st.Cached[0]);
            }

            st.Cached.Add(new CachedSequence(r.Seq, r.Decoded));
            return;
        }

        _context.NativeHandle.MemorySequenceRemove((LLamaSeqId)r.Seq, -1, -1);
        st.Free.Add(r.Seq);
    }

    private void Evict(LoopState st, CachedSequence entry)
    {
        _context.NativeHandle.MemorySequenceRemove((LLamaSeqId)entry.Seq, -1, -1);
        st.Cached.Remove(entry);
        st.Free.Add(entry.Seq);
    }

    private static void Emit(Request r, GeneratedToken token) =>
        r.Output.Writer.TryWrite(token with { CachedPromptTokens = r.CachedPromptTokens });

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _shutdown.CancelAsync().ConfigureAwait(false);
        _wake.Release();
        _loop.Join();
        _shutdown.Dispose();
        _wake.Dispose();
    }

    private static int SharedPrefix(List<LLamaToken> cached, IReadOnlyList<LLamaToken> prompt)
    {
        int n = 0;
        int limit = Math.Min(cached.Count, prompt.Count);
        while (n < limit && cached[n] == prompt[n])
        {
            n++;
        }

        return n;
    }

    /// <summary>What only the loop's thread touches.</summary>
    private sealed class LoopState(int sequences)
    {
        // The lowest free id is taken: running ids stay consecutive, which llama.cpp needs to decode sequences of
        // their own streams (MustafarCacheLayout.PerRequest) in one micro-batch.
        public SortedSet<int> Free { get; } = [.. Enumerable.Range(0, sequences)];

        public List<Request> Active { get; } = [];

        public List<CachedSequence> Cached { get; } = [];  // least recently used first

        public LLamaBatch Batch { get; } = new();
    }

    /// <summary>A finished request's sequence, kept with the tokens its cells hold.</summary>
    private sealed record CachedSequence(int Seq, List<LLamaToken> Tokens);

    private sealed class Request(IReadOnlyList<LLamaToken> prompt, TokenSampler sampler, int maxTokens, CancellationToken cancellation)
    {
        private int _stop;

        public IReadOnlyList<LLamaToken> Prompt { get; } = prompt;

        public TokenSampler Sampler { get; } = sampler;

        public int MaxTokens { get; } = maxTokens;

        public Channel<GeneratedToken> Output { get; } = Channel.CreateUnbounded<GeneratedToken>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });

        public bool Stopped => Volatile.Read(ref _stop) != 0 || Cancelled;

        public bool Cancelled => cancellation.IsCancellationRequested;

        public int Seq { get; set; } = -1;


        public int Position { get; set; }

        public int PromptDone { get; set; }

        public int Generated { get; set; }

        public LLamaToken NextToken { get; set; }

        /// <summary>The tokens in this sequence's cells, in order.</summary>
        public List<LLamaToken> Decoded { get; } = [];

        public int CachedPromptTokens { get; set; }

        public int LogitIndex { get; set; } = -1;

        public void RequestStop() => Interlocked.Exchange(ref _stop, 1);

        /// <summary>Tokens this request put into the current step's batch, and how many of them were prompt.</summary>
        public int StepTokens { get; set; }

        public int StepPromptTokens { get; set; }

        /// <summary>Undoes the current step's additions after a decode that found no room.</summary>
        public void Rewind()
        {
            Position -= StepTokens;
            PromptDone -= StepPromptTokens;
            Decoded.RemoveRange(Decoded.Count - StepTokens, StepTokens);
        }
    }
}
