using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Mustafar.AI.Mapping;

/// <summary>
/// GBNF grammars (llama.cpp's grammar format) that force JSON output: any JSON object, or one that
/// follows a JSON schema (objects with properties, arrays with minItems/maxItems, strings, numbers,
/// integers, booleans, enums, const, null; other keywords fall back to any JSON value). White space is at most one character
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
    public static string FromSchema(JsonElement schema) => FromSchemas([schema]);

    /// <summary>JSON following any one of <paramref name="schemas"/>.</summary>
    public static string FromSchemas(IEnumerable<JsonElement> schemas)
    {
        var rules = new StringBuilder();
        int counter = 0;
        string root = string.Join(" | ", schemas.Select(Rule).ToList());
        return $"root ::= {root}\n{rules}{Common}\n";

        string Rule(JsonElement s)
        {
            if (s.ValueKind != JsonValueKind.Object)
            {
                return "jvalue";
            }

            if (s.TryGetProperty("enum", out var options) && options.ValueKind == JsonValueKind.Array)
            {
                return Define(string.Join(" | ", options.EnumerateArray().Select(o => Literal(o.GetRawText()))) + " ws", "enum");
            }

            if (s.TryGetProperty("const", out var constant))
            {
                return Define(Literal(constant.GetRawText()) + " ws", "const");
            }

            string type = s.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "";
            switch (type)
            {
                case "string": return "jstring";
                case "number": return "jnumber";
                case "integer": return "jinteger";
                case "boolean": return "jboolean";
                case "null": return "jnull";
                case "array":
                    string item = s.TryGetProperty("items", out var items) ? Rule(items) : "jvalue";
                    int min = s.TryGetProperty("minItems", out var lo) && lo.TryGetInt32(out int l) ? Math.Max(0, l) : 0;
                    int? max = s.TryGetProperty("maxItems", out var hi) && hi.TryGetInt32(out int h) ? Math.Max(min, h) : null;
                    string more = max is int m ? (m <= 1 ? "" : $" (\",\" ws {item}){{{Math.Max(0, min - 1)},{m - 1}}}") : $" (\",\" ws {item}){{{Math.Max(0, min - 1)},}}";
                    string list = max == 0 ? "" : min == 0 ? $"({item}{more})?" : $"{item}{more}";
                    return Define($"\"[\" ws {list} \"]\" ws", "array");
                case "object" when s.TryGetProperty("properties", out var properties) && properties.ValueKind == JsonValueKind.Object:
                    // Every listed property, in schema order: small models follow a fixed shape best.
                    var parts = properties.EnumerateObject()
                        .Select(p => $"{Literal(JsonSerializer.Serialize(p.Name))} ws \":\" ws {Rule(p.Value)}").ToList();
                    return Define(parts.Count == 0 ? "\"{\" ws \"}\" ws" : $"\"{{\" ws {string.Join(" \",\" ws ", parts)} \"}}\" ws", "object");
                case "object": return "jobject";
                default: return "jvalue";
            }
        }

        string Define(string body, string kind)
        {
            string name = string.Create(CultureInfo.InvariantCulture, $"{kind}{counter++}");
            rules.Append(name).Append(" ::= ").Append(body).Append('\n');
            return name;
        }
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
