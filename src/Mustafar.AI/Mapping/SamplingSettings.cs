using LLama.Native;
using Microsoft.Extensions.AI;
using Mustafar.AI.Engine;
using Mustafar.AI.Native;

namespace Mustafar.AI.Mapping;

/// <summary>ChatOptions' sampling fields, with llama.cpp's defaults where a request leaves one unset.</summary>
internal sealed record SamplingSettings(float Temperature, int TopK, float TopP, uint Seed)
{
    /// <summary>A GBNF grammar the output must follow (JSON response formats), or null.</summary>
    public string? Grammar { get; init; }

    /// <summary>Penalties over the last <see cref="PenaltyWindow"/> tokens (0: off).</summary>
    public float FrequencyPenalty { get; init; }

    public float PresencePenalty { get; init; }

    public const int PenaltyWindow = 64;

    public const float DefaultTemperature = 0.8f;
    public const int DefaultTopK = 40;
    public const float DefaultTopP = 0.95f;

    public bool IsGreedy => Temperature <= 0f;

    public static SamplingSettings From(ChatOptions? options, ToolCallFormat toolFormat = ToolCallFormat.Hermes)
    {
        float temperature = options?.Temperature ?? DefaultTemperature;
        if (temperature < 0 || float.IsNaN(temperature))
        {
            throw new ArgumentOutOfRangeException(nameof(options), temperature, "ChatOptions.Temperature must be 0 (greedy) or positive.");
        }

        int topK = options?.TopK ?? DefaultTopK;
        if (topK < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), topK, "ChatOptions.TopK must be 0 (off) or positive.");
        }

        float topP = options?.TopP ?? DefaultTopP;
        if (topP is <= 0 or > 1 || float.IsNaN(topP))
        {
            throw new ArgumentOutOfRangeException(nameof(options), topP, "ChatOptions.TopP must be in (0, 1].");
        }

        // A request without a seed gets a fresh one; with one, sampling is reproducible.
        uint seed = options?.Seed is long s ? unchecked((uint)s) : (uint)Random.Shared.Next();
        return new SamplingSettings(temperature, topK, topP, seed)
        {
            Grammar = ForcedToolCall(options, toolFormat) ?? options?.ResponseFormat switch
            {
                ChatResponseFormatJson { Schema: { } schema } => JsonGrammar.FromSchema(schema),
                ChatResponseFormatJson => JsonGrammar.AnyObject,
                _ => null,
            },
            FrequencyPenalty = options?.FrequencyPenalty ?? 0,
            PresencePenalty = options?.PresencePenalty ?? 0,
        };
    }

    // RequireAny / RequireSpecific: a grammar that only lets the model write a call of the allowed tools.
    private static string? ForcedToolCall(ChatOptions? options, ToolCallFormat format)
    {
        var tools = ToolCalls.Declarations(options);
        return options?.ToolMode switch
        {
            RequiredChatToolMode { RequiredFunctionName: { } name } =>
                ToolCalls.ForceCall(tools.Where(t => t.Name == name).ToList() is { Count: > 0 } one ? one
                    : throw new ArgumentException($"ChatOptions.ToolMode requires the tool '{name}', which is not in ChatOptions.Tools.", nameof(options)), format),
            RequiredChatToolMode when tools.Count > 0 => ToolCalls.ForceCall(tools, format),
            _ => null,
        };
    }

    public TokenSampler CreateSampler(SafeLlamaModelHandle model)
    {
        SafeLLamaSamplerChainHandle? grammar = null;
        try
        {
            if (Grammar is not null)
            {
                // Applied first, on its own, so that every later sampler only sees tokens the grammar allows.
                grammar = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
                LlamaCalls.AddGrammar(grammar, model, Grammar);
            }

            return new TokenSampler(grammar, CreateChain());
        }
        catch
        {
            grammar?.Dispose();
            throw;
        }
    }

    private SafeLLamaSamplerChainHandle CreateChain()
    {
        var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());

        if (FrequencyPenalty != 0 || PresencePenalty != 0)
        {
            chain.AddPenalties(PenaltyWindow, 1.0f, FrequencyPenalty, PresencePenalty);
        }

        if (IsGreedy)
        {
            chain.AddGreedySampler();
            return chain;
        }

        if (TopK > 0)
        {
            chain.AddTopK(TopK);
        }

        if (TopP < 1)
        {
            chain.AddTopP(TopP, 1);
        }

        chain.AddTemperature(Temperature);
        chain.AddDistributionSampler(Seed);
        return chain;
    }
}
