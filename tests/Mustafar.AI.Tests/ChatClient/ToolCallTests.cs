using System.Text.Json;
using Microsoft.Extensions.AI;
using Mustafar.AI.Mapping;
using Mustafar.AI.Tests.Infrastructure;

namespace Mustafar.AI.Tests.ChatClient;

/// <summary>
/// Tools: calls parsed from outputs written the way Llama 3.x, Qwen 2.5 and Hermes models write them, and
/// a real model forced by grammar to call a tool, end to end under UseFunctionInvocation.
/// </summary>
public sealed class ToolCallTests
{
    [Theory]
    [InlineData("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}\n</tool_call>")]  // Qwen 2.5
    [InlineData("<tool_call>{\"arguments\": {\"city\": \"Paris\", \"days\": 3}, \"name\": \"get_weather\"}</tool_call>")]  // Hermes 2 Pro
    public void HermesAndQwenCallsAreParsed(string output)
    {
        var (text, calls) = ToolCalls.Parse(output, ToolCallFormat.Hermes);
        Assert.Equal("", text);
        var call = Assert.Single(calls);
        Assert.Equal("get_weather", call.Name);
        Assert.Equal("Paris", ((JsonElement)call.Arguments!["city"]!).GetString());
        Assert.Equal(3, ((JsonElement)call.Arguments["days"]!).GetInt32());
    }

    [Fact]
    public void SeveralHermesCallsAndSurroundingTextAreSeparated()
    {
        var (text, calls) = ToolCalls.Parse(
            "Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {\"x\": 1}}\n</tool_call>",
            ToolCallFormat.Hermes);
        Assert.Equal("Let me check.", text);
        Assert.Equal(["a", "b"], calls.Select(c => c.Name));
        Assert.NotEqual(calls[0].CallId, calls[1].CallId);
    }

    [Theory]
    [InlineData("<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}")]  // Llama 3.1 built-in style
    [InlineData("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}")]  // Llama 3.x JSON tool calling
    public void Llama3CallsAreParsed(string output)
    {
        var (text, calls) = ToolCalls.Parse(output, ToolCallFormat.Llama3);
        Assert.Equal("", text);
        Assert.Equal("Paris", ((JsonElement)Assert.Single(calls).Arguments!["city"]!).GetString());
    }

    [Theory]
    [InlineData("The weather is fine.", true)]
    [InlineData("The weather is fine.", false)]
    [InlineData("<tool_call>{not json}</tool_call>", false)]
    public void TextWithoutAValidCallStaysText(string output, bool llama3)
    {
        var (text, calls) = ToolCalls.Parse(output, llama3 ? ToolCallFormat.Llama3 : ToolCallFormat.Hermes);
        Assert.Empty(calls);
        Assert.Equal(output, text);
    }

    [Theory]
    [InlineData("{%- if tools %}...<|start_header_id|>ipython<|end_header_id|>...<|python_tag|>", true)]
    [InlineData("{%- if tools %}<tools>...<tool_call>\\n{\"name\": <function-name>...", false)]
    [InlineData(null, false)]
    public void FormatFollowsTheChatTemplate(string? template, bool llama3) =>
        Assert.Equal(llama3 ? ToolCallFormat.Llama3 : ToolCallFormat.Hermes, ToolCalls.Detect(template));

    [Fact]
    public void CallsAndResultsAreRenderedBackInTheModelsFormat()
    {
        var call = new FunctionCallContent("c1", "set_timer", new Dictionary<string, object?> { ["minutes"] = 5 });
        Assert.Equal("<tool_call>{\"name\": \"set_timer\", \"arguments\": {\"minutes\":5}}</tool_call>", ToolCalls.RenderCall(call, ToolCallFormat.Hermes));
        Assert.Equal("{\"name\": \"set_timer\", \"parameters\": {\"minutes\":5}}", ToolCalls.RenderCall(call, ToolCallFormat.Llama3));
        Assert.Equal("<tool_response>done</tool_response>", ToolCalls.RenderResult(new FunctionResultContent("c1", "done"), ToolCallFormat.Hermes));
    }

    private sealed record Node(int Value, Node? Next);

    [Fact]
    public void AToolSchemasReferencesResolveInThatToolsOwnSchema()
    {
        // .NET's schema exporter writes a recursive parameter type as a reference into the function's schema
        // ("#/properties/node"), which the call's grammar must resolve there, not in the call object around it.
        var tool = AIFunctionFactory.Create((Node node) => node.Value, "walk");
        Assert.Contains("\"$ref\"", tool.JsonSchema.GetRawText(), StringComparison.Ordinal);
        string grammar = ToolCalls.ForceCall([tool], ToolCallFormat.Hermes);
        Assert.StartsWith("root ::= \"<tool_call>\" (call", grammar, StringComparison.Ordinal);
        Assert.Contains("ref", grammar, StringComparison.Ordinal);
        Assert.Contains("\"\\\"walk\\\"\"", grammar, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task RequiringAToolThatIsNotOfferedFailsThatRequestOnly()
    {
        using var client = await MustafarChatClientFactory.CreateAsync(new MustafarOptions { ModelPath = TestPaths.Stories, ContextSize = 256 });
        var tool = AIFunctionFactory.Create(() => "x", "known");
        var error = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync("Once upon a time",
            new ChatOptions { Tools = [tool], ToolMode = ChatToolMode.RequireSpecific("unknown") }));
        Assert.Contains("'unknown'", error.Message, StringComparison.Ordinal);
        Assert.False(string.IsNullOrEmpty((await client.GetResponseAsync("Once upon a time", new ChatOptions { MaxOutputTokens = 4 })).Text));
    }

    [SkippableFact]
    public async Task RequiredToolModeMakesARealModelCallTheToolUnderFunctionInvocation()
    {
        using var inner = await MustafarChatClientFactory.CreateAsync(new MustafarOptions { ModelPath = TestPaths.Stories, ContextSize = 512, Threads = 2 });
        bool? ringing = null;
        var tool = AIFunctionFactory.Create((bool ring) => { ringing = ring; return "the timer is set"; }, "set_timer", "Sets a timer");
        using var client = inner.AsBuilder().UseFunctionInvocation().Build();
        var response = await client.GetResponseAsync("Once upon a time", new ChatOptions
        {
            Temperature = 0,
            MaxOutputTokens = 150,  // the forced call is about 60 characters of a small vocabulary
            Tools = [tool],
            ToolMode = ChatToolMode.RequireAny,
        });
        Assert.NotNull(ringing);
        var call = response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().Single();
        Assert.Equal("set_timer", call.Name);
        Assert.Contains(response.Messages.SelectMany(m => m.Contents).OfType<FunctionResultContent>(), r => r.CallId == call.CallId);
    }
}
