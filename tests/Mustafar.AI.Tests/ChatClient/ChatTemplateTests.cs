using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Mustafar.AI.Mapping;
using Mustafar.AI.Tests.Infrastructure;
using Mustafar.Gguf;

namespace Mustafar.AI.Tests.ChatClient;

/// <summary>How chat turns become the prompt when a model's template is one llama.cpp does not know.</summary>
public sealed class ChatTemplateTests
{
    [Fact]
    public void TheChatMLFallbackWritesEachTurnAndOpensTheAssistants()
    {
        var (prompt, used) = PromptBuilder.Build(null, PromptBuilder.FallbackTemplate,
            [new ChatMessage(ChatRole.System, "Be brief."), new ChatMessage(ChatRole.User, "Hi")], null);
        Assert.True(used);
        Assert.Equal("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", prompt);
    }

    [Theory]
    [InlineData("chatml", true)]
    [InlineData("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}", true)]  // recognised by its markers
    [InlineData("{{ messages | tojson }}", false)]
    public void LlamaCppRecognisesTheTemplatesItHas(string template, bool known) => Assert.Equal(known, PromptBuilder.CanFormat(template));

    [Fact]
    public async Task AModelWhoseTemplateLlamaCppDoesNotKnowChatsInChatMLAndSaysSoInTheLog()
    {
        // Before, every chat request failed with LLamaSharp's MissingTemplateException.
        string path = TestPaths.TempFile("template.gguf");
        SyntheticLlama.CreateWriter(SyntheticLlamaSpec.Tiny).Set("tokenizer.chat_template", "{{ messages | tojson }}").WriteTo(path);
        var log = new ListLoggerFactory();
        using var client = await MustafarChatClientFactory.CreateAsync(new MustafarOptions { ModelPath = path, ContextSize = 128, Threads = 2 }, log);
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hi")], new ChatOptions { MaxOutputTokens = 4 });
        Assert.Equal(4, response.Usage!.OutputTokenCount);
        Assert.Single(log.Messages, m => m == $"Warning: The chat template of {path} is not one of llama.cpp's built-in templates; chat turns are written as ChatML instead");
    }

    private sealed class ListLoggerFactory : ILoggerFactory, ILogger
    {
        public List<string> Messages { get; } = [];

        public ILogger CreateLogger(string categoryName) => this;

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (Messages)
            {
                Messages.Add($"{logLevel}: {formatter(state, exception)}");
            }
        }

        public void Dispose()
        {
        }
    }
}
