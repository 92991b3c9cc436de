using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.AI;

namespace Mustafar.AI.Mapping;

/// <summary>How a model family writes tool calls.</summary>
internal enum ToolCallFormat
{
    /// <summary>Hermes and Qwen 2.5: <c>&lt;tool_call&gt;{"name": …, "arguments": {…}}&lt;/tool_call&gt;</c>, results in <c>&lt;tool_response&gt;</c>.</summary>
    Hermes,

    /// <summary>Llama 3.x: a JSON object <c>{"name": …, "parameters": {…}}</c>, optionally after <c>&lt;|python_tag|&gt;</c>.</summary>
    Llama3,
}

/// <summary>
/// Tools between Microsoft.Extensions.AI and a model: the format chosen from the model's chat template,
/// the tool list and past calls/results rendered into the prompt, calls parsed out of the output, and
/// a grammar that forces a call when <see cref="ChatToolMode"/> requires one.
/// </summary>
internal static partial class ToolCalls
{
    public static ToolCallFormat Detect(string? chatTemplate) =>
        chatTemplate is not null && (chatTemplate.Contains("<|python_tag|>", StringComparison.Ordinal) || chatTemplate.Contains("ipython", StringComparison.Ordinal))
            ? ToolCallFormat.Llama3
            : ToolCallFormat.Hermes;

    public static IReadOnlyList<AIFunctionDeclaration> Declarations(ChatOptions? options) =>
        options?.Tools?.OfType<AIFunctionDeclaration>().ToList() ?? [];

    /// <summary>The system text that lists the tools and how to call them.</summary>
    public static string Describe(IReadOnlyList<AIFunctionDeclaration> tools, ToolCallFormat format)
    {
        var sb = new StringBuilder("Tools are available. Each is described by a JSON schema of its arguments:\n");
        foreach (var tool in tools)
        {
            sb.Append(JsonSerializer.Serialize(new { name = tool.Name, description = tool.Description, parameters = tool.JsonSchema })).Append('\n');
        }

        return format == ToolCallFormat.Llama3
            ? sb.Append("To call a tool, answer with only a JSON object {\"name\": tool name, \"parameters\": arguments object}.").ToString()
            : sb.Append("To call tools, answer with one block per call: <tool_call>{\"name\": tool name, \"arguments\": arguments object}</tool_call>").ToString();
    }

    /// <summary>How a past call is written back into the conversation.</summary>
    public static string RenderCall(FunctionCallContent call, ToolCallFormat format)
    {
        string args = JsonSerializer.Serialize(call.Arguments ?? new Dictionary<string, object?>());
        return format == ToolCallFormat.Llama3
            ? $"{{\"name\": {JsonSerializer.Serialize(call.Name)}, \"parameters\": {args}}}"
            : $"<tool_call>{{\"name\": {JsonSerializer.Serialize(call.Name)}, \"arguments\": {args}}}</tool_call>";
    }

    /// <summary>How a tool's result is shown to the model; <paramref name="markValue"/> rewrites the value inside the markup.</summary>
    public static string RenderResult(FunctionResultContent result, ToolCallFormat format, Func<string, string>? markValue = null)
    {
        string value = ResultValue(result);
        value = markValue is null ? value : markValue(value);
        return format == ToolCallFormat.Llama3 ? value : $"<tool_response>{value}</tool_response>";
    }

    /// <summary>A tool result's value as the model reads it.</summary>
    public static string ResultValue(FunctionResultContent result) => result.Result switch
    {
        null => "null",
        string s => s,
        JsonElement e => e.GetRawText(),
        var o => JsonSerializer.Serialize(o),
    };

    /// <summary>Splits generated text into plain text and the tool calls it contains.</summary>
    public static (string Text, List<FunctionCallContent> Calls) Parse(string output, ToolCallFormat format)
    {
        var calls = new List<FunctionCallContent>();
        if (format == ToolCallFormat.Hermes)
        {
            string text = HermesCall().Replace(output, m =>
            {
                var call = ToCall(m.Groups[1].Value, "arguments", calls.Count);
                if (call is null)
                {
                    return m.Value;
                }

                calls.Add(call);
                return string.Empty;
            });
            return (text.Trim(), calls);
        }

        string body = output.Trim();
        if (body.StartsWith("<|python_tag|>", StringComparison.Ordinal))
        {
            body = body["<|python_tag|>".Length..].Trim();
        }

        foreach (string part in body.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (ToCall(part, "parameters", calls.Count) is { } call)
            {
                calls.Add(call);
            }
            else
            {
                return (output.Trim(), []);
            }
        }

        return calls.Count > 0 ? (string.Empty, calls) : (output.Trim(), []);
    }

    /// <summary>A grammar that makes the model emit exactly one call of one of <paramref name="tools"/>.</summary>
    public static string ForceCall(IReadOnlyList<AIFunctionDeclaration> tools, ToolCallFormat format)
    {
        string argsKey = format == ToolCallFormat.Llama3 ? "parameters" : "arguments";
        string call = JsonGrammar.FromCalls(tools.Select(t => (t.Name, t.JsonSchema)), argsKey);
        if (format == ToolCallFormat.Llama3)
        {
            return call;
        }

        // Wrap the root alternatives in the Hermes tags.
        int endOfRoot = call.IndexOf('\n', StringComparison.Ordinal);
        string alternativesRule = call["root ::= ".Length..endOfRoot];
        return $"root ::= \"<tool_call>\" ({alternativesRule}) \"</tool_call>\"{call[endOfRoot..]}";
    }

    private static FunctionCallContent? ToCall(string json, string argsKey, int index)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String)
            {
                return null;
            }

            var args = new Dictionary<string, object?>();
            if ((root.TryGetProperty(argsKey, out var a) || root.TryGetProperty("arguments", out a) || root.TryGetProperty("parameters", out a))
                && a.ValueKind == JsonValueKind.Object)
            {
                foreach (var p in a.EnumerateObject())
                {
                    args[p.Name] = p.Value.Clone();
                }
            }

            return new FunctionCallContent(string.Create(CultureInfo.InvariantCulture, $"call_{index}_{Guid.NewGuid():N}"), name.GetString()!, args);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    [GeneratedRegex(@"<tool_call>\s*(.*?)\s*</tool_call>", RegexOptions.Singleline)]
    private static partial Regex HermesCall();
}
