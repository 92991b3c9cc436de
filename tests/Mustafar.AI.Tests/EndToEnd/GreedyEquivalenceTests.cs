using Mustafar.AI.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Mustafar.AI.Tests.EndToEnd;

/// <summary>The real models through our backend produce what plain llama.cpp on its CPU backend produces.</summary>
public sealed class GreedyEquivalenceTests(ITestOutputHelper output)
{
    [SkippableTheory]
    [InlineData("stories260K-f32.gguf", "Once upon a time")]
    [InlineData("babyllama-tok105-f32.gguf", "Once upon a time")]
    public async Task Greedy64TokensEqualPlainLlamaCpuTokenForToken(string model, string prompt)
    {
        string path = TestPaths.Model(model);
        List<int> reference, ours;
        await using (var cpu = await Engines.LoadAsync(path, mustafar: false, contextSize: 256))
        {
            reference = await Engines.GreedyTokensAsync(cpu, prompt, 64);
        }

        await using (var engine = await Engines.LoadAsync(path, mustafar: true, contextSize: 256))
        {
            ours = await Engines.GreedyTokensAsync(engine, prompt, 64);
            output.WriteLine(Engines.Text(engine, ours));
        }

        Assert.Equal(64, reference.Count);
        Assert.Equal(reference, ours);
    }

    [SkippableFact]
    public async Task StoriesModelContinuesWithTheKnownStory()
    {
        await using var engine = await Engines.LoadAsync(TestPaths.Stories, mustafar: true, contextSize: 256);
        string text = Engines.Text(engine, await Engines.GreedyTokensAsync(engine, "Once upon a time", 40));
        Assert.StartsWith(", there was a little girl named Lily. She loved to play outside in the park.", text, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task RecallModelAnswers20RetrievalPromptsLikePlainLlamaCpu()
    {
        string path = TestPaths.Recall;
        var prompts = RecallPrompts.Create(20, seed: 2026);
        var reference = new List<string>();
        var ours = new List<string>();
        await using (var cpu = await Engines.LoadAsync(path, mustafar: false))
        {
            foreach (var p in prompts)
            {
                reference.Add(Engines.Text(cpu, await Engines.GreedyTokensAsync(cpu, p.Text, 4)));
            }
        }

        await using (var engine = await Engines.LoadAsync(path, mustafar: true))
        {
            foreach (var p in prompts)
            {
                ours.Add(Engines.Text(engine, await Engines.GreedyTokensAsync(engine, p.Text, 4)));
            }
        }

        int correct = prompts.Zip(ours).Count(x => x.Second == x.First.Answer);
        foreach (var (p, a) in prompts.Zip(ours).Where(x => x.Second != x.First.Answer))
        {
            output.WriteLine($"wrong: expected {p.Answer}, got '{a}' ({p.Text.Length} chars): ...{p.Text[^200..]}");
        }

        output.WriteLine($"exact answers through Mustafar: {correct}/{prompts.Count}; prompt lengths {prompts.Min(p => p.Text.Length)}-{prompts.Max(p => p.Text.Length)} chars");
        Assert.Equal(reference, ours);
        Assert.True(correct >= prompts.Count * 3 / 4, $"only {correct}/{prompts.Count} exact answers: the prompts are not what the model was trained on");
    }
}
