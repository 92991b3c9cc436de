using System.Diagnostics.Metrics;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Mustafar.AI.Tests.Infrastructure;

namespace Mustafar.AI.Tests.ChatClient;

/// <summary>The IChatClient surface on the real stories260K model, resolved through DI.</summary>
public sealed class ChatClientTests : IAsyncLifetime
{
    private const string KnownStory = ", there was a little girl named Lily. She loved to play outside in the park.";
    private ServiceProvider? _services;
    private IChatClient _client = null!;

    public Task InitializeAsync()
    {
        string model = Path.Combine(TestPaths.ModelsDir, "stories260K-f32.gguf");
        if (!File.Exists(model))
        {
            return Task.CompletedTask;
        }

        var services = new ServiceCollection();
        services.AddMustafarChatClient(o =>
        {
            o.ModelPath = model;
            o.ContextSize = 256;
            o.Threads = 2;
        });
        _services = services.BuildServiceProvider();
        _client = _services.GetRequiredService<IChatClient>();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        if (_services is not null)
        {
            await _services.DisposeAsync();
        }
    }

    private void RequireModel() => Skip.If(_services is null, "shared model stories260K-f32.gguf is not present");

    private static ChatOptions Greedy(int maxTokens) => new() { Temperature = 0, MaxOutputTokens = maxTokens };

