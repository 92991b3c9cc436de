using Microsoft.Extensions.AI;
using Mustafar.AI.Tests.Infrastructure;

namespace Mustafar.AI.Tests.ChatClient;

/// <summary>ConversationId continues a chat kept by the client; with prefix reuse its history is not decoded again.</summary>
public sealed class ConversationTests
{
    [SkippableFact]
    public async Task ASecondTurnByConversationIdSeesTheHistoryAndReusesItsCache()
    {
        using var client = await MustafarChatClientFactory.CreateAsync(new MustafarOptions
        {
            ModelPath = TestPaths.Stories,
            ContextSize = 512,
            Threads = 2,
            CachedPrefixes = 2,
            KSparsity = 0,
            VSparsity = 0,
        });
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 20, ConversationId = "story-1" };
        var first = await client.GetResponseAsync("Once upon a time", options);
        Assert.Equal("story-1", first.ConversationId);
        var second = await client.GetResponseAsync("The end.", options);

        // The same two turns sent in full to a stateless request.
        var full = await client.GetResponseAsync(
            [new ChatMessage(ChatRole.User, "Once upon a time"), new ChatMessage(ChatRole.Assistant, first.Text), new ChatMessage(ChatRole.User, "The end.")],
            new ChatOptions { Temperature = 0, MaxOutputTokens = 20 });
        Assert.Equal(full.Text, second.Text);
        Assert.Equal(full.Usage!.InputTokenCount, second.Usage!.InputTokenCount);
        Assert.True(second.Usage.CachedInputTokenCount >= first.Usage!.InputTokenCount,
            $"second turn reused {second.Usage.CachedInputTokenCount} tokens; the first prompt had {first.Usage.InputTokenCount}");
    }

    [SkippableFact]
    public async Task TheTokenizerCountsAndRoundTripsText()
    {
        using var client = await MustafarChatClientFactory.CreateAsync(new MustafarOptions { ModelPath = TestPaths.Stories, ContextSize = 128 });
        var tokenizer = client.GetService<MustafarTokenizer>()!;
        var ids = tokenizer.Encode("Once upon a time");
        Assert.Equal(ids.Count, tokenizer.CountTokens("Once upon a time"));
        Assert.Equal(" Once upon a time", tokenizer.Decode(ids));
        var response = await client.GetResponseAsync("Once upon a time", new ChatOptions { Temperature = 0, MaxOutputTokens = 5 });
        Assert.Equal(tokenizer.Encode("Once upon a time", addBos: true).Count, response.Usage!.InputTokenCount);
    }

    [SkippableFact]
    public async Task DecodingAnIdOutsideTheVocabularyFailsInsteadOfEndingTheProcess()
    {
        // llama.cpp looks an id up with std::vector::at: past the table, a C++ exception that ended the process.
        using var client = await MustafarChatClientFactory.CreateAsync(new MustafarOptions { ModelPath = TestPaths.Stories, ContextSize = 128 });
        var tokenizer = client.GetService<MustafarTokenizer>()!;
        Assert.Equal(512, tokenizer.VocabularySize);
        foreach (int id in new[] { 512, -1, int.MaxValue })
        {
            var error = Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([1, id]));
            Assert.Contains($"Token id {id} is not in the model's vocabulary of 512 tokens.", error.Message, StringComparison.Ordinal);
        }

        Assert.Equal(" Once", tokenizer.Decode(tokenizer.Encode("Once")));
    }
}
