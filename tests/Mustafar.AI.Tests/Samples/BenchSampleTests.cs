using System.Globalization;
using Mustafar.AI.Tests.Infrastructure;
using Mustafar.Gguf;

namespace Mustafar.AI.Tests.Samples;

/// <summary>samples/Mustafar.Bench end to end on the CPU flavour with a tiny generated model (the GPU run uses the same program).</summary>
public sealed class BenchSampleTests
{
    [Fact]
    public async Task WritesOneRowPerBatchAndContextWithMeasuredThroughput()
    {
        string model = TestPaths.TempFile("tiny.gguf");
        SyntheticLlama.Write(model, SyntheticLlamaSpec.Tiny with { ContextLength = 1024 });
        string output = TestPaths.TempFile("bench.md");

        var (exitCode, log) = await SamplePrograms.RunAsync("Mustafar.Bench",
            "--model", model, "--contexts", "256,512", "--batches", "1,2", "--decode-tokens", "4", "--threads", "1", "--out", output);

        Assert.True(exitCode == 0, log);
        Assert.Contains("CPU threads 1.", File.ReadAllText(output), StringComparison.Ordinal);
        var rows = File.ReadAllLines(output).Where(l => l.StartsWith("| ", StringComparison.Ordinal) && char.IsDigit(l[2])).ToList();
        Assert.Equal(["1 256", "1 512", "2 256", "2 512"], rows.Select(r => string.Join(' ', Cells(r).Take(2))));
        foreach (var cells in rows.Select(Cells))
        {
            int batch = int.Parse(cells[0], CultureInfo.InvariantCulture), context = int.Parse(cells[1], CultureInfo.InvariantCulture);
            long promptTokens = long.Parse(cells[2], CultureInfo.InvariantCulture), generated = long.Parse(cells[5], CultureInfo.InvariantCulture);
            Assert.InRange(promptTokens, batch * (context - 4 - 64), batch * context);  // one token per character, plus the template
            Assert.InRange(generated, 1, batch * 4);
            Assert.True(double.Parse(cells[4], CultureInfo.InvariantCulture) > 0 && double.Parse(cells[7], CultureInfo.InvariantCulture) > 0);
            double step = double.Parse(cells[9], CultureInfo.InvariantCulture), decode = double.Parse(cells[10], CultureInfo.InvariantCulture),
                sample = double.Parse(cells[11], CultureInfo.InvariantCulture);
            Assert.True(decode > 0 && sample > 0 && decode + sample <= step, $"engine step split: {step} ms, decode {decode}, sampling {sample}");
        }
    }

    [Fact]
    public async Task RequestsWithCellsOfTheirOwnGenerateTheSharedLayoutsText()
    {
        string model = TestPaths.TempFile("tiny-layout.gguf");
        SyntheticLlama.Write(model, SyntheticLlamaSpec.Tiny with { ContextLength = 1024 });
        var digests = new List<string>();
        foreach (string[] layout in new[] { ["--fresh-prompts"], new[] { "--cache-layout", "per-request" } })
        {
            string output = TestPaths.TempFile("bench-layout.md");
            var (exitCode, log) = await SamplePrograms.RunAsync("Mustafar.Bench",
                ["--model", model, "--contexts", "256", "--batches", "2", "--decode-tokens", "8", "--out", output, .. layout]);
            Assert.True(exitCode == 0, log);
            digests.Add(log.Split('\n').Single(l => l.Contains("generated text digest", StringComparison.Ordinal)).Trim());
            Assert.Contains(layout.Length == 1 ? "cache layout Shared" : "cache layout PerRequest", File.ReadAllText(output), StringComparison.Ordinal);
        }

        Assert.Equal(digests[0], digests[1]);
    }

    [Fact]
    public async Task RejectsAContextTooSmallForTheGeneratedTokens()
    {
        var (exitCode, log) = await SamplePrograms.RunAsync("Mustafar.Bench", "--model", "unused.gguf", "--contexts", "64", "--decode-tokens", "8");
        Assert.Equal(2, exitCode);
        Assert.Contains("contexts must exceed", log, StringComparison.Ordinal);
    }

    private static string[] Cells(string row) => row.Trim('|').Split('|').Select(c => c.Trim()).ToArray();
}
