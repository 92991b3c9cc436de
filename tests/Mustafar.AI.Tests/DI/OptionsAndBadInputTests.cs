using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Mustafar.AI.Native;
using Mustafar.AI.Tests.Infrastructure;
using Mustafar.Gguf;

namespace Mustafar.AI.Tests.DI;

/// <summary>Invalid options and bad model files fail with specific messages and leave no native memory behind.</summary>
public sealed class OptionsAndBadInputTests
{
    public static TheoryData<Action<MustafarOptions>, string> InvalidOptions => new()
    {
        { o => o.ModelPath = "", "ModelPath is required" },
        { o => o.ModelPath = "/nonexistent/model.gguf", "'/nonexistent/model.gguf' does not exist" },
        { o => o.KSparsity = 0.95, "KSparsity must be between 0 (dense) and 0.9; got 0.95" },
        { o => o.VSparsity = -0.1, "VSparsity must be between 0 (dense) and 0.9; got -0.1" },
        { o => o.KSparsity = double.NaN, "KSparsity must be between" },
        { o => o.LocalWindow = -1, "LocalWindow must be 0 or more tokens; got -1" },
        { o => o.ContextSize = -5, "ContextSize must be 0" },
        { o => o.BatchSize = 0, "BatchSize must be at least 1" },
        { o => o.Threads = 0, "Threads must be at least 1" },
        { o => o.DefaultMaxOutputTokens = 0, "DefaultMaxOutputTokens must be at least 1" },
    };

    [Theory]
    [MemberData(nameof(InvalidOptions))]
    public async Task EachInvalidOptionFailsValidationOnStartWithASpecificMessage(Action<MustafarOptions> breakIt, string expected)
    {
        string model = TempGguf();
        var services = new ServiceCollection();
        services.AddMustafarChatClient(o =>
        {
            o.ModelPath = model;
            breakIt(o);
        });
        await using var provider = services.BuildServiceProvider();
        // ValidateOnStart: what the host runs at start-up.
        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate());
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task OptionsBindFromAConfigurationSection()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Mustafar:ModelPath"] = "/nonexistent/x.gguf",
            ["Mustafar:KSparsity"] = "0.7",
            ["Mustafar:LocalWindow"] = "64",
        }).Build();
        var services = new ServiceCollection();
        services.AddMustafarChatClient(config.GetSection("Mustafar"));
        await using var provider = services.BuildServiceProvider();
        var options = provider.GetRequiredService<IOptions<MustafarOptions>>();
        var error = Assert.Throws<OptionsValidationException>(() => options.Value);
        Assert.Contains("'/nonexistent/x.gguf' does not exist", error.Message, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task KeyedClientUsesItsOwnOptionsAndIsDisposedWithTheContainer()
    {
        string model = TestPaths.Stories;
        var services = new ServiceCollection();
        services.AddKeyedMustafarChatClient("stories", o =>
        {
            o.ModelPath = model;
            o.ContextSize = 128;
        });
        await using (var provider = services.BuildServiceProvider())
        {
            var client = provider.GetRequiredKeyedService<IChatClient>("stories");
            Assert.Equal(128, client.GetService<MustafarOptions>()!.ContextSize);
            Assert.True(NativeBackend.EnsureRegistered().GetKvStats().KvTensors > 0);
        }

        Assert.Equal(0ul, NativeBackend.EnsureRegistered().GetKvStats().KvTensors);
    }

    [Fact]
    public async Task MissingModelFileThrowsFileNotFound()
    {
        var options = new MustafarOptions { ModelPath = "/nonexistent/model.gguf" };
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => MustafarChatClientFactory.CreateAsync(options));
        Assert.Contains("does not exist", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AFileThatIsNotGgufIsRejectedBeforeLlamaCppSeesIt()
    {
        string path = TestPaths.TempFile("notes.gguf");
        await File.WriteAllTextAsync(path, "these are not the weights you are looking for");
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => MustafarChatClientFactory.CreateAsync(new MustafarOptions { ModelPath = path }));
        Assert.Contains("is not a GGUF file", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnUnsupportedArchitectureIsRefusedByName()
    {
        string path = TestPaths.TempFile("gpt2.gguf");
        SyntheticLlama.Write(path, SyntheticLlamaSpec.Tiny, architectureOverride: "gpt2");
        var error = await Assert.ThrowsAsync<NotSupportedException>(() => MustafarChatClientFactory.CreateAsync(new MustafarOptions { ModelPath = path }));
        Assert.Contains("'gpt2' model", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnUnsupportedHeadSizeIsRefusedAtLoad()
    {
        string path = TestPaths.TempFile("hd12.gguf");
        SyntheticLlama.Write(path, SyntheticLlamaSpec.Tiny with { EmbeddingLength = 48, HeadCount = 4, KvHeadCount = 2, HeadDim = 12 });
        var error = await Assert.ThrowsAsync<NotSupportedException>(() => MustafarChatClientFactory.CreateAsync(new MustafarOptions { ModelPath = path }));
        Assert.Contains("head size 12", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RepeatedLoadAndDisposeLeavesNoCacheBuffersBehind()
    {
        string path = TempGguf();
        for (int i = 0; i < 3; i++)
        {
            await using var client = (IAsyncDisposable)await MustafarChatClientFactory.CreateAsync(new MustafarOptions { ModelPath = path, ContextSize = 64 });
        }

        Assert.Equal(0ul, NativeBackend.EnsureRegistered().GetKvStats().KvTensors);
    }

    private static string TempGguf()
    {
        string path = TestPaths.TempFile("tiny.gguf");
        SyntheticLlama.Write(path, SyntheticLlamaSpec.Tiny);
        return path;
    }
}
