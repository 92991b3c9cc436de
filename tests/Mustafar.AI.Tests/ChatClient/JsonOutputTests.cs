using System.Text.Json;
using Microsoft.Extensions.AI;
using Mustafar.AI.Mapping;
using Mustafar.AI.Tests.Infrastructure;

namespace Mustafar.AI.Tests.ChatClient;

/// <summary>ResponseFormat Json and JSON schema through grammar-constrained sampling, on a real model.</summary>
public sealed class JsonOutputTests
{
    private static Task<IChatClient> CreateAsync() => MustafarChatClientFactory.CreateAsync(new MustafarOptions
    {
        ModelPath = TestPaths.Stories,
        ContextSize = 512,
        Threads = 2,
    });

    [SkippableTheory]
    [InlineData(0f)]
    [InlineData(0.9f)]
    public async Task JsonSchemaResponseParsesAndFollowsTheSchema(float temperature)
    {
        using var client = await CreateAsync();
        var schema = JsonDocument.Parse("""
            {"type":"object","properties":{
              "mood":{"type":"string","enum":["happy","sad","angry"]},
              "age":{"type":"integer"},
              "friends":{"type":"array","items":{"type":"boolean"},"maxItems":3},
              "pet":{"type":"object","properties":{"dog":{"type":"boolean"}}}}}
            """).RootElement;
        var options = new ChatOptions
        {
            Temperature = temperature,
            Seed = 7,
            MaxOutputTokens = 200,
            ResponseFormat = ChatResponseFormat.ForJsonSchema(schema, "story"),
        };
        var response = await client.GetResponseAsync("Once upon a time", options);
        using var doc = JsonDocument.Parse(response.Text);
        var root = doc.RootElement;
        Assert.Contains(root.GetProperty("mood").GetString(), new[] { "happy", "sad", "angry" });
        Assert.Equal(JsonValueKind.Number, root.GetProperty("age").ValueKind);
        Assert.InRange(root.GetProperty("friends").GetArrayLength(), 0, 3);
        Assert.All(root.GetProperty("friends").EnumerateArray(), f => Assert.True(f.ValueKind is JsonValueKind.True or JsonValueKind.False));
        Assert.True(root.GetProperty("pet").GetProperty("dog").ValueKind is JsonValueKind.True or JsonValueKind.False);
    }

    [SkippableFact]
    public async Task ReferencesAlternativesAndTypeListsAreFollowed()
    {
        // What .NET's schema exporter writes for nullable members and shared types: type lists, $ref into $defs.
        using var client = await CreateAsync();
        var schema = JsonDocument.Parse("""
            {"type":"object","properties":{
              "id":{"$ref":"#/$defs/id"},
              "tag":{"anyOf":[{"type":"integer"},{"type":"null"}]},
              "name":{"type":["string","null"],"minLength":2,"maxLength":8},
              "kind":{"oneOf":[{"const":"cat"},{"const":"dog"}]},
              "ok":{"allOf":[{"type":"boolean"}]}},
             "$defs":{"id":{"type":"integer"}}}
            """).RootElement;
        foreach (float temperature in new[] { 0f, 0.9f })
        {
            var response = await client.GetResponseAsync("Once upon a time", new ChatOptions
            {
                Temperature = temperature,
                Seed = 3,
                MaxOutputTokens = 120,
                ResponseFormat = ChatResponseFormat.ForJsonSchema(schema, "story"),
            });
            using var doc = JsonDocument.Parse(response.Text);
            var root = doc.RootElement;
            Assert.True(root.GetProperty("id").TryGetInt64(out _), response.Text);
            Assert.True(root.GetProperty("tag").ValueKind is JsonValueKind.Number or JsonValueKind.Null, response.Text);
            var name = root.GetProperty("name");
            Assert.True(name.ValueKind == JsonValueKind.Null || name.GetString()!.Length is >= 2 and <= 8, response.Text);
            Assert.Contains(root.GetProperty("kind").GetString(), new[] { "cat", "dog" });
            Assert.True(root.GetProperty("ok").ValueKind is JsonValueKind.True or JsonValueKind.False, response.Text);
        }

        // A map and a recursive tree: llama.cpp takes their grammars and the first value follows them.
        var map = await client.GetResponseAsync("Once upon a time", new ChatOptions
        {
            Temperature = 0,
            MaxOutputTokens = 40,
            ResponseFormat = ChatResponseFormat.ForJsonSchema(JsonDocument.Parse("""{"type":"object","additionalProperties":{"type":"boolean"}}""").RootElement),
        });
        Assert.Matches("""^\{ ?(\}|"[^"]*" ?: ?(true|false))""", map.Text);
        var tree = await client.GetResponseAsync("Once upon a time", new ChatOptions
        {
            Temperature = 0,
            MaxOutputTokens = 40,
            ResponseFormat = ChatResponseFormat.ForJsonSchema(JsonDocument.Parse("""
                {"$ref":"#/$defs/node","$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"kids":{"type":"array","items":{"$ref":"#/$defs/node"}}}}}}
                """).RootElement),
        });
        Assert.Matches("""^\{ ?"v" ?: ?-?[0-9]+ ?, ?"kids" ?: ?\[""", tree.Text);
    }

