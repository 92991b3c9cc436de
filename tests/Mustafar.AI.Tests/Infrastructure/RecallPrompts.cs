namespace Mustafar.AI.Tests.Infrastructure;

/// <summary>
/// Retrieval prompts in the style the recall model was trained on (../shared/models/README.md):
/// lowercase filler sentences with facts hidden among them, then a question up to "it is ".
/// </summary>
internal static class RecallPrompts
{
    private static readonly string[] Syllables = ["ka", "lo", "mi", "ra", "ten", "bo", "si", "du", "ne", "vi", "ga", "po", "lu", "zo", "fe", "ar", "in", "el", "om", "ys"];
    private static readonly string[] Subjects = ["the red fox", "a small boy", "the old man", "the cat", "a tall girl", "the farmer", "the dog", "a bird"];
    private static readonly string[] Verbs = ["ran to", "walked to", "looked at", "sat near", "went past", "came back to"];
    private static readonly string[] Places = ["the mill", "the river", "the barn", "the hill", "the market", "the school", "the lake", "the gate"];

    /// <summary>A document and its question (up to "it is " or "NAME? "); Text is both, joined by a space.</summary>
    public sealed record Prompt(string Document, string Question, string Answer)
    {
        public string Text => $"{Document} {Question}";
    }

    /// <summary>Deterministic prompts of <paramref name="minChars"/> to <paramref name="maxChars"/> characters.</summary>
    public static List<Prompt> Create(int count, int seed, int minChars = 300, int maxChars = 1900)
    {
        var rng = new Random(seed);
        var prompts = new List<Prompt>(count);
        for (int i = 0; i < count; i++)
        {
            int target = minChars + (int)((maxChars - minChars) * (count == 1 ? 0.5 : (double)i / (count - 1)));
            var prompt = CreateOne(rng, target);
            while (prompt.Text.Length < minChars)
            {
                prompt = prompt with { Document = $"{Filler(rng)} {prompt.Document}" };
            }

            prompts.Add(prompt);
        }

        return prompts;
    }

    private static string Filler(Random rng) =>
        $"{Subjects[rng.Next(Subjects.Length)]} {Verbs[rng.Next(Verbs.Length)]} {Places[rng.Next(Places.Length)]}.";

    private static Prompt CreateOne(Random rng, int targetChars)
    {
        int nFacts = rng.Next(1, 9);
        var facts = new List<(string Name, string Code, bool Prose)>();
        while (facts.Count < nFacts)
        {
            string name = string.Concat(Enumerable.Range(0, rng.Next(2, 4)).Select(_ => Syllables[rng.Next(Syllables.Length)]));
            if (facts.All(f => f.Name != name))
            {
                facts.Add((name, rng.Next(0, 10000).ToString("D4", System.Globalization.CultureInfo.InvariantCulture), rng.Next(2) == 0));
            }
        }

        // Each fact style has its question style: "the code of X is D." / "what is the code of X? it is D.",
        // "X=D;" / "X? D."
        var (askName, askCode, askProse) = facts[rng.Next(facts.Count)];
        string question = askProse ? $"what is the code of {askName}? it is " : $"{askName}? ";
        var sentences = new List<string>();
        int length = 0;
        int budget = targetChars - question.Length - facts.Sum(f => f.Name.Length + 24);
        while (length < budget)
        {
            string s = Filler(rng);
            sentences.Add(s);
            length += s.Length + 1;
        }

        foreach (var (name, code, prose) in facts)
        {
            string fact = prose ? $"the code of {name} is {code}." : $"{name}={code};";
            sentences.Insert(rng.Next(sentences.Count + 1), fact);
        }

        return new Prompt(string.Join(" ", sentences), question, askCode);
    }
}
