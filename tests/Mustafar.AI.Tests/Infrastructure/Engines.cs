using LLama.Native;
using Microsoft.Extensions.Logging.Abstractions;
using Mustafar.AI.Engine;
using Mustafar.AI.Mapping;

namespace Mustafar.AI.Tests.Infrastructure;

/// <summary>Loads the real engine on our backend or on llama.cpp's own CPU backend, and drives it greedily.</summary>
internal static class Engines
{
    public static Task<LlamaEngine> LoadAsync(string modelPath, bool mustafar, int contextSize = 2048, int batchSize = 512) =>
        LlamaEngine.LoadAsync(Options(modelPath, mustafar, contextSize, batchSize), NullLogger.Instance, CancellationToken.None);

    /// <summary>Options for the real engine; sparsity 0 (a dense cache) unless a test asks for pruning.</summary>
    public static MustafarOptions Options(string modelPath, bool mustafar, int contextSize = 2048, int batchSize = 512,
        double sparsity = 0, int window = 32) => new()
    {
        ModelPath = modelPath,
        ContextSize = contextSize,
        BatchSize = batchSize,
        UseMustafarBackend = mustafar,
        Threads = 2,
        KSparsity = sparsity,
        VSparsity = sparsity,
        LocalWindow = window,
    };

    public static readonly SamplingSettings Greedy = new(0f, 0, 1f, 0);

    public static async Task<List<int>> GreedyTokensAsync(LlamaEngine engine, string prompt, int count)
    {
        var tokens = new List<int>();
        var promptTokens = engine.Tokenize(prompt, addBos: true, special: false);
        await foreach (var step in engine.GenerateAsync(promptTokens, Greedy, count, CancellationToken.None))
        {
            if (step.End != GenerationEnd.None)
            {
                break;
            }

            tokens.Add((int)step.Token);
        }

        return tokens;
    }

    public static string Text(LlamaEngine engine, IEnumerable<int> tokens) =>
        engine.Detokenize(tokens.Select(t => (LLamaToken)t));
}
