using LLama.Native;
using Mustafar.AI.Engine;

namespace Mustafar.AI.Tests.Infrastructure;

/// <summary>Drives a loaded engine's llama.cpp context token by token, for tests of sequences and state.</summary>
internal sealed class Driver(LlamaEngine engine)
{
    private readonly LLamaBatch _batch = new();

    public SafeLLamaContextHandle Handle => engine.Context.NativeHandle;

    /// <summary>
    /// Decodes (sequence, tokens, first position) groups in as few llama_decode calls as the batch size
    /// allows (llama.cpp asserts on larger ones); returns the last logits of each group.
    /// </summary>
    public List<float[]> Decode(params (int Seq, IReadOnlyList<LLamaToken> Tokens, int Start)[] groups)
    {
        int batchSize = (int)engine.Context.BatchSize;
        var pending = groups.SelectMany((g, index) => g.Tokens.Select((t, i) => (Index: index, g.Seq, Token: t, Pos: g.Start + i, Last: i == g.Tokens.Count - 1))).ToList();
        var logits = new float[groups.Length][];
        for (int start = 0; start < pending.Count; start += batchSize)
        {
            _batch.Clear();
            var chunk = pending.Skip(start).Take(batchSize).ToList();
            foreach (var t in chunk)
            {
                _batch.Add(t.Token, t.Pos, (LLamaSeqId)t.Seq, t.Last);
            }

            Assert.Equal(DecodeResult.Ok, Handle.Decode(_batch));
            for (int i = 0; i < chunk.Count; i++)
            {
                if (chunk[i].Last)
                {
                    logits[chunk[i].Index] = Handle.GetLogitsIth(i).ToArray();
                }
            }
        }

        return [.. logits];
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
