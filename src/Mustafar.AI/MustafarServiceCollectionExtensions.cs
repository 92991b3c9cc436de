using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Mustafar.AI;

/// <summary>Registers a Mustafar chat client in a service collection.</summary>
public static class MustafarServiceCollectionExtensions
{
    /// <summary>
    /// Registers an <see cref="IChatClient"/> backed by a local GGUF model with the Mustafar KV cache.
    /// Options are validated when the host starts; the client and its native memory are disposed with the container.
    /// </summary>
    public static ChatClientBuilder AddMustafarChatClient(this IServiceCollection services, Action<MustafarOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        return services.AddMustafarChatClient(null, builder => builder.Configure(configure));
    }

    /// <summary>Registers the client with options bound from a configuration section (e.g. "Mustafar").</summary>
    public static ChatClientBuilder AddMustafarChatClient(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        return services.AddMustafarChatClient(null, builder => builder.Bind(configuration));
    }

    /// <summary>Registers a keyed client; its options are the named options <paramref name="serviceKey"/>.</summary>
    public static ChatClientBuilder AddKeyedMustafarChatClient(this IServiceCollection services, string serviceKey, Action<MustafarOptions> configure)
    {
        ArgumentException.ThrowIfNullOrEmpty(serviceKey);
        ArgumentNullException.ThrowIfNull(configure);
        return services.AddMustafarChatClient(serviceKey, builder => builder.Configure(configure));
    }

    private static ChatClientBuilder AddMustafarChatClient(this IServiceCollection services, string? serviceKey,
        Action<OptionsBuilder<MustafarOptions>> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        string optionsName = serviceKey ?? Options.DefaultName;
        var optionsBuilder = services.AddOptions<MustafarOptions>(optionsName);
        configure(optionsBuilder);
        optionsBuilder.ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<MustafarOptions>, MustafarOptionsValidator>());

        IChatClient Create(IServiceProvider sp) => MustafarChatClientFactory.Create(
            sp.GetRequiredService<IOptionsMonitor<MustafarOptions>>().Get(optionsName),
            sp.GetService<ILoggerFactory>());

        return serviceKey is null
            ? services.AddChatClient(Create)
            : services.AddKeyedChatClient(serviceKey, Create);
    }
}
