using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Mustafar.AI.Mapping;

/// <summary>
/// GBNF grammars (llama.cpp's grammar format) that force JSON output: any JSON object, or one that
/// follows a JSON schema: objects with properties (each written, in schema order) or with
/// additionalProperties (a map), arrays with items, minItems and maxItems, strings with minLength and
/// maxLength, numbers, integers, booleans, null, enum, const, a list of types, anyOf and oneOf (as
/// alternatives; oneOf's exclusivity is not enforced), allOf of one schema, and local $ref ("#",
/// "#/$defs/..." or "#/definitions/...", recursion included). Other keywords (format, pattern, not,
/// minimum, ...) are not enforced: their schema's type still is. White space is at most one character
/// between tokens, so that a model cannot wander off in blank lines.
/// </summary>
internal static class JsonGrammar
{
    private const string Common = """
        ws ::= [ \n]?
        jstring ::= "\"" jchar* "\"" ws
        jchar ::= [^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])
        jnumber ::= "-"? jint ("." [0-9]+)? ([eE] [-+]? [0-9]+)? ws
        jinteger ::= "-"? jint ws
        jint ::= "0" | [1-9] [0-9]{0,15}
        jboolean ::= ("true" | "false") ws
        jnull ::= "null" ws
        jvalue ::= jobject | jarray | jstring | jnumber | jboolean | jnull
        jobject ::= "{" ws (jstring ":" ws jvalue ("," ws jstring ":" ws jvalue)*)? "}" ws
        jarray ::= "[" ws (jvalue ("," ws jvalue)*)? "]" ws
        """;

    /// <summary>Any JSON object.</summary>
    public static string AnyObject { get; } = $"root ::= jobject\n{Common}\n";

    /// <summary>JSON following <paramref name="schema"/>.</summary>
    public static string FromSchema(JsonElement schema)
    {
        var b = new Builder();
        return b.Grammar(b.Document(schema));
    }