    [SkippableFact]
    public async Task GetResponseAtTemperatureZeroContinuesWithTheKnownStory()
    {
        RequireModel();
        var response = await _client.GetResponseAsync("Once upon a time", Greedy(40));
        Assert.StartsWith(KnownStory, response.Text, StringComparison.Ordinal);
        Assert.Equal(ChatRole.Assistant, response.Messages.Single().Role);
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);
        Assert.Equal(40, response.Usage!.OutputTokenCount);
        Assert.True(response.Usage.InputTokenCount > 0);
        Assert.Equal(response.Usage.InputTokenCount + 40, response.Usage.TotalTokenCount);
        Assert.True(response.Usage.AdditionalCounts!["kv_bytes"] > 0);
        Assert.Equal("stories260K-f32", response.ModelId);
    }

    [SkippableFact]
    public async Task EveryEngineStepPublishesItsDurationsToTheMeter()
    {
        RequireModel();
        var seen = new List<(string Name, double Seconds, string? Kind)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == MustafarMetrics.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<double>((instrument, seconds, tags, _) =>
        {
            lock (seen)
            {
                seen.Add((instrument.Name, seconds, KindOf(tags)));
            }
        });
        var tokens = new List<(int Count, string? Kind)>();
        listener.SetMeasurementEventCallback<int>((_, count, tags, _) =>
        {
            lock (tokens)
            {
                tokens.Add((count, KindOf(tags)));
            }
        });
        listener.Start();

        // The prompt's step gives the first token, and then one generation step per token.
        await _client.GetResponseAsync("Once upon a time", Greedy(10));
        listener.Dispose();

        List<(string Name, double Seconds, string? Kind)> of(string name) => seen.Where(m => m.Name == name).ToList();
        var steps = of(MustafarMetrics.StepDuration);
        Assert.Equal(9, steps.Count(m => m.Kind == MustafarMetrics.GenerationStep));
        Assert.Contains(steps, m => m.Kind == MustafarMetrics.PromptStep);
        Assert.Equal(steps.Count, of(MustafarMetrics.DecodeDuration).Count);
        Assert.Equal(steps.Count, of(MustafarMetrics.SampleDuration).Count);
        var decode = of(MustafarMetrics.DecodeDuration);
        var sample = of(MustafarMetrics.SampleDuration);
        for (int i = 0; i < steps.Count; i++)
        {
            Assert.True(decode[i].Seconds > 0 && sample[i].Seconds > 0, "a step decodes and samples");
            Assert.True(decode[i].Seconds + sample[i].Seconds <= steps[i].Seconds, "decode and sampling lie within the step");
        }

        // One request: a generation step decodes its one token, the prompt's step all of the prompt.
        Assert.Equal(steps.Count, tokens.Count);
        Assert.All(tokens.Where(t => t.Kind == MustafarMetrics.GenerationStep), t => Assert.Equal(1, t.Count));
        Assert.True(tokens.Single(t => t.Kind == MustafarMetrics.PromptStep).Count > 1);
    }

    private static string? KindOf(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        foreach (var tag in tags)
        {
            if (tag.Key == MustafarMetrics.StepKindTag)
            {
                return (string?)tag.Value;
            }
        }

        return null;
    }

    [SkippableFact]
    public async Task StreamingYieldsTheSameTextWithOneResponseIdAndOneUsage()
    {
        RequireModel();
        var updates = await _client.GetStreamingResponseAsync("Once upon a time", Greedy(40)).ToListAsync();
        var whole = await _client.GetResponseAsync("Once upon a time", Greedy(40));
        Assert.Equal(whole.Text, string.Concat(updates.Select(u => u.Text)));
        Assert.Single(updates.Select(u => u.ResponseId).Distinct());
        Assert.Single(updates.Select(u => u.MessageId).Distinct());
        Assert.Single(updates.SelectMany(u => u.Contents).OfType<UsageContent>());
        Assert.Equal(ChatFinishReason.Length, updates[^1].FinishReason);
    }

    [SkippableFact]
    public async Task StopSequenceEndsTheResponseBeforeTheSequence()
    {
        RequireModel();
        var options = Greedy(60);
        options.StopSequences = ["Lily"];
        var response = await _client.GetResponseAsync("Once upon a time", options);
        Assert.Equal(", there was a little girl named ", response.Text);
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
    }

    [SkippableFact]
    public async Task SameSeedGivesTheSameSampledText()
    {
        RequireModel();
        var options = new ChatOptions { Temperature = 1.0f, TopK = 40, TopP = 0.9f, Seed = 1234, MaxOutputTokens = 30 };
        var a = await _client.GetResponseAsync("Once upon a time", options);
        var b = await _client.GetResponseAsync("Once upon a time", options);
        Assert.Equal(a.Text, b.Text);
        options.Seed = 99;
        var c = await _client.GetResponseAsync("Once upon a time", options);
        Assert.NotEqual(a.Text, c.Text);
    }

    [SkippableFact]
    public async Task CancellationStopsStreamingAndTheClientServesTheNextRequest()
    {
        RequireModel();
        using var cts = new CancellationTokenSource();
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var update in _client.GetStreamingResponseAsync("Once upon a time", Greedy(200), cts.Token))
            {
                if (++seen == 3)
                {
                    await cts.CancelAsync();
                }
            }
        });
        var after = await _client.GetResponseAsync("Once upon a time", Greedy(20));
        Assert.StartsWith(", there was", after.Text, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task PromptLongerThanTheContextIsRefusedWithAClearError()
    {
        RequireModel();
        string longPrompt = string.Join(" ", Enumerable.Repeat("Once upon a time there was a dog.", 60));
        var error = await Assert.ThrowsAsync<MustafarContextOverflowException>(() => _client.GetResponseAsync(longPrompt, Greedy(5)));
        Assert.Equal(256, error.ContextSize);
        Assert.Contains("ContextSize", error.Message, StringComparison.Ordinal);
    }

    public static TheoryData<ChatOptions, string> InvalidRequestOptions => new()
    {
        { new ChatOptions { MaxOutputTokens = 0 }, "ChatOptions.MaxOutputTokens must be at least 1" },
        { new ChatOptions { Temperature = -1 }, "ChatOptions.Temperature must be 0 (greedy) or positive" },
        { new ChatOptions { Temperature = float.NaN }, "ChatOptions.Temperature must be 0 (greedy) or positive" },
        { new ChatOptions { TopP = 2 }, "ChatOptions.TopP must be in (0, 1]" },
    };

    [SkippableTheory]
    [MemberData(nameof(InvalidRequestOptions))]
    public async Task InvalidRequestOptionsFailThatRequestByName(ChatOptions options, string expected)
    {
        RequireModel();
        var error = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => _client.GetResponseAsync("Once upon a time", options));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.StartsWith(KnownStory, (await _client.GetResponseAsync("Once upon a time", Greedy(40))).Text, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task MessagesWithoutTextAreRefusedNamingWhatTheyHold()
    {
        RequireModel();
        var error = await Assert.ThrowsAsync<ArgumentException>(() =>
            _client.GetResponseAsync([new ChatMessage(ChatRole.User, [new DataContent(new byte[] { 1, 2, 3 }, "image/png")])]));
        Assert.Contains("carry no text", error.Message, StringComparison.Ordinal);
        Assert.Contains("image/png", error.Message, StringComparison.Ordinal);
        error = await Assert.ThrowsAsync<ArgumentException>(() => _client.GetResponseAsync(new List<ChatMessage>()));
        Assert.Contains("At least one chat message is required", error.Message, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void GetServiceReturnsMetadataOptionsAndKvStatistics()
    {
        RequireModel();
        var metadata = _client.GetService<ChatClientMetadata>()!;
        Assert.Equal("mustafar", metadata.ProviderName);
        Assert.Equal("stories260K-f32", metadata.DefaultModelId);
        Assert.Equal(256, _client.GetService<MustafarOptions>()!.ContextSize);
        Assert.Equal(10, _client.GetService<MustafarKvStatistics>()!.CacheTensors);
    }
}
