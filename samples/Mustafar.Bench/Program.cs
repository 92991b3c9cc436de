// End-to-end benchmark through llama.cpp on the Mustafar backend: prompt and generation tokens/s of a
// model at several batch sizes (concurrent requests) and contexts. Per batch size one client, whose
// shared cache holds batch x the largest context; per context two phases:
//   1. prompts: `batch` distinct random prompts of about `context` tokens, one output token each, all
//      at once (their cells stay cached as prefixes);
//   2. generation: the same prompts again (prefix hits: no prompt work) with --decode-tokens tokens each.
//   Mustafar.Bench --model PATH [--generate-llama3-8b] [--contexts 4096,16384,32768] [--batches 1,4,8]
//                  [--decode-tokens 64] [--k-sparsity S] [--v-sparsity S] [--batch-size 512] [--cache-layout shared|per-request]
//                  [--fresh-prompts] [--prompts FILE] [--threads N] [--out FILE.md] [--title TEXT]
// --prompts: the first `batch` lines of FILE as the prompts instead of random text (greedy text to compare); the
// generation phase's texts are then printed too, one line each, to see which request a differing digest comes from.
// --cache-layout per-request: MustafarCacheLayout.PerRequest (each request its own share of the cells, no cached
// prefixes), so the generation phase decodes its prompts again, as with --fresh-prompts (CachedPrefixes 0); the
// engine's step columns still time its generation steps alone.
// --batch-size: MustafarOptions.BatchSize, the tokens of one llama.cpp micro-batch (a prompt's graphs).
// --threads: MustafarOptions.Threads, llama.cpp's CPU threads (on the GPU flavour they run only what stays on the
// CPU, such as the token embeddings' lookup).
// --generate-llama3-8b writes a Llama-3-8B-shaped F16 GGUF with random weights to PATH first (16 GB) unless
// it exists. Prompts use the synthetic models' character vocabulary (one token per character).
// The last three columns split the engine's generation steps (MustafarMetrics): their mean time, and in
// it llama_decode's and sampling's.
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Mustafar.AI;
using Mustafar.Gguf;

var queue = new Queue<string>(args);
string? model = null, outFile = null, title = null, promptFile = null;
bool generate = false, fresh = false;
int[] contexts = [4096, 16384, 32768], batches = [1, 4, 8];
int decodeTokens = 64, batchSize = new MustafarOptions().BatchSize;
int? threads = null;
double kSparsity = 0, vSparsity = 0;
var layout = MustafarCacheLayout.Shared;
try
{
    while (queue.Count > 0)
    {
        string arg = queue.Dequeue();
        switch (arg)
        {
            case "--model": model = Next(); break;
            case "--generate-llama3-8b": generate = true; break;
            case "--contexts": contexts = Ints(Next()); break;
            case "--batches": batches = Ints(Next()); break;
            case "--decode-tokens": decodeTokens = int.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--k-sparsity": kSparsity = double.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--v-sparsity": vSparsity = double.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--batch-size": batchSize = int.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--threads": threads = int.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--fresh-prompts": fresh = true; break;
            case "--prompts": promptFile = Next(); break;
            case "--cache-layout":
                layout = Next() switch
                {
                    "shared" => MustafarCacheLayout.Shared,
                    "per-request" => MustafarCacheLayout.PerRequest,
                    var other => throw new ArgumentException($"--cache-layout is shared or per-request, not '{other}'"),
                };
                break;
            case "--out": outFile = Next(); break;
            case "--title": title = Next(); break;
            default: throw new ArgumentException($"unknown argument {arg}");
        }
    }

    if (model is null)
    {
        throw new ArgumentException("--model is required");
    }

    if (decodeTokens < 2 || contexts.Any(c => c <= decodeTokens + 64) || batches.Any(b => b < 1))
    {
        throw new ArgumentException("contexts must exceed --decode-tokens + 64, --decode-tokens must be at least 2, batches at least 1");
    }
}
catch (Exception e) when (e is ArgumentException or FormatException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    Console.Error.WriteLine("usage: Mustafar.Bench --model PATH [--generate-llama3-8b] [--contexts 4096,16384,32768] [--batches 1,4,8] " +
                            "[--decode-tokens 64] [--k-sparsity S] [--v-sparsity S] [--batch-size 512] [--cache-layout shared|per-request] " +
                            "[--fresh-prompts] [--prompts FILE] [--threads N] [--out FILE.md] [--title TEXT]");
    return 2;
}

