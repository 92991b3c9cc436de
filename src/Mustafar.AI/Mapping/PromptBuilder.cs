using System.Text;
using LLama;
using Microsoft.Extensions.AI;

namespace Mustafar.AI.Mapping;

/// <summary>Turns chat messages into the model's prompt text: its GGUF chat template when it has one.</summary>
internal static class PromptBuilder
{
    public static (string Prompt, bool UsedTemplate) Build(LLamaWeights weights, string? chatTemplate, IEnumerable<ChatMessage> messages, ChatOptions? options)
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
                TextContent t => t.Text,
                FunctionCallContent call => ToolCalls.RenderCall(call, format),
                _ => string.Empty,
            }));
            if (text.Length > 0)
            {
                turns.Add((message.Role.Value, text));
            }

            var results = message.Contents.OfType<FunctionResultContent>().Select(r => ToolCalls.RenderResult(r, format)).ToList();
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

        if (chatTemplate is null)
        {
            // Base models (the story models among them) continue raw text: join the turns.
            return (string.Join("\n", turns.Select(t => t.Text)), false);
        }

        var template = new LLamaTemplate(weights) { AddAssistant = true };
        foreach (var (role, text) in turns)
        {
            template.Add(role, text);
        }

        return (Encoding.UTF8.GetString(template.Apply()), true);
    }
}
