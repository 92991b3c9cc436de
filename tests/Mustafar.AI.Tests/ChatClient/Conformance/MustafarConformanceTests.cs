using Microsoft.Extensions.AI;
using Mustafar.AI.Tests.Infrastructure;

namespace Mustafar.AI.Tests.ChatClient.Conformance;

/// <summary>The conformance suite on the real stories260K model with a dense cache.</summary>
public sealed class DenseCacheConformanceTests : ChatClientConformanceTests
{
    protected override string SkipReason => "shared model stories260K-f32.gguf is not present";

    protected override async Task<IChatClient?> CreateClientAsync() => await Clients.StoriesAsync(0);
}

/// <summary>The same suite with the Mustafar cache pruning 70 % of K and V outside an 8-token window.</summary>
public sealed class MustafarCacheConformanceTests : ChatClientConformanceTests
{
    protected override string SkipReason => "shared model stories260K-f32.gguf is not present";

    protected override async Task<IChatClient?> CreateClientAsync() => await Clients.StoriesAsync(0.7);
}

internal static class Clients
{
    public static async Task<IChatClient?> StoriesAsync(double sparsity)
    {
        string path = Path.Combine(TestPaths.ModelsDir, "stories260K-f32.gguf");
        return File.Exists(path)
            ? await MustafarChatClientFactory.CreateAsync(new MustafarOptions
            {
                ModelPath = path,
                ContextSize = 512,
                Threads = 2,
                KSparsity = sparsity,
                VSparsity = sparsity,
                LocalWindow = 8,
            })
            : null;
    }
}
