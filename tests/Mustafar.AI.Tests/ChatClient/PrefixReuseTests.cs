using Microsoft.Extensions.AI;
using Mustafar.AI.Tests.Infrastructure;

namespace Mustafar.AI.Tests.ChatClient;

/// <summary>A prompt that starts like a cached one (same document, new question) reuses its cells.</summary>
public sealed class PrefixReuseTests
{
    private static ChatOptions Greedy(int n) => new() { Temperature = 0, MaxOutputTokens = n };

    private static Task<IChatClient> CreateAsync(double sparsity, int cachedPrefixes) =>
        MustafarChatClientFactory.CreateAsync(new MustafarOptions
        {
            ModelPath = TestPaths.Recall,
            ContextSize = 2048,
            Threads = 2,
            KSparsity = sparsity,
            VSparsity = sparsity,
            CachedPrefixes = cachedPrefixes,
        });

    [SkippableTheory]
    [InlineData(0.0)]
    [InlineData(0.5)]
    public async Task SecondQuestionOnTheSameDocumentReusesItAndAnswersAsAFreshClient(double sparsity)
    {
        var prompts = RecallPrompts.Create(6, seed: 5, minChars: 900, maxChars: 1500);
        var document = prompts[0].Document;
        // Questions about facts of the same document: take a document with two prose facts.
        string[] questions = [.. prompts.Select(p => p.Question).Take(1)];
        using var reusing = await CreateAsync(sparsity, cachedPrefixes: 2);
        var first = await reusing.GetResponseAsync($"{document} {questions[0]}", Greedy(4));
        var second = await reusing.GetResponseAsync($"{document} {questions[0]}", Greedy(4));
        Assert.Equal(0, first.Usage!.CachedInputTokenCount);
        Assert.True(second.Usage!.CachedInputTokenCount >= document.Length, $"cached {second.Usage.CachedInputTokenCount} of {second.Usage.InputTokenCount}");
        Assert.Equal(first.Text, second.Text);
        Assert.Equal(prompts[0].Answer, first.Text);

        // Other questions on the document reuse it and answer like a client without the cache.
        using var fresh = await CreateAsync(sparsity, cachedPrefixes: 0);
        foreach (var p in prompts.Skip(1).Take(3))
        {
            string prompt = $"{document} {p.Question}";
            var reused = await reusing.GetResponseAsync(prompt, Greedy(4));
            var plain = await fresh.GetResponseAsync(prompt, Greedy(4));
            Assert.True(reused.Usage!.CachedInputTokenCount >= document.Length);
            Assert.Equal(0, plain.Usage!.CachedInputTokenCount);
            if (sparsity == 0)
            {
                Assert.Equal(plain.Text, reused.Text);
            }
        }
    }
}
