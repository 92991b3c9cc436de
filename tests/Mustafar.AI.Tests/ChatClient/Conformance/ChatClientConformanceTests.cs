using System.Text.Json;
using Microsoft.Extensions.AI;

namespace Mustafar.AI.Tests.ChatClient.Conformance;

/// <summary>
/// What any IChatClient of this project must do, in the manner of dotnet/extensions'
/// ChatClientIntegrationTests; a subclass supplies the client (or null to skip, saying why).
/// </summary>
public abstract class ChatClientConformanceTests : IAsyncLifetime
{
    private IChatClient? _client;

    protected IChatClient Client => _client ?? throw new SkipException(SkipReason);

    protected abstract string SkipReason { get; }

    protected abstract Task<IChatClient?> CreateClientAsync();

    public async Task InitializeAsync() => _client = await CreateClientAsync();

    public Task DisposeAsync()
    {
        _client?.Dispose();
        return Task.CompletedTask;
    }

    private static ChatOptions Options(int maxTokens = 16) => new() { Temperature = 0, MaxOutputTokens = maxTokens };

    [SkippableFact]
    public async Task GetResponseReturnsOneAssistantMessageWithUsage()
    {
        var response = await Client.GetResponseAsync("Once upon a time", Options());
        var message = Assert.Single(response.Messages);
        Assert.Equal(ChatRole.Assistant, message.Role);
        Assert.False(string.IsNullOrEmpty(response.Text));
        Assert.NotNull(response.ResponseId);
        Assert.True(response.Usage!.InputTokenCount > 0);
        Assert.True(response.Usage.OutputTokenCount is > 0 and <= 16);
        Assert.Equal(response.Usage.InputTokenCount + response.Usage.OutputTokenCount, response.Usage.TotalTokenCount);
    }

    [SkippableFact]
    public async Task StreamingHasOneResponseIdOneMessageIdAndExactlyOneUsage()
    {
        var updates = await Client.GetStreamingResponseAsync("Once upon a time", Options()).ToListAsync();
        Assert.Single(updates.Select(u => u.ResponseId).Distinct());
        Assert.Single(updates.Select(u => u.MessageId).Distinct());
        Assert.Single(updates.SelectMany(u => u.Contents).OfType<UsageContent>());
        Assert.All(updates, u => Assert.Equal(ChatRole.Assistant, u.Role));
        Assert.NotNull(updates[^1].FinishReason);
    }

    [SkippableFact]
    public async Task MaxOutputTokensEndsWithLength()
    {
        var response = await Client.GetResponseAsync("Once upon a time", Options(3));
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);
        Assert.Equal(3, response.Usage!.OutputTokenCount);
    }

    [SkippableFact]
    public async Task StopSequenceIsNotReturnedAndEndsWithStop()
    {
        var free = await Client.GetResponseAsync("Once upon a time", Options(40));
        string stop = free.Text.Trim().Split(' ')[^2];  // a word the model does write
        var options = Options(40);
        options.StopSequences = [stop];
        var response = await Client.GetResponseAsync("Once upon a time", options);
        Assert.DoesNotContain(stop, response.Text, StringComparison.Ordinal);
        Assert.StartsWith(response.Text, free.Text, StringComparison.Ordinal);
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
    }

    [SkippableFact]
    public async Task SeedMakesSamplingReproducible()
    {
        var options = new ChatOptions { Temperature = 1.2f, Seed = 42, MaxOutputTokens = 20 };
        var a = await Client.GetResponseAsync("Once upon a time", options);
        var b = await Client.GetResponseAsync("Once upon a time", options);
        Assert.Equal(a.Text, b.Text);
    }

    [SkippableFact]
    public async Task InstructionsAndSeveralMessagesAreAccepted()
    {
        var options = Options();
        options.Instructions = "Tell a story.";
        var response = await Client.GetResponseAsync(
            [new ChatMessage(ChatRole.User, "Once upon a time"), new ChatMessage(ChatRole.Assistant, "there was a dog."), new ChatMessage(ChatRole.User, "The end.")],
            options);
        Assert.True(response.Usage!.OutputTokenCount > 0);
    }

    [SkippableFact]
    public async Task JsonSchemaOutputParses()
    {
        var schema = JsonDocument.Parse("""{"type":"object","properties":{"happy":{"type":"boolean"},"count":{"type":"integer"}}}""").RootElement;
        var response = await Client.GetResponseAsync("Once upon a time",
            new ChatOptions { Temperature = 0, MaxOutputTokens = 60, ResponseFormat = ChatResponseFormat.ForJsonSchema(schema) });
        using var doc = JsonDocument.Parse(response.Text);
        Assert.True(doc.RootElement.GetProperty("happy").ValueKind is JsonValueKind.True or JsonValueKind.False);
    }

    [SkippableFact]
    public async Task CancellationIsHonoured()
    {
        var client = Client;  // outside the assertion, so that a missing model skips instead of failing it
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.GetResponseAsync("Once upon a time", Options(), cts.Token));
    }

    [SkippableFact]
    public void MetadataNamesTheProviderAndModel()
    {
        var metadata = Client.GetService<ChatClientMetadata>();
        Assert.Equal("mustafar", metadata?.ProviderName);
        Assert.False(string.IsNullOrEmpty(metadata?.DefaultModelId));
        Assert.Null(Client.GetService<ChatClientMetadata>("some key"));
    }
}
