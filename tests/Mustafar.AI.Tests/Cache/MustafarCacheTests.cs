using System.Globalization;
using System.Text.RegularExpressions;
using LLama.Native;
using Microsoft.Extensions.Logging.Abstractions;
using Mustafar.AI.Engine;
using Mustafar.AI.Native;
using Mustafar.AI.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Mustafar.AI.Tests.Cache;

/// <summary>The Mustafar cache inside real llama.cpp runs: memory, the dense window, cache operations.</summary>
public sealed partial class MustafarCacheTests(ITestOutputHelper output)
{
    [SkippableTheory]
    [InlineData(0.5, 144)]
    [InlineData(0.7, 96)]
    public async Task AllocatedKvBytesEqualTheFormatsFormulaAndLlamaCppLogsThem(double sparsity, int recordBytes)
    {
        string path = TestPaths.Recall;  // 6 layers, 2 KV heads, head_dim 128
        var options = Engines.Options(path, mustafar: true, contextSize: 2048, batchSize: 512, sparsity: sparsity, window: 32);
        options.MaxConcurrentRequests = 1;
        double? loggedMiB = null;
        LlamaEngine engine;
        using (LlamaLog.Subscribe((_, line) =>
               {
                   var m = KvBufferLine().Match(line);
                   if (m.Success)
                   {
                       loggedMiB = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
                   }
               }))
        {
            engine = await LlamaEngine.LoadAsync(options, NullLogger.Instance, CancellationToken.None);
        }

        await using var _ = engine;
        // Per cache tensor: 2048 cells x 2 heads x record, plus the dense pool of 1 x 32 + 512 rows x 256 f16.
        long perTensor = 2048L * 2 * recordBytes + (32 + 512) * 256L * 2;
        var stats = engine.GetKvStatistics()!;
        Assert.Equal(12, stats.CacheTensors);
        Assert.Equal(12 * perTensor, stats.KvBytes);
        Assert.Equal(12 * 2048L * 256 * 2, stats.KvDenseBytes);
        Assert.NotNull(loggedMiB);
        Assert.Equal(stats.KvBytes / 1048576.0, loggedMiB!.Value, 2);
        output.WriteLine($"s={sparsity}: {stats.KvBytes} B ({stats.Ratio:P1} of f16, {stats.BytesPerElement:F3} B/element); llama.cpp logged {loggedMiB} MiB");
    }

    [SkippableTheory]
    [InlineData("stories260K-f32.gguf")]
    [InlineData("babyllama-tok105-f32.gguf")]
    public async Task SparsityZeroThroughTheCompressedStoreGivesTheDenseTokens(string model)
    {
        string path = TestPaths.Model(model);
        List<int> dense, stored;
        await using (var engine = await Engines.LoadAsync(path, mustafar: true, contextSize: 256))
        {
            dense = await Engines.GreedyTokensAsync(engine, "Once upon a time", 64);
        }

        var options = Engines.Options(path, mustafar: true, contextSize: 256, window: 8);
        options.ForceCompressedStore = true;
        await using (var engine = await LlamaEngine.LoadAsync(options, NullLogger.Instance, CancellationToken.None))
        {
            stored = await Engines.GreedyTokensAsync(engine, "Once upon a time", 64);
            var stats = engine.GetKvStatistics()!;
            Assert.True(stats.CompressedRows > 0, "the store compressed rows (lossless at s = 0)");
        }

        Assert.Equal(dense, stored);
    }

    [SkippableFact]
    public async Task ThreeInterleavedSequencesEachKeepTheirLastWTokensDense()
    {
        const int window = 8;
        var options = Engines.Options(TestPaths.Stories, mustafar: true, contextSize: 512, batchSize: 128, sparsity: 0.5, window: window);
        options.MaxConcurrentRequests = 3;
        await using var engine = await LlamaEngine.LoadAsync(options, NullLogger.Instance, CancellationToken.None);
        var driver = new Driver(engine);
        int tensors = engine.Shape.LayerCount * 2;
        var rng = new Random(3);
        int[] lengths = [5, 20, 41];
        LLamaToken[] RandomTokens(int n) => Enumerable.Range(0, n).Select(_ => (LLamaToken)rng.Next(3, 500)).ToArray();

        driver.Decode([.. lengths.Select((n, seq) => (seq, (IReadOnlyList<LLamaToken>)RandomTokens(n), 0))]);
        Check("after the three prompts in one batch");
        for (int step = 0; step < 12; step++)
        {
            // Sequence 1 sits out every third step: an idle sequence keeps its window.
            var active = Enumerable.Range(0, 3).Where(seq => seq != 1 || step % 3 != 0).ToList();
            driver.Decode([.. active.Select(seq => (seq, (IReadOnlyList<LLamaToken>)RandomTokens(1), lengths[seq]))]);
            foreach (int seq in active)
            {
                lengths[seq]++;
            }

            Check($"after interleaved step {step + 1}");
        }

        void Check(string when)
        {
            var stats = engine.GetKvStatistics()!;
            long dense = lengths.Sum(n => Math.Min(n, window)), compressed = lengths.Sum(n => Math.Max(0, n - window));
            Assert.True(tensors * dense == stats.DenseRows && tensors * compressed == stats.CompressedRows,
                $"{when}: lengths {string.Join("/", lengths)} expect {dense} dense and {compressed} compressed rows per tensor; " +
                $"the backend holds {stats.DenseRows / (double)tensors} and {stats.CompressedRows / (double)tensors}");
        }
    }