    [Fact]
    public void MapsAndRecursiveReferencesBecomeRulesThatRefer()
    {
        string map = JsonGrammar.FromSchema(JsonDocument.Parse("""{"type":"object","additionalProperties":{"type":"boolean"}}""").RootElement);
        Assert.Contains("root ::= map0\n", map, StringComparison.Ordinal);
        Assert.Contains("map0 ::= \"{\" ws (jstring \":\" ws jboolean (\",\" ws jstring \":\" ws jboolean)*)? \"}\" ws", map, StringComparison.Ordinal);

        // A tree: the node's rule refers to itself instead of unrolling.
        string tree = JsonGrammar.FromSchema(JsonDocument.Parse("""
            {"$ref":"#/$defs/node","$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"kids":{"type":"array","items":{"$ref":"#/$defs/node"}}}}}}
            """).RootElement);
        Assert.Contains("root ::= ref0\n", tree, StringComparison.Ordinal);
        Assert.Contains("(ref0 (\",\" ws ref0){0,})?", tree, StringComparison.Ordinal);

        var outside = Assert.Throws<NotSupportedException>(() => JsonGrammar.FromSchema(JsonDocument.Parse("""{"$ref":"https://example.com/s.json"}""").RootElement));
        Assert.Contains("'https://example.com/s.json' is not local", outside.Message, StringComparison.Ordinal);
        var missing = Assert.Throws<NotSupportedException>(() => JsonGrammar.FromSchema(JsonDocument.Parse("""{"$ref":"#/$defs/nope"}""").RootElement));
        Assert.Contains("'#/$defs/nope' does not name a part of the schema", missing.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("""{"type":"object","properties":{"a":false},"required":["a"]}""", "the schema false")]
    [InlineData("""{"type":"object","properties":{"a":{"enum":[]}}}""", "an empty enum")]
    public void ASchemaThatAllowsNoValueIsRefusedBeforeGeneration(string schema, string where)
    {
        var error = Assert.Throws<ArgumentException>(() => JsonGrammar.FromSchema(JsonDocument.Parse(schema).RootElement));
        Assert.Equal($"The JSON schema allows no value where it has {where}.", error.Message);
    }

    [Fact]
    public void APropertyWhoseSchemaIsFalseIsLeftOutWhereItIsNotRequired()
    {
        string grammar = JsonGrammar.FromSchema(JsonDocument.Parse("""{"type":"object","properties":{"a":false,"b":{"type":"boolean"}}}""").RootElement);
        Assert.DoesNotContain("\\\"a\\\"", grammar, StringComparison.Ordinal);
        Assert.Contains("\\\"b\\\"", grammar, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task ASchemaThatRefersToItselfBeforeAnyValueFailsThatRequestInsteadOfEndingTheProcess()
    {
        // {"$ref": "#"} makes the left-recursive rule ref0 ::= ref0, which llama.cpp refuses (no sampler); that
        // null sampler in the chain ended the process at the first sampling.
        using var client = await CreateAsync();
        foreach (string schema in new[] { """{"$ref":"#"}""", """{"$defs":{"x":{"$ref":"#/$defs/x"}},"$ref":"#/$defs/x"}""" })
        {
            var error = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync("Once upon a time",
                new ChatOptions { MaxOutputTokens = 8, ResponseFormat = ChatResponseFormat.ForJsonSchema(JsonDocument.Parse(schema).RootElement) }));
            Assert.StartsWith("llama.cpp refused the grammar made for this request's required format", error.Message, StringComparison.Ordinal);
        }

        Assert.False(string.IsNullOrEmpty((await client.GetResponseAsync("Once upon a time", new ChatOptions { MaxOutputTokens = 4 })).Text));
    }

    [SkippableFact]
    public async Task JsonResponseFormatStartsAJsonObject()
    {
        using var client = await CreateAsync();
        var response = await client.GetResponseAsync("Once upon a time",
            new ChatOptions { Temperature = 0, MaxOutputTokens = 30, ResponseFormat = ChatResponseFormat.Json });
        // Any JSON object; a small story model may not close its strings within the budget.
        Assert.StartsWith("{", response.Text.TrimStart(), StringComparison.Ordinal);
    }
}
