using Microsoft.Extensions.Logging;

namespace Mustafar.AI;

/// <summary>Source-generated log messages of the library.</summary>
internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Information, "Loaded {ModelPath} ({Layers} layers, head_dim {HeadDim}, {HeadCount}/{KvHeadCount} heads) with context {ContextSize} (a request at most {RequestContextSize}) on {Backend}; KV cache of {KvLayers} layers on {Device}")]
    public static partial void ModelLoaded(this ILogger logger, string modelPath, int layers, int headDim, int headCount, int kvHeadCount, int contextSize, int requestContextSize, string backend, int kvLayers, string device);

    [LoggerMessage(2, LogLevel.Debug, "Request {ResponseId}: {PromptTokens} prompt tokens, {MaxTokens} max output tokens")]
    public static partial void RequestStarted(this ILogger logger, string responseId, int promptTokens, int maxTokens);

    [LoggerMessage(3, LogLevel.Debug, "Request {ResponseId} finished ({FinishReason}): {OutputTokens} tokens in {Seconds:F2} s")]
    public static partial void RequestFinished(this ILogger logger, string responseId, string finishReason, int outputTokens, double seconds);

    [LoggerMessage(EventId = 4, Message = "llama.cpp: {Line}")]
    public static partial void Native(this ILogger logger, LogLevel level, string line);

    [LoggerMessage(5, LogLevel.Warning, "The chat template of {ModelPath} is not one of llama.cpp's built-in templates; chat turns are written as ChatML instead")]
    public static partial void ChatTemplateNotRecognised(this ILogger logger, string modelPath);
}
