using LLama.Native;
using Mustafar.AI.Engine;

namespace Mustafar.AI.Tests.Infrastructure;

/// <summary>Drives a loaded engine's llama.cpp context token by token, for tests of sequences and state.</summary>
internal sealed class Driver(LlamaEngine engine)
{
    private readonly LLamaBatch _batch = new();

    public SafeLLamaContextHandle Handle => engine.Context.NativeHandle;

    /// <summary>Decodes (sequence, tokens, first position) groups in one batch; returns the last logits of each group.</summary>
    public List<float[]> Decode(params (int Seq, IReadOnlyList<LLamaToken> Tokens, int Start)[] groups)
    {
        _batch.Clear();
        var last = new List<int>();
        foreach (var (seq, tokens, start) in groups)
        {
            for (int i = 0; i < tokens.Count; i++)
            {
                _batch.Add(tokens[i], start + i, (LLamaSeqId)seq, i == tokens.Count - 1);
            }

            last.Add(_batch.TokenCount - 1);
        }

        var result = Handle.Decode(_batch);
        Assert.Equal(DecodeResult.Ok, result);
        return last.Select(i => Handle.GetLogitsIth(i).ToArray()).ToList();
    }

    public static int ArgMax(float[] logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++)
        {
            if (logits[i] > logits[best])
            {
                best = i;
            }
        }

        return best;
    }

    /// <summary>
    /// Greedy continuation of sequence 0 from <paramref name="logits"/>, decoding from <paramref name="position"/>;
    /// returns the tokens and the logits after the last one.
    /// </summary>
    public (List<int> Tokens, float[] Logits) Greedy(float[] logits, int position, int count)
    {
        var tokens = new List<int>();
        for (int i = 0; i < count; i++)
        {
            int token = ArgMax(logits);
            tokens.Add(token);
            logits = Decode((0, [(LLamaToken)token], position++))[0];
        }

        return (tokens, logits);
    }
}
