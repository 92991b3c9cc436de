using LLama.Native;
using Mustafar.AI.Tests.Infrastructure;
using Mustafar.Gguf;
using Xunit.Abstractions;

namespace Mustafar.AI.Tests.EndToEnd;

/// <summary>
/// A generated llama with a production attention shape (head_dim 128, GQA 4): our backend's logits match
/// llama.cpp's CPU backend over a prompt split into several micro-batches and 32 further steps.
/// Random weights give near-ties, so logits are compared, not tokens.
/// </summary>
public sealed class RandomModelLogitsTests(ITestOutputHelper output)
{
    private const int PromptTokens = 320;
    private const int Steps = 32;

    [Fact]
    public async Task LogitsAgreeWithLlamaCpuWithin1e4PerStep()
    {
        string path = TestPaths.TempFile("random-hd128-gqa4.gguf");
        var spec = SyntheticLlamaSpec.SmallHd128;
        Assert.Equal(128, spec.HeadDim);
        Assert.Equal(4, spec.HeadCount / spec.KvHeadCount);
        SyntheticLlama.Write(path, spec);

        var rng = new Random(7);
        // Character tokens start after <unk>, <s>, </s> and the 256 byte tokens.
        var tokens = Enumerable.Range(0, PromptTokens + Steps).Select(_ => (LLamaToken)rng.Next(259, 290)).ToList();
        var reference = await RunAsync(path, mustafar: false, tokens);
        var ours = await RunAsync(path, mustafar: true, tokens);

        double worst = 0;
        for (int step = 0; step < reference.Count; step++)
        {
            double diff = 0, norm = 0;
            for (int i = 0; i < reference[step].Length; i++)
            {
                double d = ours[step][i] - reference[step][i];
                diff += d * d;
                norm += (double)reference[step][i] * reference[step][i];
            }

            double relative = Math.Sqrt(diff / norm);
            worst = Math.Max(worst, relative);
            output.WriteLine($"step {step}: {relative:E2}");
        }

        output.WriteLine($"worst relative logit error over {reference.Count} steps: {worst:E2}");
        Assert.True(worst <= 1e-4, $"relative logit error {worst:E2} > 1e-4");
    }

    private static async Task<List<float[]>> RunAsync(string path, bool mustafar, List<LLamaToken> tokens)
    {
        // Batch 128 splits the 320-token prompt into three micro-batches.
        await using var engine = await Engines.LoadAsync(path, mustafar, contextSize: 512, batchSize: 128);
        var driver = new Driver(engine);
        var logits = new List<float[]> { driver.Decode((0, tokens[..PromptTokens], 0))[0] };
        for (int i = PromptTokens; i < tokens.Count; i++)
        {
            logits.Add(driver.Decode((0, [tokens[i]], i))[0]);
        }

        return logits;
    }
}
