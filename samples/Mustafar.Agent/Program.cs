// A Semantic Kernel agent over a local GGUF model: a kernel with a plugin (the lights of a house) whose
// functions the model calls through the Mustafar chat client.
//   dotnet run --project samples/Mustafar.Agent -- --model my-instruct-model.gguf "Switch on the kitchen light."
//   dotnet run --project samples/Mustafar.Agent -- --model ../shared/models/stories260K-f32.gguf --require switch_light
// A model chooses a function by itself only if it was trained for tool calls (Llama 3.x, Qwen 2.5, Hermes);
// --require FUNCTION (or "any") makes any model call one (a grammar lets it write nothing else), which shows
// the plumbing with the tiny story models. Without --model it runs on a generated random-weight llama (noise).
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.SemanticKernel;
using Microsoft.SemanticKernel.ChatCompletion;
using Mustafar.Agent;
using Mustafar.Gguf;

string? model = null, prompt = null, require = null;
int contextSize = 2048, maxTokens = 200;
double temperature = 0, sparsity = 0.5;
try
{
    for (int i = 0; i < args.Length; i++)
    {
        switch (args[i])
        {
            case "--model": model = Value(ref i); break;
            case "--require": require = Value(ref i); break;
            case "--ctx-size": contextSize = int.Parse(Value(ref i), CultureInfo.InvariantCulture); break;
            case "--max-tokens": maxTokens = int.Parse(Value(ref i), CultureInfo.InvariantCulture); break;
            case "--temperature": temperature = double.Parse(Value(ref i), CultureInfo.InvariantCulture); break;
            case "--sparsity": sparsity = double.Parse(Value(ref i), CultureInfo.InvariantCulture); break;
            case var option when option.StartsWith("--", StringComparison.Ordinal): throw new ArgumentException($"unknown option {option}");
            default: prompt = prompt is null ? args[i] : $"{prompt} {args[i]}"; break;
        }
    }
}
catch (Exception e) when (e is ArgumentException or FormatException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    Console.Error.WriteLine("usage: Mustafar.Agent [--model PATH] [--require FUNCTION|any] [--ctx-size N] [--max-tokens N] [--temperature T] [--sparsity S] [PROMPT]");
    return 2;
}

var home = new HomePlugin();
var plugin = KernelPluginFactory.CreateFromObject(home, "home");
if (require is not null && require != "any" && !plugin.Contains(require))
{
    Console.Error.WriteLine($"error: the home plugin has no function {require} ({string.Join(", ", plugin.Select(f => f.Name))})");
    return 2;
}

if (model is null)
{
    model = SyntheticLlama.EnsureDemoModel();
    Console.Error.WriteLine($"No --model given: using a generated random-weight llama at {model}; its text is noise.");
}

var services = new ServiceCollection();
services.AddMustafarChatCompletion(o =>
{
    o.ModelPath = model;
    o.ContextSize = contextSize;
    o.KSparsity = o.VSparsity = sparsity;
});
services.AddKernel().Plugins.Add(plugin);

// The container owns the model: disposing it frees the native memory.
await using var provider = services.BuildServiceProvider();
var kernel = provider.GetRequiredService<Kernel>();
IChatCompletionService chat;
try
{
    chat = kernel.GetRequiredService<IChatCompletionService>();  // loads the model
}
catch (Exception e) when (e is OptionsValidationException or IOException or NotSupportedException or InvalidOperationException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}

var history = new ChatHistory("You control the lights of a house with the functions you are given. Call them to do what the user asks, then answer in one sentence.");
history.AddUserMessage(prompt ?? "Switch on the kitchen light, then tell me which lights are on.");
var settings = new PromptExecutionSettings
{
    FunctionChoiceBehavior = require switch
    {
        null => FunctionChoiceBehavior.Auto(),
        "any" => FunctionChoiceBehavior.Required(),
        _ => FunctionChoiceBehavior.Required([plugin[require]]),
    },
    ExtensionData = new Dictionary<string, object> { ["temperature"] = temperature, ["max_tokens"] = maxTokens },
};

int seen = history.Count;
ChatMessageContent reply;
try
{
    reply = await chat.GetChatMessageContentAsync(history, settings, kernel);
}
catch (Exception e) when (e is ArgumentException or InvalidOperationException)  // e.g. text the tokenizer cannot encode, a prompt too long
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}

// The kernel adds the model's calls and the functions' results to the history; the reply is the last answer.
foreach (var message in history.Skip(seen))
{
    foreach (var item in message.Items)
    {
        switch (item)
        {
            case FunctionCallContent call:
                string arguments = string.Join(", ", call.Arguments?.Select(a => $"{a.Key}: {a.Value}") ?? []);
                Console.WriteLine($"call: {call.FunctionName}({arguments})");
                break;
            case FunctionResultContent result:
                Console.WriteLine($"result: {result.Result}");
                break;
        }
    }
}

Console.WriteLine($"assistant: {reply.Content}");
Console.WriteLine($"lights on: {(home.LightsOn.Count == 0 ? "none" : string.Join(", ", home.LightsOn))}");
return 0;

string Value(ref int i) => ++i < args.Length ? args[i] : throw new ArgumentException($"{args[i - 1]} needs a value");
