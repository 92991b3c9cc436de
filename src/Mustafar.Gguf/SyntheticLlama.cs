namespace Mustafar.Gguf;

/// <summary>
/// Generates llama-architecture GGUF models with deterministic random weights and a character-level SentencePiece
/// vocabulary, which llama.cpp loads and runs. The text they produce is noise; they exist for shapes, speed and equality tests.
/// </summary>
public static class SyntheticLlama
{
    /// <summary>Vocabulary: &lt;unk&gt; &lt;s&gt; &lt;/s&gt;, the 256 byte tokens, then these single characters (ids from 259).</summary>
    public const string Characters = "\u2581abcdefghijklmnopqrstuvwxyz0123456789.,?!:;'-=ABCDEFGHIJKLMNOPQRSTUVWXYZ";

    /// <summary>Id of the first character token ("▁"); byte token b has id 3 + b.</summary>
    public const int FirstCharacterId = 3 + 256;

    /// <summary>Writes the model of <paramref name="spec"/> to <paramref name="path"/>.</summary>
    /// <param name="path">Output file.</param>
    /// <param name="spec">Model shape and seed.</param>
    /// <param name="architectureOverride">
    /// For tests of bad input: written as <c>general.architecture</c> instead of "llama" while every other key keeps its
    /// <c>llama.</c> prefix. For other deliberate defects, edit <see cref="CreateWriter"/>'s result (Set, Remove, RemoveTensor).
    /// </param>
    public static void Write(string path, SyntheticLlamaSpec spec, string? architectureOverride = null)
    {
        GgufWriter writer = CreateWriter(spec);
        if (architectureOverride is not null)
        {
            writer.Set("general.architecture", architectureOverride);
        }

        writer.WriteTo(path);
    }

    /// <summary>
    /// The demo model the samples run when no model is given (<see cref="SyntheticLlamaSpec.SmallHd128"/>, random
    /// weights, so its text is noise), written once to the temp folder; returns its path.
    /// </summary>
    public static string EnsureDemoModel()
    {
        string path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "mustafar-demo", "demo-llama-hd128.gguf");
        if (!File.Exists(path))
        {
            Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
            Write(path, SyntheticLlamaSpec.SmallHd128);
        }

