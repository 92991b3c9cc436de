using System.Text;
using LLama;
using Microsoft.Extensions.AI;

namespace Mustafar.AI.Mapping;

/// <summary>Turns chat messages into the model's prompt text: its GGUF chat template when it has one.</summary>
internal static class PromptBuilder
{
    public static (string Prompt, bool UsedTemplate) Build(LLamaWeights weights, string? chatTemplate, IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        List<(string Role, string Text)> turns = [];
        if (!string.IsNullOrEmpty(options?.Instructions))
        {
            turns.Add(("system", options.Instructions));
        }

        foreach (var message in messages)
        {
            turns.Add((message.Role.Value, message.Text));
        }

        if (turns.Count == 0)
        {
            throw new ArgumentException("At least one chat message is required.", nameof(messages));
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
