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
    /// <exception cref="ArgumentOutOfRangeException">A token id is not in the model's vocabulary.</exception>
    public string Decode(IEnumerable<int> tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        int size = VocabularySize;
        var ids = tokens.ToList();
        // llama.cpp indexes its token table with the id unchecked (std::vector::at): a C++ exception, the process's end.
        foreach (int id in ids)
        {
            if (id < 0 || id >= size)
            {
                throw new ArgumentOutOfRangeException(nameof(tokens), id, $"Token id {id} is not in the model's vocabulary of {size} tokens.");
            }
        }

        return _engine.Detokenize(ids.Select(t => (LLamaToken)t));
    }

    /// <summary>How many tokens the model's vocabulary has (ids 0 to this less one).</summary>
    public int VocabularySize => _engine.VocabularySize;

    /// <summary>How many tokens <paramref name="text"/> takes.</summary>
    public int CountTokens(string text) => Encode(text).Count;
}