    [SkippableFact]
    public async Task SaveRestoreAndContinueGivesIdenticalTokensOverACompressedCache()
    {
        var options = Engines.Options(TestPaths.Stories, mustafar: true, contextSize: 256, sparsity: 0.7, window: 8);
        await using var engine = await LlamaEngine.LoadAsync(options, NullLogger.Instance, CancellationToken.None);
        var driver = new Driver(engine);
        var prompt = engine.Tokenize("Once upon a time, there was a little girl", addBos: true, special: false);
        var (_, lastLogits) = driver.Greedy(driver.Decode((0, prompt, 0))[0], prompt.Count, 20);
        int position = prompt.Count + 20;
        Assert.True(engine.GetKvStatistics()!.CompressedRows > 0);

        string file = TestPaths.TempFile("state.bin");
        engine.Context.SaveState(file);
        var (continued, _) = driver.Greedy(lastLogits, position, 20);

        engine.Context.NativeHandle.MemoryClear(true);
        engine.Context.LoadState(file);
        var (afterRestore, _) = driver.Greedy(lastLogits, position, 20);
        Assert.Equal(continued, afterRestore);

        // The same through one sequence's state.
        engine.Context.NativeHandle.MemoryClear(true);
        engine.Context.LoadState(file);
        string seqFile = TestPaths.TempFile("seq0.bin");
        engine.Context.SaveState(seqFile, LLamaSeqId.Zero);
        engine.Context.NativeHandle.MemoryClear(true);
        engine.Context.LoadState(seqFile, LLamaSeqId.Zero);
        var (afterSequenceRestore, _) = driver.Greedy(lastLogits, position, 20);
        Assert.Equal(continued, afterSequenceRestore);
        output.WriteLine(engine.Detokenize(continued.Select(t => (LLamaToken)t)));
    }

    [SkippableFact]
    public async Task CopiedAndRemovedSequencesKeepWorkingOnCompressedCells()
    {
        var options = Engines.Options(TestPaths.Stories, mustafar: true, contextSize: 256, sparsity: 0.5, window: 4);
        options.MaxConcurrentRequests = 2;
        await using var engine = await LlamaEngine.LoadAsync(options, NullLogger.Instance, CancellationToken.None);
        var driver = new Driver(engine);
        var prompt = engine.Tokenize("Once upon a time, there was a little girl named", addBos: true, special: false);
        var logits = driver.Decode((0, prompt, 0))[0];
        var handle = engine.Context.NativeHandle;

        // A copy of sequence 0 shares its (compressed) cells and continues identically.
        handle.MemorySequenceCopy((LLamaSeqId)0, (LLamaSeqId)1, 0, prompt.Count);
        var token = (LLamaToken)Driver.ArgMax(logits);
        var both = driver.Decode((0, [token], prompt.Count), (1, [token], prompt.Count));
        Assert.Equal(both[0], both[1]);

        // Removing the copy leaves sequence 0 working: it decodes on, with finite logits.
        handle.MemorySequenceRemove((LLamaSeqId)1, -1, -1);
        var after = driver.Decode((0, [(LLamaToken)Driver.ArgMax(both[0])], prompt.Count + 1))[0];
        Assert.All(after, x => Assert.True(float.IsFinite(x)));

        // Cells are reused after a clear: the same prompt gives the same logits again.
        handle.MemoryClear(true);
        var again = driver.Decode((0, prompt, 0))[0];
        Assert.Equal(logits, again);
    }

    [GeneratedRegex(@"Mustafar KV buffer size =\s+([0-9.]+) MiB")]
    private static partial Regex KvBufferLine();
}
