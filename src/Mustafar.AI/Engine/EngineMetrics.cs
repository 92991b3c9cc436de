using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Mustafar.AI.Engine;

/// <summary>The instruments of <see cref="MustafarMetrics"/>; one meter for the process, as the instruments carry no per-client state.</summary>
internal static class EngineMetrics
{
    private static readonly Meter Meter = new(MustafarMetrics.MeterName, typeof(EngineMetrics).Assembly.GetName().Version?.ToString());
    private static readonly Histogram<double> Step = Meter.CreateHistogram<double>(MustafarMetrics.StepDuration, "s", "Duration of an engine step.");
    private static readonly Histogram<double> Decode = Meter.CreateHistogram<double>(MustafarMetrics.DecodeDuration, "s", "Duration of a step's llama_decode call.");
    private static readonly Histogram<double> Sample = Meter.CreateHistogram<double>(MustafarMetrics.SampleDuration, "s", "Duration of a step's sampling.");
    private static readonly Histogram<int> Tokens = Meter.CreateHistogram<int>(MustafarMetrics.StepTokens, "{token}", "Tokens decoded in a step.");

    /// <summary>Records one step of <paramref name="tokens"/> tokens from Stopwatch timestamps: its start, the decode call's start and end, its end, and the ticks spent sampling.</summary>
    public static void RecordStep(bool generationOnly, int tokens, long start, long decodeStart, long decodeEnd, long end, long sampleTicks)
    {
        if (!Step.Enabled && !Decode.Enabled && !Sample.Enabled && !Tokens.Enabled)
        {
            return;
        }

        var kind = new KeyValuePair<string, object?>(MustafarMetrics.StepKindTag, generationOnly ? MustafarMetrics.GenerationStep : MustafarMetrics.PromptStep);
        Step.Record(Seconds(end - start), kind);
        Decode.Record(Seconds(decodeEnd - decodeStart), kind);
        Sample.Record(Seconds(sampleTicks), kind);
        Tokens.Record(tokens, kind);
    }

    private static double Seconds(long ticks) => (double)ticks / Stopwatch.Frequency;
}
