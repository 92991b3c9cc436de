// Long-document questions over one cached document: the document is decoded once, every further
// question reuses its (compressed) cache, and the KV memory saved is printed.
//   dotnet run --project samples/Mustafar.Rag -- --model ../shared/models/recall-hd128-q8_0.gguf
//   dotnet run --project samples/Mustafar.Rag -- --model my-model.gguf --document report.txt "question 1" "question 2"
// Without --document it writes a document in the style the recall model was trained on and asks for its codes.
using System.Globalization;
using Microsoft.Extensions.AI;
using Mustafar.AI;
using Mustafar.Gguf;

string? model = null, documentPath = null;
var questions = new List<string>();
var options = new MustafarOptions { ContextSize = 2048, CachedPrefixes = 2, KSparsity = 0.7, VSparsity = 0.7 };
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--model": model = args[++i]; break;
        case "--document": documentPath = args[++i]; break;
        case "--ctx-size": options.ContextSize = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--sparsity": options.KSparsity = options.VSparsity = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
        default: questions.Add(args[i]); break;
    }
}

if (model is null)
{
    model = SyntheticLlama.EnsureDemoModel();
    Console.Error.WriteLine($"No --model given: using a generated random-weight llama at {model}; its answers are noise.");
}

string document;
var expected = new Dictionary<string, string>();
if (documentPath is not null)
{
    document = await File.ReadAllTextAsync(documentPath);
}
else
{
    // Facts hidden among filler sentences, as in the recall model's training documents.
    var rng = new Random(42);
    string[] names = ["kalomi", "tenbo", "siduvi", "garpo", "luzofe"];
    var facts = names.Select(n => (Name: n, Code: rng.Next(1000, 10000).ToString(CultureInfo.InvariantCulture))).ToList();
    string[] filler = ["the red fox ran to the mill.", "a small boy sat near the river.", "the old man walked to the barn.", "the cat looked at the gate."];
    var sentences = Enumerable.Range(0, 36).Select(i => filler[rng.Next(filler.Length)]).ToList();
    foreach (var (name, code) in facts)
    {
        sentences.Insert(rng.Next(sentences.Count), $"the code of {name} is {code}.");
    }

    document = string.Join(" ", sentences);
    if (questions.Count == 0)
    {
        foreach (var (name, code) in facts)
        {
            questions.Add($"what is the code of {name}? it is ");
            expected[questions[^1]] = code;
        }
    }
}

if (questions.Count == 0)
{
    Console.Error.WriteLine("usage: Mustafar.Rag [--model PATH] [--document FILE] [--ctx-size N] [--sparsity S] QUESTION...");
    return 2;
}

options.ModelPath = model;
using var client = await MustafarChatClientFactory.CreateAsync(options);
Console.WriteLine($"document: {document.Length} characters, {client.GetService<MustafarTokenizer>()!.CountTokens(document)} tokens");
foreach (string question in questions)
{
    var response = await client.GetResponseAsync($"{document} {question}",
        new ChatOptions { Temperature = 0, MaxOutputTokens = 32, StopSequences = ["."] });
    var usage = response.Usage!;
    string check = expected.TryGetValue(question, out string? code) ? $" (the document says {code})" : "";
    Console.WriteLine($"Q: {question}\nA: {response.Text.Trim()}{check}   [{usage.InputTokenCount} prompt tokens, {usage.CachedInputTokenCount} from the cache]");
}

var kv = client.GetService<MustafarKvStatistics>()!;
Console.WriteLine($"KV cache: {kv.KvBytes / 1048576.0:F2} MiB at sparsity {options.KSparsity} against {kv.KvDenseBytes / 1048576.0:F2} MiB dense f16 " +
                  $"({1 - kv.Ratio:P0} saved); {kv.CompressedRows} rows compressed, {kv.DenseRows} dense.");
return 0;
