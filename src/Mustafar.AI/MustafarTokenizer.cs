using LLama.Native;
using Mustafar.AI.Engine;

namespace Mustafar.AI;

/// <summary>The model's tokenizer, from <c>GetService&lt;MustafarTokenizer&gt;()</c>: count and split text as the model sees it.</summary>
public sealed class MustafarTokenizer
{
    private readonly LlamaEngine _engine;

    internal MustafarTokenizer(LlamaEngine engine) => _engine = engine;

    /// <summary>Token ids of <paramref name="text"/>, with the model's BOS token first when <paramref name="addBos"/>.</summary>
    public IReadOnlyList<int> Encode(string text, bool addBos = false) =>
        [.. _engine.Tokenize(text, addBos, special: false).Select(t => (int)t)];

    /// <summary>The text of <paramref name="tokens"/>.</summary>
    public string Decode(IEnumerable<int> tokens) => _engine.Detokenize(tokens.Select(t => (LLamaToken)t));

    /// <summary>How many tokens <paramref name="text"/> takes.</summary>
    public int CountTokens(string text) => Encode(text).Count;
}