try
{
    if (generate && !File.Exists(model))
    {
        var clock = Stopwatch.StartNew();
        SyntheticLlama.Write(model, SyntheticLlamaSpec.Llama3_8B_F16);
        Console.WriteLine($"generated {model} ({new FileInfo(model).Length / 1e9:F2} GB) in {clock.Elapsed.TotalSeconds:F0} s");
    }

    using var loggers = LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Warning)
        .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace));
    var rows = new List<string>();
    using var steps = new StepTimes();
    var random = new Random(7);
    foreach (int batch in batches)
    {
        var options = new MustafarOptions
        {
            ModelPath = model,
            ContextSize = batch * contexts.Max(),
            MaxConcurrentRequests = batch,
            CachedPrefixes = layout == MustafarCacheLayout.Shared && !fresh ? batch : 0,
            CacheLayout = layout,
            KSparsity = kSparsity,
            VSparsity = vSparsity,
            BatchSize = batchSize,
            Threads = threads,
        };
        var load = Stopwatch.StartNew();
        await using var owner = (IAsyncDisposable)await MustafarChatClientFactory.CreateAsync(options, loggers);
        var client = (IChatClient)owner;
        Console.WriteLine($"batch {batch}: loaded in {load.Elapsed.TotalSeconds:F1} s, context {options.ContextSize} cells");
        foreach (int context in contexts)
        {
            string[] prompts = promptFile is null
                ? [.. Enumerable.Range(0, batch).Select(_ => RandomText(random, context - decodeTokens - 64))]
                : [.. File.ReadLines(promptFile).Where(l => l.Length > 0).Take(batch)];
            if (prompts.Length < batch)
            {
                throw new ArgumentException($"--prompts {promptFile} has fewer than {batch} prompts");
            }

            var prompt = await RunAsync(client, prompts, 1);
            steps.Reset();
            var gen = await RunAsync(client, prompts, decodeTokens);
            var split = steps.Snapshot();
            double promptRate = prompt.InputTokens / prompt.Seconds;
            double genRate = gen.OutputTokens / gen.Seconds;
            double stepMs = 1000.0 * gen.Seconds / Math.Max(1, gen.OutputTokens / (double)batch);
            string row = string.Create(CultureInfo.InvariantCulture,
                $"| {batch} | {Label(context)} | {prompt.InputTokens} | {prompt.Seconds:F2} | {promptRate:F0} | {gen.OutputTokens} | {gen.Seconds:F2} | {genRate:F1} | {stepMs:F2} | {split.StepMs:F3} | {split.DecodeMs:F3} | {split.SampleMs:F3} |");
            rows.Add(row);
            Console.WriteLine(row);
            // Greedy outputs of the generation phase, to compare builds and layouts run for run.
            Console.WriteLine($"batch {batch}, {Label(context)}: generated text digest {gen.Digest}");
            if (promptFile is not null)
            {
                for (int i = 0; i < gen.Texts.Length; i++)
                {
                    Console.WriteLine($"generated text {i}: {JsonSerializer.Serialize(gen.Texts[i])}");
                }
            }
        }
    }

    if (outFile is not null)
    {
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"# {title ?? "End-to-end throughput"}").AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"Model `{Path.GetFileName(model)}`, K sparsity {kSparsity}, V sparsity {vSparsity}, {decodeTokens} generated tokens per request, micro-batches of {batchSize} tokens, cache layout {layout}, CPU threads {(threads is { } n ? n.ToString(CultureInfo.InvariantCulture) : "llama.cpp's default")}. Program: `samples/Mustafar.Bench`.").AppendLine();
        md.AppendLine(layout == MustafarCacheLayout.Shared && !fresh
            ? "Prompt phase: all prompts at once, one output token each. Generation phase: the same prompts again (cached prefixes), all requests decoding together; a step is one token for every request."
            : "Prompt phase: all prompts at once, one output token each. Generation phase: the same prompts again, decoded again (no cached prefixes), then all requests decoding together; its seconds, tok/s and ms per step include those prompts, the engine's step columns do not.").AppendLine();
        md.AppendLine("The last three columns: the engine's generation steps (every token of the step a generated one; `MustafarMetrics`), mean ms: the whole step, its llama_decode call, its sampling.").AppendLine();
        md.AppendLine("| batch | context | prompt tokens | prompt s | prompt tok/s | generated tokens | generation s | generation tok/s | ms per step | engine step ms | llama_decode ms | sampling ms |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
        rows.ForEach(r => md.AppendLine(r));
        await File.WriteAllTextAsync(outFile, md.ToString());
    }

    return 0;
}
catch (Exception e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}

