using System.ComponentModel;
using System.Text;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.SemanticKernel;
using Microsoft.SemanticKernel.ChatCompletion;
using Microsoft.SemanticKernel.Services;
using Mustafar.AI.Native;
using Mustafar.AI.Tests.Infrastructure;

namespace Mustafar.AI.Tests.SemanticKernel;

/// <summary>
/// A Semantic Kernel over the Mustafar client (Mustafar.AI.SemanticKernel) on the real tiny models: the kernel's
/// chat completion service gives the client's tokens, the model calls a plugin's function (forced by grammar, as
/// a tiny model does not choose tools by itself), keyed models, validation and disposal with the container.
/// </summary>
public sealed class KernelTests
{
    private const string Prompt = "Once upon a time";

    [SkippableFact]
    public async Task TheKernelsChatCompletionGivesTheClientsGreedyText()
    {
        await using var provider = Kernel(TestPaths.Stories, out _);
        var chat = provider.GetRequiredService<Kernel>().GetRequiredService<IChatCompletionService>();
        var settings = Greedy(24);

        var history = new ChatHistory();
        history.AddUserMessage(Prompt);
        var reply = await chat.GetChatMessageContentAsync(history, settings);
        var streamed = new StringBuilder();
        await foreach (var update in chat.GetStreamingChatMessageContentsAsync(history, settings))
        {
            streamed.Append(update.Content);
        }

        var direct = await provider.GetRequiredService<IChatClient>().GetResponseAsync(Prompt, new ChatOptions { Temperature = 0, MaxOutputTokens = 24 });
        Assert.False(string.IsNullOrEmpty(reply.Content));
        Assert.Equal(direct.Text, reply.Content);
        Assert.Equal(direct.Text, streamed.ToString());
        Assert.Equal(AuthorRole.Assistant, reply.Role);
        Assert.Equal(provider.GetRequiredService<IChatClient>().GetService<ChatClientMetadata>()!.DefaultModelId, chat.GetModelId());
    }

    [SkippableFact]
    public async Task APromptFunctionRunsOnTheModel()
    {
        await using var provider = Kernel(TestPaths.Stories, out _);
        var kernel = provider.GetRequiredService<Kernel>();
        var result = await kernel.InvokePromptAsync("{{$start}} upon a time", new KernelArguments(Greedy(16)) { ["start"] = "Once" });
        var direct = await provider.GetRequiredService<IChatClient>().GetResponseAsync(Prompt, new ChatOptions { Temperature = 0, MaxOutputTokens = 16 });
        Assert.False(string.IsNullOrEmpty(direct.Text));
        Assert.Equal(direct.Text, result.GetValue<string>());
    }

    [SkippableFact]
    public async Task TheModelCallsAPluginFunctionThatTheSettingsRequire()
    {
        await using var provider = Kernel(TestPaths.Stories, out var lamp);
        var kernel = provider.GetRequiredService<Kernel>();
        var history = new ChatHistory("You switch the lamp.");
        history.AddUserMessage(Prompt);
        var settings = Greedy(150);  // the forced call is about 60 characters of a small vocabulary
        settings.FunctionChoiceBehavior = FunctionChoiceBehavior.Required();

        var reply = await kernel.GetRequiredService<IChatCompletionService>().GetChatMessageContentAsync(history, settings, kernel);

        var switched = Assert.Single(lamp.Switched);
        var call = history.SelectMany(m => m.Items).OfType<Microsoft.SemanticKernel.FunctionCallContent>().Single();
        Assert.Equal("lamp_switch", call.FunctionName);
        Assert.Equal(switched, Convert.ToBoolean(call.Arguments!["on"]!.ToString(), System.Globalization.CultureInfo.InvariantCulture));
        var result = history.SelectMany(m => m.Items).OfType<Microsoft.SemanticKernel.FunctionResultContent>().Single();
        Assert.Equal(call.Id, result.CallId);
        Assert.Equal(Lamp.Answer(switched), result.Result?.ToString());
        Assert.Equal(AuthorRole.Assistant, reply.Role);
    }

    [SkippableFact]
    public async Task KeyedModelsAreChosenByServiceIdAndReleasedWithTheContainer()
    {
        string stories = TestPaths.Stories, baby = TestPaths.BabyLlama;
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Baby:ModelPath"] = baby,
            ["Baby:ContextSize"] = "128",
        }).Build();
        var services = new ServiceCollection();
        services.AddKernel()
            .AddMustafarChatCompletion(o => (o.ModelPath, o.ContextSize) = (stories, 256), serviceId: "stories")
            .AddMustafarChatCompletion(config.GetSection("Baby"), serviceId: "baby");
        await using (var provider = services.BuildServiceProvider())
        {
            var kernel = provider.GetRequiredService<Kernel>();
            Assert.Equal(Path.GetFileNameWithoutExtension(stories), kernel.GetRequiredService<IChatCompletionService>("stories").GetModelId());
            Assert.Equal(Path.GetFileNameWithoutExtension(baby), kernel.GetRequiredService<IChatCompletionService>("baby").GetModelId());
            Assert.Equal(128, provider.GetRequiredKeyedService<IChatClient>("baby").GetService<MustafarOptions>()!.ContextSize);
            Assert.True(NativeBackend.EnsureRegistered().GetKvStats().KvTensors > 0);
        }

        Assert.Equal(0ul, NativeBackend.EnsureRegistered().GetKvStats().KvTensors);
    }

    [Fact]
    public async Task InvalidOptionsFailValidationWithTheOptionsName()
    {
        var services = new ServiceCollection();
        services.AddMustafarChatCompletion(o => (o.ModelPath, o.KSparsity) = ("/nonexistent/model.gguf", 1.5));
        services.AddKernel();
        await using var provider = services.BuildServiceProvider();
        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate());
        Assert.Contains("KSparsity must be between 0 (dense) and 0.9; got 1.5", error.Message, StringComparison.Ordinal);
        Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<Kernel>().GetRequiredService<IChatCompletionService>());
    }

    private static ServiceProvider Kernel(string model, out Lamp lamp)
    {
        var services = new ServiceCollection();
        services.AddMustafarChatCompletion(o =>
        {
            o.ModelPath = model;
            o.ContextSize = 512;
            o.Threads = 2;
        });
        lamp = new Lamp();
        services.AddKernel().Plugins.AddFromObject(lamp, "lamp");
        return services.BuildServiceProvider();
    }

    private static PromptExecutionSettings Greedy(int maxTokens) =>
        new() { ExtensionData = new Dictionary<string, object> { ["temperature"] = 0.0, ["max_tokens"] = maxTokens } };

    /// <summary>A plugin whose one function records its calls.</summary>
    public sealed class Lamp
    {
        public List<bool> Switched { get; } = [];

        public static string Answer(bool on) => on ? "the lamp is on" : "the lamp is off";

        [KernelFunction("switch")]
        [Description("Switches the lamp on or off.")]
        public string Switch(bool on)
        {
            Switched.Add(on);
            return Answer(on);
        }
    }
}