        return path;
    }

    /// <summary>A writer holding the model's metadata and (lazily generated) tensors, to adjust before <see cref="GgufWriter.WriteTo"/>.</summary>
    public static GgufWriter CreateWriter(SyntheticLlamaSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Validate();
        var (tokens, types) = Vocabulary();
        int n = spec.EmbeddingLength, q = spec.HeadCount * spec.HeadDim, kv = spec.KvHeadCount * spec.HeadDim, ff = spec.FeedForwardLength;
        var w = new GgufWriter()
            .Set("general.architecture", "llama")
            .Set("general.name", spec.Name)
            .Set("general.file_type", spec.WeightType == GgmlType.F16 ? 1u : 0u) // LLAMA_FTYPE_MOSTLY_F16 / ALL_F32
            .Set("llama.context_length", (uint)spec.ContextLength)
            .Set("llama.embedding_length", (uint)n)
            .Set("llama.block_count", (uint)spec.LayerCount)
            .Set("llama.feed_forward_length", (uint)ff)
            .Set("llama.attention.head_count", (uint)spec.HeadCount)
            .Set("llama.attention.head_count_kv", (uint)spec.KvHeadCount)
            .Set("llama.rope.dimension_count", (uint)spec.HeadDim)
            .Set("llama.rope.freq_base", spec.RopeFreqBase)
            .Set("llama.attention.layer_norm_rms_epsilon", 1e-5f)
            .Set("llama.vocab_size", (uint)tokens.Length);
        if (spec.HeadDim * spec.HeadCount != n)
        {
            // llama.cpp assumes n_embd / n_head without these keys.
            w.Set("llama.attention.key_length", (uint)spec.HeadDim).Set("llama.attention.value_length", (uint)spec.HeadDim);
        }

        w.Set("tokenizer.ggml.model", "llama")
            .Set("tokenizer.ggml.tokens", tokens)
            .Set("tokenizer.ggml.scores", new float[tokens.Length])
            .Set("tokenizer.ggml.token_type", types)
            .Set("tokenizer.ggml.unknown_token_id", 0u)
            .Set("tokenizer.ggml.bos_token_id", 1u)
            .Set("tokenizer.ggml.eos_token_id", 2u)
            .Set("tokenizer.ggml.add_bos_token", true)
            .Set("tokenizer.ggml.add_eos_token", false)
            .Set("tokenizer.ggml.add_space_prefix", true); // SPM's default, written so readers need not know it

        ulong vocab = (ulong)tokens.Length;
        // Matrices ~ 1/sqrt(fan_in) keep every projection's output near unit scale, so logits are O(1) and not degenerate.
        void Matrix(string name, int fanIn, ulong fanOut) => w.AddTensor(name, spec.WeightType, [(ulong)fanIn, fanOut], Random(spec.Seed, name, 1 / MathF.Sqrt(fanIn)));
        void Norm(string name) => w.AddTensor(name, GgmlType.F32, [(ulong)n], (_, dest) => dest.Fill(1f));

        w.AddTensor("token_embd.weight", spec.WeightType, [(ulong)n, vocab], Random(spec.Seed, "token_embd.weight", 1f));
        Norm("output_norm.weight");
        Matrix("output.weight", n, vocab);
        for (int b = 0; b < spec.LayerCount; b++)
        {
            Norm($"blk.{b}.attn_norm.weight");
            Matrix($"blk.{b}.attn_q.weight", n, (ulong)q);
            Matrix($"blk.{b}.attn_k.weight", n, (ulong)kv);
            Matrix($"blk.{b}.attn_v.weight", n, (ulong)kv);
            Matrix($"blk.{b}.attn_output.weight", q, (ulong)n);
            Norm($"blk.{b}.ffn_norm.weight");
            Matrix($"blk.{b}.ffn_gate.weight", n, (ulong)ff);
            Matrix($"blk.{b}.ffn_up.weight", n, (ulong)ff);
            Matrix($"blk.{b}.ffn_down.weight", ff, (ulong)n);
        }

        return w;
    }

    /// <summary>The token strings and their llama.cpp token types (1 normal, 2 unknown, 3 control, 6 byte).</summary>
    private static (string[] Tokens, int[] Types) Vocabulary()
    {
        var tokens = new List<string> { "<unk>", "<s>", "</s>" };
        var types = new List<int> { 2, 3, 3 };
        for (int b = 0; b < 256; b++)
        {
            tokens.Add($"<0x{b:X2}>"); // llama.cpp looks byte tokens up by this exact spelling
            types.Add(6);
        }

        foreach (char c in Characters)
        {
            tokens.Add(c.ToString());
            types.Add(1);
        }

        return (tokens.ToArray(), types.ToArray());
    }

    /// <summary>
    /// Uniform values with standard deviation <paramref name="std"/>. Element i is a pure function of (seed, name, i)
    /// (splitmix64 at counter i), so chunks can be generated in any order and the output is byte-identical everywhere:
    /// only exact float operations are used (no log/cos as in Box-Muller).
    /// </summary>
    private static TensorFill Random(ulong seed, string name, float std)
    {
        ulong stream = Mix(seed ^ Fnv1a(name));
        float scale = 2 * MathF.Sqrt(3) * std; // uniform on [-a, a) has std a / sqrt(3)
        return (first, dest) =>
        {
            for (int i = 0; i < dest.Length; i++)
            {
                ulong r = Mix(stream + (ulong)(first + i) * 0x9E3779B97F4A7C15UL);
                dest[i] = ((r >> 40) * (1f / (1 << 24)) - 0.5f) * scale; // 24 random bits: exact in a float
            }
        };
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static ulong Fnv1a(string s)
    {
        ulong h = 0xCBF29CE484222325UL;
        foreach (char c in s)
        {
            h = (h ^ c) * 0x100000001B3UL;
        }

        return h;
    }
}
