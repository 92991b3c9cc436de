using System.Text;
using LLama;
using Microsoft.Extensions.AI;

namespace Mustafar.AI.Mapping;

/// <summary>Turns chat messages into the model's prompt text: its GGUF chat template when it has one.</summary>
internal static class PromptBuilder
{
    /// <summary>What formats the turns where llama.cpp does not recognise a model's template (llama.cpp's own choice).</summary>
    public const string FallbackTemplate = "chatml";

    /// <summary>Whether llama.cpp's built-in templates recognise <paramref name="template"/> (a name or a model's Jinja text).</summary>
    public static bool CanFormat(string template)
    {
        try
        {
            var probe = new LLamaTemplate(template) { AddAssistant = true };
            probe.Add("user", "hello");
            return probe.Apply().Length > 0;
        }
        catch (Exception e) when (e is LLama.Exceptions.MissingTemplateException or LLama.Exceptions.TemplateNotFoundException or LLama.Exceptions.RuntimeError)
        {
            return false;
        }
    }

    /// <param name="chatTemplate">The model's template, which tells the tool-call format.</param>
    /// <param name="turnTemplate">The template that formats the turns (<see cref="LLamaTemplate"/>), or null: plain text.</param>
    /// <param name="messages">The conversation.</param>
    /// <param name="options">Instructions and tools.</param>
    public static (string Prompt, bool UsedTemplate) Build(string? chatTemplate, string? turnTemplate, IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        var turns = Turns(chatTemplate, messages, options, mark: false);
        if (turnTemplate is null)
        {
            // Base models (the story models among them) continue raw text: join the turns.
            return (string.Join("\n", turns.Select(t => t.Text)), false);
        }

        return (Render(turnTemplate, turns), true);
    }

    /// <summary>
    /// Where the messages' own texts (<see cref="TextContent"/> and tool results' values) lie in <paramref name="prompt"/>, as
    /// <see cref="Build"/> wrote it with <paramref name="turnTemplate"/>: the turns are written again with each text
    /// between two private-use marks (outside its outer white space, which templates may trim). Null where the
    /// template changed a marked text.
    /// </summary>
    public static IReadOnlyList<Range>? MessageTexts(string? chatTemplate, string turnTemplate, IEnumerable<ChatMessage> messages, ChatOptions? options,
        string prompt)
    {
        string marked = Render(turnTemplate, Turns(chatTemplate, messages, options, mark: true));
        var spans = new List<Range>();
        var text = new StringBuilder(prompt.Length);
        int open = -1;
        foreach (char c in marked)
        {
            if (c == Open && open < 0)
            {
                open = text.Length;
            }
            else if (c == Close && open >= 0)
            {
                spans.Add(new Range(open, text.Length));
                open = -1;
            }
            else
            {
                text.Append(c);
            }
        }

        return open < 0 && text.Equals(prompt.AsSpan()) ? spans : null;
    }

    /// <summary>The messages' own texts, which <see cref="MessageTexts"/> locates: their texts and tool results' values.</summary>
    public static IEnumerable<string> Texts(IEnumerable<ChatMessage> messages) =>
        messages.SelectMany(m => m.Contents).Select(c => c switch
        {
            TextContent t => t.Text,
            FunctionResultContent r => ToolCalls.ResultValue(r),
            _ => "",
        });

    // Private-use characters around a message's text in MessageTexts' rendering.
    private const char Open = '\uE000', Close = '\uE001';

    private static List<(string Role, string Text)> Turns(string? chatTemplate, IEnumerable<ChatMessage> messages, ChatOptions? options, bool mark)
    {
        var format = ToolCalls.Detect(chatTemplate);
        var tools = ToolCalls.Declarations(options);
        List<(string Role, string Text)> turns = [];
        string system = string.Join("\n\n", new[] { options?.Instructions, tools.Count > 0 ? ToolCalls.Describe(tools, format) : null }
            .Where(s => !string.IsNullOrEmpty(s)));
        if (system.Length > 0)
        {
            turns.Add(("system", system));
        }

        foreach (var message in messages)
        {
            // Text and the calls an assistant made, then the results of calls as their own turn.
            string text = string.Concat(message.Contents.Select(c => c switch
            {
                TextContent t when mark => Marked(t.Text),
                TextContent t => t.Text,
                FunctionCallContent call => ToolCalls.RenderCall(call, format),
                _ => string.Empty,
            }));
            if (text.Length > 0)
            {
                turns.Add((message.Role.Value, text));
            }

            var results = message.Contents.OfType<FunctionResultContent>().Select(r => ToolCalls.RenderResult(r, format, mark ? Marked : null)).ToList();
            if (results.Count > 0)
            {
                turns.Add((format == ToolCallFormat.Llama3 ? "ipython" : "user", string.Join("\n", results)));
            }
        }

        if (turns.Count == 0)
        {
            var other = messages.SelectMany(m => m.Contents).Select(c => c is DataContent d ? d.MediaType : c.GetType().Name).Distinct().ToList();
            throw new ArgumentException(other.Count == 0
                ? "At least one chat message is required."
                : $"The messages carry no text; the models Mustafar runs read text only (the messages hold: {string.Join(", ", other)}).", nameof(messages));
        }

        return turns;
    }

    // The marks go around the text without its outer white space, which a template may trim off the turn.
    private static string Marked(string text)
    {
        if (text.Trim().Length == 0)
        {
            return text;
        }

        int start = text.Length - text.TrimStart().Length, end = text.TrimEnd().Length;
        return $"{text[..start]}{Open}{text[start..end]}{Close}{text[end..]}";
    }

    private static string Render(string turnTemplate, List<(string Role, string Text)> turns)
    {
        var template = new LLamaTemplate(turnTemplate) { AddAssistant = true };
        foreach (var (role, text) in turns)
        {
            template.Add(role, text);
        }

        return Encoding.UTF8.GetString(template.Apply());
    }
}
