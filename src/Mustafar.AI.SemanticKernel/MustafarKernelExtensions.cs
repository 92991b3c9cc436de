using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.SemanticKernel.ChatCompletion;
using Mustafar.AI;

// Beside Semantic Kernel's own AddXxxChatCompletion methods, as its connectors place theirs.
namespace Microsoft.SemanticKernel;

/// <summary>Adds a Mustafar chat client (a local GGUF model with the Mustafar KV cache) to a Semantic Kernel.</summary>
/// <remarks>
/// The kernel sees the model as its <see cref="IChatCompletionService"/> and its <see cref="IChatClient"/>. The
/// client's pipeline invokes functions, so the kernel's plugin functions that the model calls run (with
/// <c>FunctionChoiceBehavior.Auto()</c> or <c>Required()</c> in the execution settings). The model and its native
/// memory belong to the service provider that holds the registration: build the kernel from a container you
/// dispose (<c>services.AddKernel()</c>, or a host); <c>Kernel.CreateBuilder().Build()</c> keeps a provider
/// that nothing disposes.
/// </remarks>
public static class MustafarKernelExtensions
{
    /// <summary>Adds the model, with options set by <paramref name="configure"/>, as the kernel's chat completion service.</summary>
    /// <param name="builder">The kernel builder.</param>
    /// <param name="configure">Sets the model path, context size, K and V sparsity and the other <see cref="MustafarOptions"/>.</param>
    /// <param name="serviceId">A key for this model among the kernel's services (<c>PromptExecutionSettings.ServiceId</c>), or null.</param>
    public static IKernelBuilder AddMustafarChatCompletion(this IKernelBuilder builder, Action<MustafarOptions> configure, string? serviceId = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddMustafarChatCompletion(configure, serviceId);
        return builder;
    }

    /// <summary>Adds the model, with options bound from a configuration section (e.g. "Mustafar"), as the kernel's chat completion service.</summary>
    /// <param name="builder">The kernel builder.</param>
    /// <param name="configuration">The section that holds the <see cref="MustafarOptions"/>.</param>
    /// <param name="serviceId">A key for this model among the kernel's services, or null.</param>
    public static IKernelBuilder AddMustafarChatCompletion(this IKernelBuilder builder, IConfiguration configuration, string? serviceId = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configuration);
        builder.Services.AddMustafarChatCompletion(configuration, serviceId);
        return builder;
    }

    /// <summary>
    /// Registers the model as an <see cref="IChatCompletionService"/> and an <see cref="IChatClient"/> (keyed by
    /// <paramref name="serviceId"/> when given) for a kernel that the same container builds (<c>services.AddKernel()</c>).
    /// Options are validated when the host starts, or when the service is first resolved without a host.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Sets the <see cref="MustafarOptions"/>.</param>
    /// <param name="serviceId">A key for this model among the kernel's services, or null.</param>
    public static IServiceCollection AddMustafarChatCompletion(this IServiceCollection services, Action<MustafarOptions> configure, string? serviceId = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        return services.AddChatCompletion(serviceId,
            serviceId is null ? services.AddMustafarChatClient(configure) : services.AddKeyedMustafarChatClient(serviceId, configure));
    }

    /// <summary>As <see cref="AddMustafarChatCompletion(IServiceCollection, Action{MustafarOptions}, string?)"/>, with options bound from a configuration section.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configuration">The section that holds the <see cref="MustafarOptions"/>.</param>
    /// <param name="serviceId">A key for this model among the kernel's services, or null.</param>
    public static IServiceCollection AddMustafarChatCompletion(this IServiceCollection services, IConfiguration configuration, string? serviceId = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configuration);
        return services.AddChatCompletion(serviceId,
            serviceId is null ? services.AddMustafarChatClient(configuration) : services.AddKeyedMustafarChatClient(serviceId, configuration.Bind));
    }

    private static IServiceCollection AddChatCompletion(this IServiceCollection services, string? serviceId, ChatClientBuilder client)
    {
        client.UseFunctionInvocation();
        if (serviceId is null)
        {
            services.AddSingleton(sp => sp.GetRequiredService<IChatClient>().AsChatCompletionService(sp));
        }
        else
        {
            services.AddKeyedSingleton(serviceId, (sp, key) => sp.GetRequiredKeyedService<IChatClient>(key).AsChatCompletionService(sp));
        }

        return services;
    }
}
