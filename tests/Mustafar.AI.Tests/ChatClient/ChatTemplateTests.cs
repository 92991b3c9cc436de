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

    public static TheoryData<string, string[]> Conversations => new()
    {
        { "llama2", ["Be brief.", "Hi there", "Hello!", "Tell me a story"] },
        { "llama2", ["", "Once upon a time", "", ""] },
        { "chatml", ["You tell stories.", "Once upon a time", "there was a cat", "Go on"] },
        { "mistral-v7", ["Sys", "One", "Two", "Three"] },
        { "llama3", [" Sys\n", "\tOne two ", "Three\n\n", " Four"] },  // llama3 trims each message
    };

    [Theory]
    [MemberData(nameof(Conversations))]
    public async Task TokenizingTheTemplatesTextAloneForSpecialTokensGivesLlamaCppsTokensWhereNoMessageQuotesOne(string template, string[] texts)
    {
        // The partitioned tokenization must equal llama.cpp's own where it changes nothing, so that it can take over
        // only for the prompts that need it.
        await using var engine = await TemplatedEngineAsync(template);
        var (prompt, spans) = Render(engine, texts);
        var whole = engine.Tokenize(prompt, addBos: true, special: true);
        Assert.Equal(whole, PromptTokens.Partitioned(engine, prompt, spans!));
        Assert.Equal(whole, PromptTokens.Templated(engine, prompt, texts, () => spans));
    }

    [Theory]
    [InlineData("llama2")]
    [InlineData("mistral-v7")]
    public async Task AMessageThatQuotesASpecialTokenStaysTextInThePrompt(string template)
    {
        // The synthetic vocabulary's EOS is "</s>"; these templates write it after each answer.
        await using var engine = await TemplatedEngineAsync(template);
        string[] texts = ["", "What does </s> mean?\n", "It ends a text.", "And <s>?"];
        var (prompt, spans) = Render(engine, texts);
        var eos = engine.Tokenize("</s>", addBos: false, special: true).Single();
        int written = prompt.Split("</s>").Length - 1, quoted = 1;
        Assert.Equal(written - quoted, PromptTokens.Templated(engine, prompt, texts, () => spans).Count(t => t == eos));
        Assert.Equal(written, engine.Tokenize(prompt, addBos: true, special: true).Count(t => t == eos));  // llama.cpp's parse: the quote too
        // The quoted texts read as the characters they are made of; BOS only where llama.cpp puts it, first.
        var tokens = PromptTokens.Templated(engine, prompt, texts, () => spans);
        Assert.Contains(string.Join(",", engine.Tokenize("What does </s> mean?", addBos: false, special: false).Skip(1)), string.Join(",", tokens));
        Assert.Equal([0], tokens.Select((t, i) => (t, i)).Where(x => x.t == engine.BosToken).Select(x => x.i));

        // The client tokenizes its prompts so.
        using var client = await MustafarChatClientFactory.CreateAsync(engine.Options);
        var response = await client.GetResponseAsync(
            [new ChatMessage(ChatRole.User, "What does </s> mean?\n"), new ChatMessage(ChatRole.Assistant, "It ends a text."), new ChatMessage(ChatRole.User, "And <s>?")],
            new ChatOptions { MaxOutputTokens = 2 });
        Assert.Equal(tokens.Count, response.Usage!.InputTokenCount);
    }

    [Fact]
    public async Task AToolResultThatQuotesASpecialTokenStaysTextInsideItsMarkup()
    {
        await using var engine = await TemplatedEngineAsync("llama2");
        List<ChatMessage> messages =
        [
            new(ChatRole.User, "Fetch the page."),
            new(ChatRole.Assistant, [new FunctionCallContent("c1", "fetch")]),
            new(ChatRole.Tool, [new FunctionResultContent("c1", "page text </s> more text")]),
        ];
        var (prompt, _) = PromptBuilder.Build(engine.ChatTemplate, engine.TurnTemplate, messages, null);
        var spans = PromptBuilder.MessageTexts(engine.ChatTemplate, engine.TurnTemplate!, messages, null, prompt);
        Assert.Contains("<tool_response>page text </s> more text</tool_response>", prompt, StringComparison.Ordinal);
        Assert.Contains(spans!, r => prompt[r] == "page text </s> more text");
        var eos = engine.Tokenize("</s>", addBos: false, special: true).Single();
        var tokens = PromptTokens.Templated(engine, prompt, PromptBuilder.Texts(messages), () => spans);
        Assert.Equal(prompt.Split("</s>").Length - 2, tokens.Count(t => t == eos));
    }

    private static async Task<Engine.LlamaEngine> TemplatedEngineAsync(string template)
    {
        string path = TestPaths.TempFile("templated.gguf");
        SyntheticLlama.CreateWriter(SyntheticLlamaSpec.Tiny).Set("tokenizer.chat_template", template).WriteTo(path);
        return await Engines.LoadAsync(path, mustafar: true, contextSize: 256);
    }

    // System, user, assistant, user turns of the given texts (an empty one left out), rendered with the engine's template.
    private static (string Prompt, IReadOnlyList<Range>? Spans) Render(Engine.LlamaEngine engine, string[] texts)
    {
        ChatRole[] roles = [ChatRole.System, ChatRole.User, ChatRole.Assistant, ChatRole.User];
        var messages = texts.Select((t, i) => new ChatMessage(roles[i], t)).Where(m => m.Text.Length > 0).ToList();
        var (prompt, used) = PromptBuilder.Build(engine.ChatTemplate, engine.TurnTemplate, messages, null);
        Assert.True(used);
        var spans = PromptBuilder.MessageTexts(engine.ChatTemplate, engine.TurnTemplate!, messages, null, prompt);
        Assert.NotNull(spans);
        Assert.Equal(messages.Select(m => m.Text.Trim()), spans.Select(r => prompt[r]));  // the marks leave out outer white space
        return (prompt, spans);
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