string Next() => queue.Count > 0 ? queue.Dequeue() : throw new ArgumentException("an option is missing its value");

static string Label(int context) => context % 1024 == 0 ? $"{context / 1024}K" : context.ToString(CultureInfo.InvariantCulture);

static int[] Ints(string list) => list.Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();

// Letters and digits only: one token each in the synthetic vocabulary, and no shared prefixes.
static string RandomText(Random random, int length)
{
    const string alphabet = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    return string.Create(length, random, (span, r) =>
    {
        for (int i = 0; i < span.Length; i++)
        {
            span[i] = alphabet[r.Next(alphabet.Length)];
        }
    });
}

static async Task<Phase> RunAsync(IChatClient client, string[] prompts, int maxTokens)
{
    var clock = Stopwatch.StartNew();
    var results = await Task.WhenAll(prompts.Select(async p =>
    {
        var response = await client.GetResponseAsync(p, new ChatOptions { MaxOutputTokens = maxTokens, Temperature = 0 });
        return (Input: response.Usage?.InputTokenCount ?? 0, Output: response.Usage?.OutputTokenCount ?? 0, response.Text);
    }));
    string[] texts = [.. results.Select(r => r.Text)];
    byte[] joined = Encoding.UTF8.GetBytes(string.Join("\u0001", texts));
    string digest = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(joined))[..16];
    return new Phase(results.Sum(r => r.Input), results.Sum(r => r.Output), clock.Elapsed.TotalSeconds, digest, texts);
}

internal readonly record struct Phase(long InputTokens, long OutputTokens, double Seconds, string Digest, string[] Texts);

internal readonly record struct StepSplit(long Steps, double StepMs, double DecodeMs, double SampleMs);

/// <summary>Sums the engine's generation-step metrics since the last Reset.</summary>
internal sealed class StepTimes : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly Lock _lock = new();
    private long _steps;
    private double _step, _decode, _sample;

    public StepTimes()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == MustafarMetrics.MeterName)
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<double>(OnMeasurement);
        _listener.Start();
    }

    public void Reset()
    {
        lock (_lock)
        {
            _steps = 0;
            _step = _decode = _sample = 0;
        }
    }

    public StepSplit Snapshot()
    {
        lock (_lock)
        {
            double n = Math.Max(1, _steps);
            return new StepSplit(_steps, 1000 * _step / n, 1000 * _decode / n, 1000 * _sample / n);
        }
    }

    private void OnMeasurement(Instrument instrument, double seconds, ReadOnlySpan<KeyValuePair<string, object?>> tags, object? state)
    {
        foreach (var tag in tags)
        {
            if (tag.Key == MustafarMetrics.StepKindTag && (string?)tag.Value != MustafarMetrics.GenerationStep)
            {
                return;
            }
        }

        lock (_lock)
        {
            switch (instrument.Name)
            {
                case MustafarMetrics.StepDuration: _steps++; _step += seconds; break;
                case MustafarMetrics.DecodeDuration: _decode += seconds; break;
                case MustafarMetrics.SampleDuration: _sample += seconds; break;
            }
        }
    }

    public void Dispose() => _listener.Dispose();
}
