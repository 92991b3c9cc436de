namespace Mustafar.AI;

/// <summary>
/// The metrics the engine publishes through <c>System.Diagnostics.Metrics</c>: collect them with
/// OpenTelemetry (<c>AddMeter(MustafarMetrics.MeterName)</c>) or a <c>MeterListener</c>. One
/// measurement per engine step, where a step decodes one llama.cpp batch: a token of every generating
/// request plus prompt chunks of newly admitted ones. Each carries the tag <see cref="StepKindTag"/>.
/// </summary>
public static class MustafarMetrics
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Mustafar.AI";

    /// <summary>Histogram, seconds: a whole step, from assembling its batch to its last sampled token.</summary>
    public const string StepDuration = "mustafar.step.duration";

    /// <summary>Histogram, seconds: the step's <c>llama_decode</c> call (llama.cpp's graph, the backend's compute, the logits).</summary>
    public const string DecodeDuration = "mustafar.step.decode.duration";

    /// <summary>Histogram, seconds: sampling the step's tokens, all requests together.</summary>
    public const string SampleDuration = "mustafar.step.sample.duration";

    /// <summary>Histogram, tokens: the tokens the step decoded (one per generating request, plus prompt tokens), how full its batch was.</summary>
    public const string StepTokens = "mustafar.step.tokens";

    /// <summary>Tag: <see cref="GenerationStep"/> when every token of the step was a generated one, else <see cref="PromptStep"/>.</summary>
    public const string StepKindTag = "mustafar.step.kind";

    /// <summary>Value of <see cref="StepKindTag"/>: a step of generated tokens only.</summary>
    public const string GenerationStep = "generation";

    /// <summary>Value of <see cref="StepKindTag"/>: a step with prompt tokens.</summary>
    public const string PromptStep = "prompt";
}
