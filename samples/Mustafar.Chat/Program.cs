// Streams a completion from a local GGUF model through the Mustafar backend.
//   dotnet run --project samples/Mustafar.Chat -- --model PATH --temperature 0 --max-tokens 64 "Once upon a time"
// Without --model it runs on a small random-weight llama that it generates itself (its text is noise).
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Mustafar.AI;
using Mustafar.Gguf;

var args_ = new Queue<string>(args);
string? model = null, prompt = null;
var chat = new ChatOptions { MaxOutputTokens = 128 };
var options = new MustafarOptions { ContextSize = 2048 };
bool statsJson = false, verbose = false;
try
{
    while (args_.Count > 0)
    {
        string arg = args_.Dequeue();
        switch (arg)
        {
            case "--model": model = Next(); break;
            case "--temperature": chat.Temperature = float.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--top-k": chat.TopK = int.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--top-p": chat.TopP = float.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--seed": chat.Seed = long.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--max-tokens": chat.MaxOutputTokens = int.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--ctx-size": options.ContextSize = int.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--k-sparsity": options.KSparsity = double.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--v-sparsity": options.VSparsity = double.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--local-window": options.LocalWindow = int.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--threads": options.Threads = int.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--stats-json": statsJson = true; break;
            case "--verbose": verbose = true; break;
            case "--help" or "-h": Usage(); return 0;
            default:
                if (arg.StartsWith("--", StringComparison.Ordinal))
                {
                    throw new ArgumentException($"unknown option {arg}");
                }

                prompt = prompt is null ? arg : $"{prompt} {arg}";
                break;
        }
    }
}
catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    Usage();
    return 2;
}

if (model is null)
{
    model = SyntheticLlama.EnsureDemoModel();
    Console.Error.WriteLine($"No --model given: using a generated random-weight llama (head_dim 128, GQA 4) at {model}; its text is noise.");
}

options.ModelPath = model;
prompt ??= "Once upon a time";
try
{
    // Warnings and errors of llama.cpp and the backend go to stderr; with --verbose, its whole log.
    using var loggers = LoggerFactory.Create(b => b.SetMinimumLevel(verbose ? LogLevel.Debug : LogLevel.Warning)
        .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace));
    await using var client = (IAsyncDisposable)await MustafarChatClientFactory.CreateAsync(options, loggers);
    var chatClient = (IChatClient)client;
    var clock = Stopwatch.StartNew();
    TimeSpan? firstToken = null;
    UsageDetails? usage = null;
    await foreach (var update in chatClient.GetStreamingResponseAsync(prompt, chat))
    {
        if (update.Text.Length > 0)
        {
            firstToken ??= clock.Elapsed;
            Console.Write(update.Text);
        }

        usage ??= update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details;
    }

    Console.WriteLine();
    if (statsJson)
    {
        var kv = chatClient.GetService<MustafarKvStatistics>();
        double generateSeconds = (clock.Elapsed - (firstToken ?? TimeSpan.Zero)).TotalSeconds;
        long generated = usage?.OutputTokenCount ?? 0;
        Console.Error.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["prompt_tokens"] = usage?.InputTokenCount,
            ["generated_tokens"] = generated,
            ["tokens_per_second"] = generated > 1 && generateSeconds > 0 ? Math.Round((generated - 1) / generateSeconds, 2) : null,
            ["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 3),
            ["kv_bytes"] = kv?.KvBytes,
            ["kv_dense_bytes"] = kv?.KvDenseBytes,
            ["kv_dense_rows"] = kv?.DenseRows,
            ["kv_compressed_rows"] = kv?.CompressedRows,
            ["k_sparsity"] = options.KSparsity,
            ["v_sparsity"] = options.VSparsity,
            ["local_window"] = options.LocalWindow,
        }));
    }

    return 0;
}
catch (Exception e)
{
    // Bad input and failures alike end with a message, not a stack trace.
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}

string Next() => args_.Count > 0 ? args_.Dequeue() : throw new ArgumentException("an option is missing its value");

static void Usage() => Console.Error.WriteLine(
    "usage: Mustafar.Chat [--model PATH] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--max-tokens N]\n" +
    "                     [--ctx-size N] [--k-sparsity S] [--v-sparsity S] [--local-window W] [--threads N] [--stats-json] [--verbose] PROMPT");