    /// <summary>
    /// One call of one of <paramref name="tools"/> as JSON: <c>{"name": NAME, argumentsKey: ARGUMENTS}</c>, the
    /// arguments following that tool's schema (a document of its own: its "#" references resolve in it).
    /// </summary>
    public static string FromCalls(IEnumerable<(string Name, JsonElement Arguments)> tools, string argumentsKey)
    {
        var b = new Builder();
        var calls = tools.Select(t => b.Define(
            $"\"{{\" ws {Literal("\"name\"")} ws \":\" ws {Literal(JsonSerializer.Serialize(t.Name))} ws \",\" ws " +
            $"{Literal(JsonSerializer.Serialize(argumentsKey))} ws \":\" ws {b.Document(t.Arguments)} \"}}\" ws", "call")).ToList();
        return b.Grammar(string.Join(" | ", calls));
    }

    // The rules of one grammar as they are written.
    private sealed class Builder
    {
        private readonly StringBuilder _rules = new();
        // Schemas that declare $defs or definitions (and the document), innermost last: where "#..." references are looked up.
        private readonly List<JsonElement> _scopes = [];
        // A referenced schema's rule by its document and text, named before its body is written (recursive schemas).
        private readonly Dictionary<string, string> _referenced = new(StringComparer.Ordinal);
        private int _counter, _document;

        public string Grammar(string root) => $"root ::= {root}\n{_rules}{Common}\n";

        // The rule of a whole schema document.
        public string Document(JsonElement schema)
        {
            _scopes.Clear();
            _scopes.Add(schema);
            _document++;
            return Rule(schema);
        }

        private string Rule(JsonElement s)
        {
            if (s.ValueKind == JsonValueKind.False)
            {
                throw new ArgumentException("The JSON schema allows no value where it has the schema false.");
            }

            if (s.ValueKind != JsonValueKind.Object)
            {
                return "jvalue";
            }

            bool scoped = s.TryGetProperty("$defs", out _) || s.TryGetProperty("definitions", out _);
            if (scoped)
            {
                _scopes.Add(s);
            }

            try
            {
                return Body(s);
            }
            finally
            {
                if (scoped)
                {
                    _scopes.RemoveAt(_scopes.Count - 1);
                }
            }
        }

        private string Body(JsonElement s)
        {
            if (s.TryGetProperty("$ref", out var reference) && reference.ValueKind == JsonValueKind.String)
            {
                return Reference(reference.GetString()!);
            }

            if (s.TryGetProperty("enum", out var options) && options.ValueKind == JsonValueKind.Array)
            {
                if (options.GetArrayLength() == 0)
                {
                    throw new ArgumentException("The JSON schema allows no value where it has an empty enum.");
                }

                return Define(string.Join(" | ", options.EnumerateArray().Select(o => Literal(o.GetRawText()))) + " ws", "enum");
            }

            if (s.TryGetProperty("const", out var constant))
            {
                return Define(Literal(constant.GetRawText()) + " ws", "const");
            }

            foreach (string key in new[] { "anyOf", "oneOf" })
            {
                if (s.TryGetProperty(key, out var alternatives) && alternatives.ValueKind == JsonValueKind.Array && alternatives.GetArrayLength() > 0)
                {
                    return Define(string.Join(" | ", alternatives.EnumerateArray().Select(Rule).ToList()), key);
                }
            }

            if (s.TryGetProperty("allOf", out var all) && all.ValueKind == JsonValueKind.Array && all.GetArrayLength() == 1)
            {
                return Rule(all[0]);
            }

            if (s.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.Array)
            {
                var types = t.EnumerateArray().Where(x => x.ValueKind == JsonValueKind.String).Select(x => ForType(s, x.GetString()!)).ToList();
                return types.Count == 0 ? "jvalue" : Define(string.Join(" | ", types), "types");
            }

            return ForType(s, t.ValueKind == JsonValueKind.String ? t.GetString()! : "");
        }

        private string ForType(JsonElement s, string type)
        {
            switch (type)
            {
                case "string":
                    int? shortest = Count(s, "minLength"), longest = Count(s, "maxLength");
                    if (shortest is null && longest is null)
                    {
                        return "jstring";
                    }

                    int least = shortest ?? 0;
                    return Define($"\"\\\"\" jchar{{{least},{(longest is int most ? Math.Max(least, most).ToString(CultureInfo.InvariantCulture) : "")}}} \"\\\"\" ws", "string");
                case "number": return "jnumber";
                case "integer": return "jinteger";
                case "boolean": return "jboolean";
                case "null": return "jnull";
                case "array":
                    string item = s.TryGetProperty("items", out var items) ? Rule(items) : "jvalue";
                    int min = Count(s, "minItems") ?? 0;
                    int? max = Count(s, "maxItems") is int h ? Math.Max(min, h) : null;
                    string more = max is int m ? (m <= 1 ? "" : $" (\",\" ws {item}){{{Math.Max(0, min - 1)},{m - 1}}}") : $" (\",\" ws {item}){{{Math.Max(0, min - 1)},}}";
                    string list = max == 0 ? "" : min == 0 ? $"({item}{more})?" : $"{item}{more}";
                    return Define($"\"[\" ws {list} \"]\" ws", "array");
                case "object" when s.TryGetProperty("properties", out var properties) && properties.ValueKind == JsonValueKind.Object:
                    // Every listed property, in schema order: small models follow a fixed shape best. A property whose
                    // schema is false may not appear (Rule refuses it where it must).
                    var required = s.TryGetProperty("required", out var names) && names.ValueKind == JsonValueKind.Array
                        ? names.EnumerateArray().Select(n => n.ToString()).ToHashSet(StringComparer.Ordinal)
                        : [];
                    var parts = properties.EnumerateObject()
                        .Where(p => p.Value.ValueKind != JsonValueKind.False || required.Contains(p.Name))
                        .Select(p => $"{Literal(JsonSerializer.Serialize(p.Name))} ws \":\" ws {Rule(p.Value)}").ToList();
                    return Define(parts.Count == 0 ? "\"{\" ws \"}\" ws" : $"\"{{\" ws {string.Join(" \",\" ws ", parts)} \"}}\" ws", "object");
                case "object" when s.TryGetProperty("additionalProperties", out var values) && values.ValueKind == JsonValueKind.Object:
                    string value = Rule(values);
                    return Define($"\"{{\" ws (jstring \":\" ws {value} (\",\" ws jstring \":\" ws {value})*)? \"}}\" ws", "map");
                case "object": return "jobject";
                default: return "jvalue";
            }
        }

        // A local reference: "#" or a JSON pointer from "#/", looked up in the innermost schema that holds it.
        private string Reference(string pointer)
        {
            if (!pointer.StartsWith('#'))
            {
                throw new NotSupportedException($"The JSON schema reference '{pointer}' is not local: only references into the schema itself (\"#/$defs/...\") are supported.");
            }

            for (int i = _scopes.Count - 1; i >= 0; i--)
            {
                if (Resolve(_scopes[i], pointer) is JsonElement target)
                {
                    string key = string.Create(CultureInfo.InvariantCulture, $"{_document}:{target.GetRawText()}");
                    if (_referenced.TryGetValue(key, out string? known))
                    {
                        return known;
                    }

                    string name = string.Create(CultureInfo.InvariantCulture, $"ref{_counter++}");
                    _referenced[key] = name;
                    string body = Rule(target);
                    _rules.Append(name).Append(" ::= ").Append(body).Append('\n');
                    return name;
                }
            }

            throw new NotSupportedException($"The JSON schema reference '{pointer}' does not name a part of the schema.");
        }

        public string Define(string body, string kind)
        {
            string name = string.Create(CultureInfo.InvariantCulture, $"{kind}{_counter++}");
            _rules.Append(name).Append(" ::= ").Append(body).Append('\n');
            return name;
        }
    }

    private static int? Count(JsonElement s, string key) =>
        s.TryGetProperty(key, out var v) && v.TryGetInt32(out int n) ? Math.Max(0, n) : null;

    // The element that a "#"-relative JSON pointer names in `root`, or null.
    private static JsonElement? Resolve(JsonElement root, string pointer)
    {
        JsonElement at = root;
        foreach (string raw in pointer.TrimStart('#').Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            string part = Uri.UnescapeDataString(raw).Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal);
            if (at.ValueKind == JsonValueKind.Object && at.TryGetProperty(part, out var next))
            {
                at = next;
            }
            else if (at.ValueKind == JsonValueKind.Array && int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int index) && index < at.GetArrayLength())
            {
                at = at[index];
            }
            else
            {
                return null;
            }
        }

        return at;
    }

    // A GBNF string literal matching exactly `text`.
    private static string Literal(string text)
    {
        var sb = new StringBuilder("\"");
        foreach (char c in text)
        {
            sb.Append(c switch
            {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                _ => c.ToString(),
            });
        }

        return sb.Append('"').ToString();
    }
}
