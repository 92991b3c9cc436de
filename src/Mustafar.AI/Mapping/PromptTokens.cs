using System.Buffers;
using System.Text;
using LLama.Native;
using Mustafar.AI.Engine;

namespace Mustafar.AI.Mapping;

/// <summary>
/// The tokens of a prompt written with the model's chat template. llama.cpp parses special tokens anywhere in the
/// text it is given, so a message that contains one's text (a document that quotes <c>&lt;|im_end|&gt;</c> or
/// <c>&lt;/s&gt;</c>) would end its turn or the conversation inside the model's prompt. Where a message's text holds
/// one, the prompt is tokenized as llama.cpp does it (special tokens, then each run of text between them on its own)
/// with special tokens parsed in the template's text only; otherwise it is handed to llama.cpp whole. Messages' texts
/// are their <see cref="Microsoft.Extensions.AI.TextContent"/> and the values of tool results (fetched text, often);
/// instructions, tool declarations, calls and the markup around results are written as before. The partitioned path does not apply the white-space stripping that some special tokens ask of
/// llama.cpp (lstrip/rstrip attributes).
/// </summary>
internal static class PromptTokens
{
    /// <summary>A vocabulary's special tokens by text, longest first, and a search for any of their texts.</summary>
    public sealed record Specials(IReadOnlyList<(string Text, LLamaToken Token)> Tokens, SearchValues<string> Texts)
    {
        public static Specials Of(IReadOnlyList<(string Text, LLamaToken Token)> tokens) =>
            new(tokens, SearchValues.Create(tokens.Select(t => t.Text).ToArray(), StringComparison.Ordinal));
    }

    /// <param name="engine">The model's tokenizer.</param>
    /// <param name="prompt">The templated prompt.</param>
    /// <param name="texts">The messages' own texts (<see cref="PromptBuilder.Texts"/>).</param>
    /// <param name="locate">Where those texts lie in the prompt (<see cref="PromptBuilder.MessageTexts"/>), or null if unknown.</param>
    public static IReadOnlyList<LLamaToken> Templated(LlamaEngine engine, string prompt, IEnumerable<string> texts, Func<IReadOnlyList<Range>?> locate)
    {
        var specials = engine.SpecialTokens;
        // Most prompts quote none: those skip the second rendering that locates the texts.
        if (specials.Tokens.Count > 0 && texts.Any(t => t.AsSpan().IndexOfAny(specials.Texts) >= 0) && locate() is { } spans)
        {
            return Partitioned(engine, prompt, spans);
        }

        return engine.Tokenize(prompt, addBos: true, special: true);
    }

    /// <summary>The prompt's tokens with special tokens parsed outside <paramref name="messageTexts"/> only.</summary>
    public static List<LLamaToken> Partitioned(LlamaEngine engine, string prompt, IReadOnlyList<Range> messageTexts)
    {
        var specials = engine.SpecialTokens;
        // What llama.cpp adds around the text when asked for special tokens (BOS first, EOS last where the model wants them).
        var edges = engine.Tokenize("", addBos: true, special: false);
        var bos = edges.TakeWhile(t => t == engine.BosToken).ToList();
        var tokens = new List<LLamaToken>(bos);
        var text = new StringBuilder();
        void Flush()
        {
            if (text.Length > 0)
            {
                tokens.AddRange(engine.Tokenize(text.ToString(), addBos: false, special: false));
                text.Clear();
            }
        }

        int at = 0;
        foreach (var span in messageTexts.Select(r => r.GetOffsetAndLength(prompt.Length)).OrderBy(s => s.Offset))
        {
            Template(prompt.AsSpan(at, span.Offset - at));
            text.Append(prompt.AsSpan(span.Offset, span.Length));  // a message's own text: never a special token
            at = span.Offset + span.Length;
        }

        Template(prompt.AsSpan(at));
        Flush();
        tokens.AddRange(edges.Skip(bos.Count));
        return tokens;

        // The template's text: each special token's text becomes that token, longest first at each place.
        void Template(ReadOnlySpan<char> part)
        {
            while (part.Length > 0)
            {
                int k = part.IndexOfAny(specials.Texts);
                if (k < 0)
                {
                    text.Append(part);
                    return;
                }

                text.Append(part[..k]);
                part = part[k..];
                foreach (var (special, token) in specials.Tokens)  // longest first
                {
                    if (part.StartsWith(special, StringComparison.Ordinal))
                    {
                        Flush();
                        tokens.Add(token);
                        part = part[special.Length..];
                        break;
                    }
                }
            }
        }
    }
}
