using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Mustafar.AI.Engine;

namespace Mustafar.AI;

/// <summary>Creates Mustafar chat clients without a DI container.</summary>
public static class MustafarChatClientFactory
{
    /// <summary>
    /// Validates <paramref name="options"/>, loads the model with its KV cache on the Mustafar backend and
    /// returns a chat client that owns them (dispose it to free the native memory).
    /// </summary>
    /// <exception cref="Microsoft.Extensions.Options.OptionsValidationException">An option is invalid.</exception>
    /// <exception cref="FileNotFoundException">The model file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a GGUF model.</exception>
    /// <exception cref="NotSupportedException">The architecture or head size is not supported.</exception>
    public static async Task<IChatClient> CreateAsync(MustafarOptions options, ILoggerFactory? loggerFactory = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ILogger logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Mustafar.AI");
        var engine = await LlamaEngine.LoadAsync(options, logger, cancellationToken).ConfigureAwait(false);
        return new MustafarChatClient(engine, logger);
    }

    /// <summary>Synchronous <see cref="CreateAsync"/>, for DI factories.</summary>
    public static IChatClient Create(MustafarOptions options, ILoggerFactory? loggerFactory = null) =>
        CreateAsync(options, loggerFactory).GetAwaiter().GetResult();
}
