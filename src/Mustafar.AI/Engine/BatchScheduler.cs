using System.Runtime.CompilerServices;
using System.Threading.Channels;
using LLama;
using LLama.Native;
using Mustafar.AI.Mapping;

namespace Mustafar.AI.Engine;

/// <summary>
/// Continuous batching over one llama.cpp context: every running request is a sequence, and each
/// step decodes one token of every generating sequence plus prompt chunks of newly admitted ones,
/// in one batch. Requests join between steps and leave when done; beyond the sequence limit they
/// wait in FIFO order, and beyond the queue limit submitters wait (back-pressure). Only the loop's
/// thread touches the context.
/// </summary>
internal sealed class BatchScheduler : IAsyncDisposable
{
    private readonly LLamaContext _context;
    private readonly SafeLlamaModelHandle.Vocabulary _vocab;
    private readonly Channel<Request> _queue;
    private readonly SemaphoreSlim _wake = new(0);
    private readonly CancellationTokenSource _shutdown = new();
    private readonly Thread _loop;
    private readonly int _maxSequences;

    public BatchScheduler(LLamaContext context, LLamaWeights weights, int maxSequences, int maxQueued)
    {
        _context = context;
        _vocab = weights.NativeHandle.Vocab;
        _maxSequences = maxSequences;
        _queue = Channel.CreateBounded<Request>(new BoundedChannelOptions(maxQueued) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true });
        _loop = new Thread(Loop) { IsBackground = true, Name = "Mustafar batch scheduler" };
        _loop.Start();
    }

    /// <summary>Requests running now (sequences in the context).</summary>
    public int Running { get; private set; }

    /// <summary>Streams the tokens of one request; enumeration ends with a token whose End is set, or by Stop.</summary>
    public async IAsyncEnumerable<GeneratedToken> RunAsync(IReadOnlyList<LLamaToken> prompt, SamplingSettings sampling, int maxTokens,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var request = new Request(prompt, sampling, maxTokens, cancellationToken);
        await _queue.Writer.WriteAsync(request, cancellationToken).ConfigureAwait(false);
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
        var free = new Stack<int>(Enumerable.Range(0, _maxSequences).Reverse());
        var active = new List<Request>();
        var batch = new LLamaBatch();
        var handle = _context.NativeHandle;
        int batchSize = (int)_context.BatchSize;
        int contextSize = (int)_context.ContextSize;
        try
        {
            while (!_shutdown.IsCancellationRequested)
            {
                foreach (var r in active.Where(r => r.Stopped).ToList())
                {
                    Finish(r, null);
                }

                while (free.Count > 0 && _queue.Reader.TryRead(out var next))
                {
                    if (next.Stopped)
                    {
                        next.Output.Writer.TryComplete();
                        continue;
                    }

                    next.Seq = free.Pop();
                    next.Chain = next.Sampling.CreateChain();
                    active.Add(next);
                }

                Running = active.Count;
                if (active.Count == 0)
                {
                    _wake.Wait(_shutdown.Token);
                    continue;
                }

                // Generating sequences first (one token each), then prompt chunks with what is left.
                batch.Clear();
                int budget = batchSize;
                foreach (var r in active)
                {
                    r.LogitIndex = -1;
                    r.StepTokens = r.StepPromptTokens = 0;
                }

                foreach (var r in active.Where(r => r.PromptDone == r.Prompt.Count))
                {
                    r.LogitIndex = batch.TokenCount;
                    r.StepTokens = 1;
                    batch.Add(r.NextToken, r.Position++, (LLamaSeqId)r.Seq, true);
                    budget--;
                }

                foreach (var r in active.Where(r => r.PromptDone < r.Prompt.Count))
                {
                    int n = Math.Min(budget, r.Prompt.Count - r.PromptDone);
                    r.StepTokens = r.StepPromptTokens = n;
                    for (int i = 0; i < n; i++)
                    {
                        bool last = r.PromptDone + 1 == r.Prompt.Count;
                        if (last)
                        {
                            r.LogitIndex = batch.TokenCount;
                        }

                        batch.Add(r.Prompt[r.PromptDone++], r.Position++, (LLamaSeqId)r.Seq, last);
                    }

                    budget -= n;
                    if (budget == 0)
                    {
                        break;
                    }
                }

                var result = handle.Decode(batch);
                if (result == DecodeResult.NoKvSlot)
                {
                    // The shared cache is full: end the request holding the most cells and retry.
                    var largest = active.MaxBy(r => r.Position)!;
                    foreach (var r in active)
                    {
                        r.Rewind();
                    }

                    Emit(largest, new GeneratedToken(default, GenerationEnd.ContextFull));
                    Finish(largest, null);
                    continue;
                }

                if (result != DecodeResult.Ok)
                {
                    var error = new InvalidOperationException($"llama_decode failed with {result} ({(int)result}); see the llama.cpp log.");
                    foreach (var r in active.ToList())
                    {
                        Finish(r, error);
                    }

                    continue;
                }

                foreach (var r in active.Where(r => r.LogitIndex >= 0).ToList())
                {
                    if (r.Stopped)
                    {
                        continue;
                    }

                    var token = r.Chain!.Sample(handle, r.LogitIndex);
                    if (token.IsEndOfGeneration(_vocab))
                    {
                        Emit(r, new GeneratedToken(token, GenerationEnd.EndOfGeneration));
                        Finish(r, null);
                        continue;
                    }

                    Emit(r, new GeneratedToken(token, GenerationEnd.None));
                    r.NextToken = token;
                    if (++r.Generated >= r.MaxTokens || r.Position >= contextSize)
                    {
                        Emit(r, new GeneratedToken(default, r.Generated >= r.MaxTokens ? GenerationEnd.MaxTokens : GenerationEnd.ContextFull));
                        Finish(r, null);
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
            foreach (var r in active.ToList())
            {
                Finish(r, disposed);
            }

            while (_queue.Reader.TryRead(out var waiting))
            {
                waiting.Output.Writer.TryComplete(disposed);
            }
        }

        void Finish(Request r, Exception? error)
        {
            handle.MemorySequenceRemove((LLamaSeqId)r.Seq, -1, -1);  // its cells are free at once
            r.Chain?.Dispose();
            r.Output.Writer.TryComplete(error);
            active.Remove(r);
            free.Push(r.Seq);
            Running = active.Count;
        }

        static void Emit(Request r, GeneratedToken token) => r.Output.Writer.TryWrite(token);
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _shutdown.CancelAsync().ConfigureAwait(false);
        _wake.Release();
        _loop.Join();
        _shutdown.Dispose();
        _wake.Dispose();
    }

    private sealed class Request(IReadOnlyList<LLamaToken> prompt, SamplingSettings sampling, int maxTokens, CancellationToken cancellation)
    {
        private int _stop;

        public IReadOnlyList<LLamaToken> Prompt { get; } = prompt;

        public SamplingSettings Sampling { get; } = sampling;

        public int MaxTokens { get; } = maxTokens;

        public Channel<GeneratedToken> Output { get; } = Channel.CreateUnbounded<GeneratedToken>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });

        public bool Stopped => Volatile.Read(ref _stop) != 0 || cancellation.IsCancellationRequested;

        public int Seq { get; set; } = -1;

        public SafeLLamaSamplerChainHandle? Chain { get; set; }

        public int Position { get; set; }

        public int PromptDone { get; set; }

        public int Generated { get; set; }

        public LLamaToken NextToken { get; set; }

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
        }
    }
}
