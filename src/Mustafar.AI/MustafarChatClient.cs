using System.Diagnostics;
using System.Runtime.CompilerServices;
using LLama.Native;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Mustafar.AI.Engine;
using Mustafar.AI.Mapping;

namespace Mustafar.AI;

/// <summary>
/// IChatClient over a local llama.cpp model with the Mustafar KV cache. Validates and maps; the
/// engine does the work. Reached through <see cref="MustafarChatClientFactory"/> or DI.
/// </summary>
internal sealed class MustafarChatClient : IChatClient, IAsyncDisposable
{
    private readonly LlamaEngine _engine;
    private readonly ILogger _logger;
    private readonly ChatClientMetadata _metadata;
    private readonly MustafarTokenizer _tokenizer;
    private readonly ConversationStore _conversations = new();

    internal MustafarChatClient(LlamaEngine engine, ILogger logger)
    {
        _engine = engine;
        _logger = logger;
        string modelId = engine.Options.ModelId ?? Path.GetFileNameWithoutExtension(engine.Options.ModelPath);
        _metadata = new ChatClientMetadata("mustafar", providerUri: null, defaultModelId: modelId);
        _tokenizer = new MustafarTokenizer(engine);
    }

    internal LlamaEngine Engine => _engine;

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        CancellationToken cancellationToken = default) =>
        await GetStreamingResponseAsync(messages, options, cancellationToken).ToChatResponseAsync(cancellationToken).ConfigureAwait(false);

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages,
        ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var toolFormat = ToolCalls.Detect(_engine.ChatTemplate);
        var tools = ToolCalls.Declarations(options);
        var sampling = SamplingSettings.From(options, toolFormat);
        int maxTokens = options?.MaxOutputTokens ?? _engine.Options.DefaultMaxOutputTokens;
        if (maxTokens < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), maxTokens, "ChatOptions.MaxOutputTokens must be at least 1.");
        }

        // A ConversationId keeps the conversation here: the caller sends only the new messages.
        string? conversationId = options?.ConversationId;
        List<ChatMessage> turn = [.. messages];
        List<ChatMessage> history = conversationId is null ? turn : [.. _conversations.Get(conversationId), .. turn];
        var (prompt, usedTemplate) = PromptBuilder.Build(_engine.ChatTemplate, _engine.TurnTemplate, history, options);
        IReadOnlyList<LLamaToken> promptTokens = usedTemplate
            ? PromptTokens.Templated(_engine, prompt, PromptBuilder.Texts(history),
                () => PromptBuilder.MessageTexts(_engine.ChatTemplate, _engine.TurnTemplate!, history, options, prompt))
            : _engine.Tokenize(prompt, addBos: true, special: false);

        string responseId = Guid.NewGuid().ToString("N");
        string messageId = Guid.NewGuid().ToString("N");
        string modelId = options?.ModelId ?? _metadata.DefaultModelId!;
        var stops = new StopSequenceFilter(options?.StopSequences?.ToArray() ?? []);
        var decoder = _engine.CreateDecoder();
        var held = new System.Text.StringBuilder();  // with tools, the output is parsed when complete
        var answer = new List<AIContent>();  // what the conversation store keeps of this response
        var started = Stopwatch.StartNew();
        int outputTokens = 0, cachedTokens = 0;
        ChatFinishReason finish = ChatFinishReason.Stop;
        _logger.RequestStarted(responseId, promptTokens.Count, maxTokens);

        await foreach (var step in _engine.GenerateAsync(promptTokens, sampling, maxTokens, cancellationToken).ConfigureAwait(false))
        {
            cachedTokens = step.CachedPromptTokens;
            if (step.End != GenerationEnd.None)
            {
                finish = step.End is GenerationEnd.MaxTokens or GenerationEnd.ContextFull ? ChatFinishReason.Length : ChatFinishReason.Stop;
                break;
            }

            outputTokens++;
            decoder.Add(step.Token);
            string text = stops.Push(decoder.Read());
            if (tools.Count > 0)
            {
                held.Append(text);
            }
            else if (text.Length > 0)
            {
                yield return Update(text);
            }

            if (stops.Stopped)
            {
                step.Stop?.Invoke();
                finish = ChatFinishReason.Stop;
                break;
            }
        }

        string rest = stops.Flush();
        if (tools.Count > 0)
        {
            var (plain, calls) = ToolCalls.Parse(held.Append(rest).ToString(), toolFormat);
            if (plain.Length > 0)
            {
                yield return Update(plain);
            }

            if (calls.Count > 0)
            {
                finish = ChatFinishReason.ToolCalls;
                answer.AddRange(calls);
                yield return new ChatResponseUpdate(ChatRole.Assistant, [.. calls])
                {
                    ResponseId = responseId,
                    MessageId = messageId,
                    ModelId = modelId,
                    ConversationId = conversationId,
                    CreatedAt = DateTimeOffset.UtcNow,
                };
            }
        }
        else if (rest.Length > 0)
        {
            yield return Update(rest);
        }

        var usage = new UsageDetails
        {
            InputTokenCount = promptTokens.Count,
            OutputTokenCount = outputTokens,
            TotalTokenCount = promptTokens.Count + outputTokens,
            CachedInputTokenCount = cachedTokens,
        };
        if (_engine.GetKvStatistics() is { } kv)
        {
            usage.AdditionalCounts = new AdditionalPropertiesDictionary<long>
            {
                ["kv_bytes"] = kv.KvBytes,
                ["kv_dense_bytes"] = kv.KvDenseBytes,
                ["kv_dense_rows"] = kv.DenseRows,
                ["kv_compressed_rows"] = kv.CompressedRows,
            };
        }

        _logger.RequestFinished(responseId, finish.Value, outputTokens, started.Elapsed.TotalSeconds);
        if (conversationId is not null)
        {
            _conversations.Append(conversationId, turn, new ChatMessage(ChatRole.Assistant, [.. answer]));
        }

        yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(usage)])
        {
            ResponseId = responseId,
            MessageId = messageId,
            ModelId = modelId,
            FinishReason = finish,
            ConversationId = conversationId,
            CreatedAt = DateTimeOffset.UtcNow,
        };

        ChatResponseUpdate Update(string text)
        {
            answer.Add(new TextContent(text));
            return new ChatResponseUpdate(ChatRole.Assistant, text)
            {
                ResponseId = responseId,
                MessageId = messageId,
                ModelId = modelId,
                ConversationId = conversationId,
                CreatedAt = DateTimeOffset.UtcNow,
            };
        }
    }

    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null)
        {
            return null;
        }

        if (serviceType == typeof(ChatClientMetadata))
        {
            return _metadata;
        }

        if (serviceType == typeof(MustafarOptions))
        {
            return _engine.Options;
        }

        if (serviceType == typeof(MustafarKvStatistics))
        {
            return _engine.GetKvStatistics();
        }

        if (serviceType == typeof(MustafarTokenizer))
        {
            return _tokenizer;
        }

        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    public void Dispose() => _engine.Dispose();

    public ValueTask DisposeAsync() => _engine.DisposeAsync();
}
