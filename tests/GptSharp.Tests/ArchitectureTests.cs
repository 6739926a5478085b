using Mono.Cecil;
using Mono.Cecil.Cil;
using Xunit.Abstractions;

namespace GptSharp.Tests;

/// <summary>
/// The library's parts depend on each other in one direction only:
/// runtime ← tokenization, data, models ← runs ← training, inference ← alignment, encoders ← evaluation ← serving, interop ← speedrun
/// (docs/architecture.md states the same line).
/// Read from the compiled assembly (every type, member signature, attribute and IL operand), so a reference hidden in a
/// method body counts too.
/// </summary>
public class ArchitectureTests(ITestOutputHelper output)
{
    /// <summary>Each part's tier: a part may use parts of lower tiers only, never one of its own tier or above.</summary>
    static readonly Dictionary<string, int> Tiers = new()
    {
        ["Runtime"] = 0, ["Build"] = 0,
        ["Tokenization"] = 1, ["Data"] = 1, ["Models"] = 1,
        ["Runs"] = 2,
        ["Training"] = 3, ["Inference"] = 3,
        ["Alignment"] = 4, ["Encoders"] = 4,
        ["Evaluation"] = 5,
        ["Serving"] = 6, ["Interop"] = 6,
        ["Speedrun"] = 7,
    };

    // Tokenization, data and models share a tier but data reads tokenizers.
    static readonly HashSet<(string From, string To)> SameTierAllowed = [("Data", "Tokenization")];

    [Fact]
    public void PartsDependOnlyDownward()
    {
        var edges = ReferenceEdges();
        foreach (var edge in edges.OrderBy(e => e.Key.From).ThenBy(e => e.Key.To)) output.WriteLine($"{edge.Key.From} -> {edge.Key.To} ({edge.Value})");
        var unknown = edges.Keys.SelectMany(e => new[] { e.From, e.To }).Distinct().Where(p => !Tiers.ContainsKey(p)).ToList();
        Assert.True(unknown.Count == 0, $"Parts without a tier (add them to {nameof(Tiers)}): {string.Join(", ", unknown)}");
        var wrong = edges.Where(e => Tiers[e.Key.From] <= Tiers[e.Key.To] && !SameTierAllowed.Contains(e.Key))
            .Select(e => $"{e.Key.From} -> {e.Key.To} (e.g. {e.Value})").ToList();
        Assert.True(wrong.Count == 0, "References against the direction of the parts:\n" + string.Join("\n", wrong));
    }

    [Fact]
    public void EveryAllowanceIsUsedAndTheDocsStateTheSameDirection()
    {
        var edges = ReferenceEdges();
        var stale = SameTierAllowed.Where(a => !edges.ContainsKey(a)).ToList();
        Assert.True(stale.Count == 0, "Allowances no reference needs any more (remove them): " + string.Join(", ", stale));
        // The direction as docs/architecture.md states it, written from the tiers above.
        string direction = string.Join(" ← ", Tiers.GroupBy(t => t.Value).OrderBy(g => g.Key)
            .Select(g => string.Join(", ", g.Where(t => t.Key != "Build").Select(t => t.Key.ToLowerInvariant()))));
        string docs = File.ReadAllText(Path.Combine(Repository.Root, "docs", "architecture.md"));
        Assert.True(docs.Contains($"Direction: {direction}."), $"docs/architecture.md should state: Direction: {direction}.");
    }

