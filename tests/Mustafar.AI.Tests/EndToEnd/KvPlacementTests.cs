using Mustafar.AI.Tests.Infrastructure;

namespace Mustafar.AI.Tests.EndToEnd;

/// <summary>llama.cpp itself reports every layer's KV cache on our device, and our buffers hold it.</summary>
public sealed class KvPlacementTests
{
    [SkippableFact]
    public async Task LlamaCppLogsEveryLayersKvCacheOnTheMustafarDevice()
    {
        await using var engine = await Engines.LoadAsync(TestPaths.Stories, mustafar: true, contextSize: 256);
        Assert.Equal(engine.Shape.LayerCount, engine.KvLayerDevices.Count);
        Assert.All(engine.KvLayerDevices.Values, dev => Assert.Equal("Mustafar", dev));
    }

    [SkippableFact]
    public async Task KvStatisticsCountTheCacheTensorsAndDisposeReleasesThem()
    {
        long kvBytes;
        await using (var engine = await Engines.LoadAsync(TestPaths.Stories, mustafar: true, contextSize: 256))
        {
            var stats = engine.GetKvStatistics()!;
            // stories260K: 5 layers x (K, V) x 256 cells x (4 kv heads x 8) x f16
            Assert.Equal(10, stats.CacheTensors);
            kvBytes = stats.KvBytes;
            Assert.Equal(10L * 256 * 32 * 2, stats.KvDenseBytes);
            Assert.True(kvBytes >= stats.KvDenseBytes);
        }

        Assert.Equal(0ul, Mustafar.AI.Native.NativeBackend.EnsureRegistered().GetKvStats().KvTensors);
    }

    [SkippableFact]
    public async Task PlainCpuReferenceKeepsTheCacheOnTheCpu()
    {
        await using var engine = await Engines.LoadAsync(TestPaths.Stories, mustafar: false, contextSize: 256);
        Assert.All(engine.KvLayerDevices.Values, dev => Assert.Equal("CPU", dev));
        Assert.Null(engine.GetKvStatistics());
    }
}