    /// <summary>Constants are copied into the code that uses them, so the compiled check cannot see them; the sources can.</summary>
    [Fact]
    public void NoSourceFileNamesAPartAboveItsOwn()
    {
        string library = Path.Combine(Repository.Root, "src", "GptSharp");
        var wrong = new List<string>();
        foreach (string file in Directory.GetFiles(library, "*.cs", SearchOption.AllDirectories).Where(f => !f.Contains("/obj/") && !f.Contains("/bin/")))
        {
            string part = Path.GetRelativePath(library, file).Split(Path.DirectorySeparatorChar)[0];
            if (!Tiers.TryGetValue(part, out int tier)) continue;
            var lines = File.ReadAllLines(file);
            for (int i = 0; i < lines.Length; i++)
            {
                string code = lines[i].TrimStart();
                if (code.StartsWith("//", StringComparison.Ordinal) || code.StartsWith("namespace ", StringComparison.Ordinal)) continue;
                foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(code, @"\bGptSharp\.(\w+)"))
                    if (Tiers.TryGetValue(m.Groups[1].Value, out int other) && m.Groups[1].Value != part && other >= tier
                        && !SameTierAllowed.Contains((part, m.Groups[1].Value)))
                        wrong.Add($"{Path.GetRelativePath(Repository.Root, file)}:{i + 1}: {part} names {m.Groups[1].Value}");
            }
        }
        Assert.True(wrong.Count == 0, "Sources naming a part of the same tier or above:\n" + string.Join("\n", wrong));
    }

    [Fact]
    public void TheCheckSeesReferencesInMethodBodies()
    {
        // This test class's own body uses Mono.Cecil and xunit types; the reader must find them.
        var module = ModuleDefinition.ReadModule(typeof(ArchitectureTests).Assembly.Location);
        var type = module.GetType(typeof(ArchitectureTests).FullName);
        var referenced = References(type).SelectMany(Expand).Select(r => r.Namespace).ToHashSet();
        Assert.Contains("Mono.Cecil", referenced);
        Assert.Contains("Xunit", referenced);
    }

    /// <summary>(from part, to part) → one example "Type uses Type".</summary>
    static Dictionary<(string From, string To), string> ReferenceEdges()
    {
        using var module = ModuleDefinition.ReadModule(typeof(Models.Gpt).Assembly.Location);
        var edges = new Dictionary<(string, string), string>();
        foreach (var type in module.GetTypes())
        {
            string? from = Part(type);
            if (from is null) continue;
            foreach (var reference in References(type).SelectMany(Expand))
                if (Part(reference) is { } to && to != from) edges.TryAdd((from, to), $"{type.FullName} uses {reference.FullName}");
        }
        return edges;
    }

    /// <summary>GptSharp.X.… → X; compiler-generated types count as their declaring type's part.</summary>
    static string? Part(TypeReference type)
    {
        while (type.DeclaringType is not null) type = type.DeclaringType;
        var parts = type.Namespace.Split('.');
        return parts.Length >= 2 && parts[0] == "GptSharp" ? parts[1] : null;
    }

    static IEnumerable<TypeReference> References(TypeDefinition type)
    {
        if (type.BaseType is not null) yield return type.BaseType;
        foreach (var i in type.Interfaces) yield return i.InterfaceType;
        foreach (var a in type.CustomAttributes) yield return a.AttributeType;
        foreach (var field in type.Fields) yield return field.FieldType;
        foreach (var property in type.Properties) yield return property.PropertyType;
        foreach (var method in type.Methods)
        {
            yield return method.ReturnType;
            foreach (var p in method.Parameters) yield return p.ParameterType;
            if (!method.HasBody) continue;
            foreach (var v in method.Body.Variables) yield return v.VariableType;
            foreach (var instruction in method.Body.Instructions)
            {
                switch (instruction.Operand)
                {
                    case TypeReference t: yield return t; break;
                    case MethodReference m:
                        yield return m.DeclaringType;
                        yield return m.ReturnType;
                        foreach (var p in m.Parameters) yield return p.ParameterType;
                        if (m is GenericInstanceMethod g) foreach (var a in g.GenericArguments) yield return a;
                        break;
                    case FieldReference f: yield return f.DeclaringType; yield return f.FieldType; break;
                }
            }
        }
    }

    /// <summary>A type and the types it is made of: List&lt;Gpt&gt; → List, Gpt; Gpt[] → Gpt.</summary>
    static IEnumerable<TypeReference> Expand(TypeReference type)
    {
        yield return type;
        if (type is GenericInstanceType generic)
            foreach (var argument in generic.GenericArguments.SelectMany(Expand)) yield return argument;
        if (type is TypeSpecification specification)
            foreach (var element in Expand(specification.ElementType)) yield return element;
    }
}
