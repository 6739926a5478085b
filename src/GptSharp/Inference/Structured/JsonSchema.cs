using System.Text;
using System.Text.Json;

namespace GptSharp.Inference.Structured;

/// <summary>A JSON schema a generator cannot follow: <see cref="Path"/> points at the offending keyword (<c>#/properties/age/type</c>).</summary>
public sealed class JsonSchemaException(string path, string message) : Exception($"{path}: {message}")
{
    public string Path { get; } = path;
    public string Reason { get; } = message;
}

/// <summary>
/// One node of a compiled schema: what a JSON value must look like, as a grammar a byte-level matcher can follow.
/// <see cref="MinBytes"/> is the length of the shortest value it accepts, so a matcher always knows how far it is from
/// a complete document (and can close it before the token budget runs out).
/// </summary>
public abstract class SchemaNode
{
    /// <summary>Bytes in the shortest (compact) JSON text this node accepts; <see cref="JsonSchema.Unbounded"/> when none is finite.</summary>
    public int MinBytes { get; internal set; } = JsonSchema.Unbounded;
    /// <summary>Whether a value may start with this byte.</summary>
    public abstract bool Starts(byte b);
    internal abstract int ComputeMinBytes();
}

/// <summary>A string, its length in characters limited.</summary>
public sealed class StringNode(int minLength, int maxLength) : SchemaNode
{
    public int MinLength { get; } = minLength;
    public int MaxLength { get; } = maxLength;
    public override bool Starts(byte b) => b == '"';
    internal override int ComputeMinBytes() => ArrayNode.Add(2, MinLength);
}

/// <summary>A number; <see cref="Integer"/> allows no fraction or exponent.</summary>
public sealed class NumberNode(bool integer) : SchemaNode
{
    public bool Integer { get; } = integer;
    public override bool Starts(byte b) => b == '-' || b is >= (byte)'0' and <= (byte)'9';
    internal override int ComputeMinBytes() => 1;
}

/// <summary>One of a fixed set of values, each as its compact JSON text (<c>true</c>, <c>null</c>, an <c>enum</c>, a <c>const</c>).</summary>
public sealed class LiteralNode(IEnumerable<byte[]> options) : SchemaNode
{
    /// <summary>The values, distinct, in byte order: a matcher narrows a range of them byte by byte.</summary>
    public LiteralSet Options { get; } = new(options);
    public override bool Starts(byte b) => Options.Starts(b);
    internal override int ComputeMinBytes() => Options.ShortestFrom(0, Options.Count, 0);
}

/// <summary>
/// Distinct byte strings sorted in byte order, so the ones that share a prefix sit together: a matcher keeps the range
/// still possible and narrows it by binary search, and the shortest string of a range comes from a sparse table — each
/// byte costs O(log n), however large an <c>enum</c> is.
/// </summary>
public sealed class LiteralSet
{
    readonly byte[][] _values;
    readonly int[][] _shortest;   // _shortest[k][i]: the shortest length among _values[i .. i + 2^k)
    readonly bool[] _firstBytes = new bool[256];

    public LiteralSet(IEnumerable<byte[]> values)
    {
        _values = [.. values.Distinct(Tokenization.ByteArrayComparer.Instance).OrderBy(v => v, ByteOrder.Instance)];
        if (_values.Length == 0 || _values.Any(v => v.Length == 0)) throw new ArgumentException("A literal set needs at least one non-empty value.", nameof(values));
        foreach (var value in _values) _firstBytes[value[0]] = true;
        var levels = new List<int[]>();
        levels.Add([.. _values.Select(v => v.Length)]);
        for (int width = 2; width <= _values.Length; width *= 2)
        {
            var below = levels[^1];
            var level = new int[_values.Length - width + 1];
            for (int i = 0; i < level.Length; i++) level[i] = Math.Min(below[i], below[i + width / 2]);
            levels.Add(level);
        }
        _shortest = [.. levels];
    }

    public int Count => _values.Length;
    public byte[] this[int index] => _values[index];
    public bool Starts(byte b) => _firstBytes[b];

    /// <summary>Bytes left after <paramref name="position"/> in the shortest value of [<paramref name="lo"/>, <paramref name="hi"/>).</summary>
    public int ShortestFrom(int lo, int hi, int position)
    {
        int level = System.Numerics.BitOperations.Log2((uint)(hi - lo));
        return Math.Min(_shortest[level][lo], _shortest[level][hi - (1 << level)]) - position;
    }

    /// <summary>The values of [<paramref name="lo"/>, <paramref name="hi"/>) — which share their first <paramref name="position"/>
    /// bytes — whose next byte is <paramref name="b"/>.</summary>
    public (int Lo, int Hi) Narrow(int lo, int hi, int position, byte b)
    {
        if (_values[lo].Length == position) lo++;   // a value that ends here sorts before those that go on
        return (Search(lo, hi, position, b), Search(lo, hi, position, b + 1));
    }

    /// <summary>Whether a value of the range ends after <paramref name="position"/> bytes.</summary>
    public bool EndsAt(int lo, int position) => _values[lo].Length == position;

    // The first index in [lo, hi) whose byte at position is at least `target`.
    int Search(int lo, int hi, int position, int target)
    {
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_values[mid][position] < target) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    sealed class ByteOrder : IComparer<byte[]>
    {
        public static readonly ByteOrder Instance = new();
        public int Compare(byte[]? x, byte[]? y) => x.AsSpan().SequenceCompareTo(y);
    }
}

/// <summary>An array of <see cref="Items"/>.</summary>
public sealed class ArrayNode(int minItems, int maxItems) : SchemaNode
{
    public SchemaNode Items { get; internal set; } = null!;
    public int MinItems { get; } = minItems;
    public int MaxItems { get; } = maxItems;
    public override bool Starts(byte b) => b == '[';
    internal override int ComputeMinBytes() => Add(2, MinItems == 0 ? 0 : Add(Mul(MinItems, Items.MinBytes), MinItems - 1));
    internal static int Add(int a, int b) => a >= JsonSchema.Unbounded || b >= JsonSchema.Unbounded ? JsonSchema.Unbounded : Math.Min(JsonSchema.Unbounded, a + b);
    internal static int Mul(int n, int a) => a >= JsonSchema.Unbounded ? (n == 0 ? 0 : JsonSchema.Unbounded) : (int)Math.Min(JsonSchema.Unbounded, (long)n * a);
}

/// <summary>A property of an <see cref="ObjectNode"/>: its name as a quoted JSON key, its value's node, whether it must appear.</summary>
public sealed record JsonProperty(string Name, byte[] Key, SchemaNode Value, bool Required);

/// <summary>
/// An object. With declared properties, a generated object holds only those (each at most once, every required one);
/// without, any keys, each value following <see cref="AnyValue"/>.
/// </summary>
public sealed class ObjectNode : SchemaNode
{
    public List<JsonProperty> Properties { get; } = [];
    /// <summary>The value of any key when no properties are declared (a free-form object); null when they are.</summary>
    public SchemaNode? AnyValue { get; internal set; }
    public override bool Starts(byte b) => b == '{';

    internal override int ComputeMinBytes() => ArrayNode.Add(1, ClosingBytes(0UL));   // "{" then what closes it

    /// <summary>Bytes still needed to close the object once the properties in <paramref name="seen"/> are written: a comma,
    /// key, colon and shortest value for each missing required one, then <c>}</c>.</summary>
    internal int ClosingBytes(ulong seen, bool first = true)
    {
        int total = 1;
        foreach (var (property, i) in Properties.Select((p, i) => (p, i)))
            if (property.Required && (seen & (1UL << i)) == 0)
            {
                total = ArrayNode.Add(total, ArrayNode.Add(property.Key.Length + 1 + (first ? 0 : 1), property.Value.MinBytes));
                first = false;
            }
        return total;
    }
}

/// <summary>Any of several nodes; they start with different bytes (different JSON types), so the first byte picks one.</summary>
public sealed class AnyOfNode(IReadOnlyList<SchemaNode> options) : SchemaNode
{
    public IReadOnlyList<SchemaNode> Options { get; } = options;
    public override bool Starts(byte b) => Options.Any(o => o.Starts(b));
    internal override int ComputeMinBytes() => Options.Min(o => o.MinBytes);
}

/// <summary>
/// Compiles the JSON Schema subset structured output needs — <c>type</c> (one or a list), <c>properties</c>,
/// <c>required</c>, <c>additionalProperties</c>, <c>items</c>, <c>minItems</c>/<c>maxItems</c>,
/// <c>minLength</c>/<c>maxLength</c>, <c>enum</c>, <c>const</c>, <c>anyOf</c>/<c>oneOf</c> of different types, and
/// <c>$ref</c> into <c>$defs</c>/<c>definitions</c> (recursion included) — into <see cref="SchemaNode"/>s. Keywords that
/// only annotate (<c>description</c>, <c>title</c>, <c>format</c>, <c>default</c>, …) are ignored; keywords whose
/// constraint the grammar cannot enforce (<c>pattern</c>, <c>minimum</c>, <c>allOf</c>, …) are an error, because an
/// answer that ignored them might not validate.
/// </summary>
public static class JsonSchema
{
    /// <summary>The length of a value with no finite shortest form (a required property that contains itself).</summary>
    public const int Unbounded = int.MaxValue / 4;
    /// <summary>At most this many declared properties per object (seen properties are kept in a 64-bit set).</summary>
    public const int MaxProperties = 64;
    /// <summary>Schemas nest at most this deep, counting every <c>properties</c>, <c>items</c>, <c>anyOf</c> and <c>$ref</c>
    /// step: the compiler recurses, and a stack overflow would end the process rather than the request.</summary>
    public const int MaxDepth = 64;
    /// <summary>At most this many schemas (each property, item, alternative and definition is one) in a compiled schema.</summary>
    public const int MaxNodes = 10_000;
    /// <summary>At most this many <c>enum</c>/<c>const</c> values in all.</summary>
    public const int MaxLiterals = 100_000;
    /// <summary><c>minLength</c> and <c>minItems</c> above this are refused: no answer within a model's context can meet them.</summary>
    public const int MaxMinimum = 1_000_000;

    static readonly HashSet<string> Annotations =
        ["description", "title", "format", "default", "examples", "$schema", "$id", "$comment", "readOnly", "writeOnly", "deprecated", "$defs", "definitions", "strict", "nullable"];
    static readonly HashSet<string> Unenforceable =
        ["pattern", "patternProperties", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "allOf", "not", "if", "then", "else",
         "uniqueItems", "contains", "minProperties", "maxProperties", "dependentRequired", "dependentSchemas", "propertyNames", "prefixItems", "unevaluatedProperties"];

    /// <summary>Any JSON object (OpenAI's <c>json_object</c> mode).</summary>
    public static SchemaNode AnyObject() => Compile(JsonDocument.Parse("""{"type": "object"}""").RootElement);

    /// <summary>Compiles a schema; every problem is a <see cref="JsonSchemaException"/> naming where it is.</summary>
    public static SchemaNode Compile(JsonElement schema)
    {
        var compiler = new Compiler(schema);
        var root = compiler.Node(schema, "#");
        compiler.ResolveLengths();
        if (root.MinBytes >= Unbounded)
            throw new JsonSchemaException("#", $"no JSON value shorter than {Unbounded:N0} bytes satisfies this schema (its minimum lengths multiply past that, or a required property contains itself).");
        return root;
    }

    sealed class Compiler(JsonElement root)
    {
        readonly List<SchemaNode> _nodes = [];
        readonly Dictionary<string, SchemaNode> _refs = [];
        int _depth, _literals;

        T Add<T>(T node) where T : SchemaNode
        {
            if (_nodes.Count == MaxNodes) throw new JsonSchemaException("#", $"the schema has more than {MaxNodes:N0} parts (properties, items, alternatives, definitions); at most {MaxNodes:N0} are supported.");
            if (node is LiteralNode literal && (_literals += literal.Options.Count) > MaxLiterals)
                throw new JsonSchemaException("#", $"the schema lists more than {MaxLiterals:N0} enum/const values in all; at most {MaxLiterals:N0} are supported.");
            _nodes.Add(node);
            return node;
        }

        public SchemaNode Node(JsonElement schema, string path)
        {
            // The limit comes before the recursion: a stack overflow cannot be caught.
            if (++_depth > MaxDepth)
                throw new JsonSchemaException(Shorten(path), $"the schema nests more than {MaxDepth} levels deep (counting properties, items, anyOf/oneOf and $ref); at most {MaxDepth} are supported.");
            try { return Compile(schema, path); }
            finally { _depth--; }
        }

        static string Shorten(string path) => path.Length <= 200 ? path : path[..100] + " … " + path[^100..];

        SchemaNode Compile(JsonElement schema, string path)
        {
            if (schema.ValueKind == JsonValueKind.True) return AnyValue(path);
            if (schema.ValueKind == JsonValueKind.False) throw new JsonSchemaException(path, "the schema 'false' accepts no value.");
            if (schema.ValueKind != JsonValueKind.Object) throw new JsonSchemaException(path, $"a schema must be an object or a boolean, not {Kind(schema)}.");
            foreach (var keyword in schema.EnumerateObject())
                if (Unenforceable.Contains(keyword.Name))
                    throw new JsonSchemaException($"{path}/{keyword.Name}", $"'{keyword.Name}' is not supported: structured output cannot guarantee it.");
            if (schema.TryGetProperty("$ref", out var reference)) return Ref(reference, $"{path}/$ref");
            if (schema.TryGetProperty("const", out var constant)) return Add(new LiteralNode([Compact(constant)]));
            if (schema.TryGetProperty("enum", out var values))
            {
                if (values.ValueKind != JsonValueKind.Array || values.GetArrayLength() == 0)
                    throw new JsonSchemaException($"{path}/enum", "'enum' must be a non-empty array.");
                if (values.GetArrayLength() > MaxLiterals)
                    throw new JsonSchemaException($"{path}/enum", $"'enum' lists {values.GetArrayLength():N0} values; at most {MaxLiterals:N0} are supported.");
                return Add(new LiteralNode(values.EnumerateArray().Select(Compact)));
            }
            foreach (string any in new[] { "anyOf", "oneOf" })
                if (schema.TryGetProperty(any, out var options))
                {
                    if (options.ValueKind != JsonValueKind.Array || options.GetArrayLength() == 0)
                        throw new JsonSchemaException($"{path}/{any}", $"'{any}' must be a non-empty array of schemas.");
                    return Union([.. options.EnumerateArray().Select((o, i) => Node(o, $"{path}/{any}/{i}"))], $"{path}/{any}");
                }
            if (!schema.TryGetProperty("type", out var type)) return InferredType(schema, path);
            if (type.ValueKind == JsonValueKind.String) return Typed(schema, Text(type, $"{path}/type"), path);
            if (type.ValueKind == JsonValueKind.Array && type.GetArrayLength() > 0)
                return Union([.. type.EnumerateArray().Select((t, i) => Typed(schema, t.ValueKind == JsonValueKind.String ? t.GetString()! : throw new JsonSchemaException($"{path}/type/{i}", "a type must be a string."), path))], $"{path}/type");
            throw new JsonSchemaException($"{path}/type", "'type' must be a string or a non-empty array of strings.");
        }

        /// <summary>A schema without <c>type</c>: its keywords say which (properties → object, items → array), else any value.</summary>
        SchemaNode InferredType(JsonElement schema, string path) =>
            schema.TryGetProperty("properties", out _) || schema.TryGetProperty("required", out _) || schema.TryGetProperty("additionalProperties", out _) ? Typed(schema, "object", path)
            : schema.TryGetProperty("items", out _) ? Typed(schema, "array", path)
            : AnyValue(path);

        SchemaNode AnyValue(string path)
        {
            // Built once per compile and shared: an object's values and an array's items are again any value.
            if (_refs.TryGetValue("<any>", out var any)) return any;
            var obj = Add(new ObjectNode());
            var array = Add(new ArrayNode(0, int.MaxValue));
            var node = Add(new AnyOfNode([obj, array, Add(new StringNode(0, int.MaxValue)), Add(new NumberNode(false)),
                Add(new LiteralNode([Encoding.UTF8.GetBytes("true"), Encoding.UTF8.GetBytes("false"), Encoding.UTF8.GetBytes("null")]))]));
            _refs["<any>"] = node;
            obj.AnyValue = node;
            array.Items = node;
            return node;
        }

        SchemaNode Typed(JsonElement schema, string type, string path)
        {
            switch (type)
            {
                case "string":
                    int min = Count(schema, "minLength", 0, path), max = Count(schema, "maxLength", int.MaxValue, path);
                    if (min > max) throw new JsonSchemaException($"{path}/minLength", $"minLength {min} is more than maxLength {max}.");
                    return Add(new StringNode(min, max));
                case "number": return Add(new NumberNode(false));
                case "integer": return Add(new NumberNode(true));
                case "boolean": return Add(new LiteralNode([Encoding.UTF8.GetBytes("true"), Encoding.UTF8.GetBytes("false")]));
                case "null": return Add(new LiteralNode([Encoding.UTF8.GetBytes("null")]));
                case "array":
                    int minItems = Count(schema, "minItems", 0, path), maxItems = Count(schema, "maxItems", int.MaxValue, path);
                    if (minItems > maxItems) throw new JsonSchemaException($"{path}/minItems", $"minItems {minItems} is more than maxItems {maxItems}.");
                    var array = Add(new ArrayNode(minItems, maxItems));
                    array.Items = schema.TryGetProperty("items", out var items) ? Node(items, $"{path}/items") : AnyValue(path);
                    return array;
                case "object": return Object(schema, path);
                default: throw new JsonSchemaException($"{path}/type", $"unknown type '{type}'; expected string, number, integer, boolean, null, array or object.");
            }
        }

        SchemaNode Object(JsonElement schema, string path)
        {
            var node = Add(new ObjectNode());
            var required = new HashSet<string>();
            if (schema.TryGetProperty("required", out var names))
            {
                if (names.ValueKind != JsonValueKind.Array) throw new JsonSchemaException($"{path}/required", "'required' must be an array of property names.");
                foreach (var (name, i) in names.EnumerateArray().Select((n, i) => (n, i)))
                    if (name.ValueKind != JsonValueKind.String || !required.Add(Text(name, $"{path}/required/{i}")))
                        throw new JsonSchemaException($"{path}/required/{i}", "'required' must list distinct property names (strings).");
            }
            bool hasProperties = schema.TryGetProperty("properties", out var properties);
            if (hasProperties)
            {
                if (properties.ValueKind != JsonValueKind.Object) throw new JsonSchemaException($"{path}/properties", "'properties' must be an object of schemas.");
                foreach (var property in properties.EnumerateObject())
                {
                    if (node.Properties.Count == MaxProperties) throw new JsonSchemaException($"{path}/properties", $"at most {MaxProperties} properties per object are supported.");
                    var value = Node(property.Value, $"{path}/properties/{property.Name}");
                    node.Properties.Add(new JsonProperty(property.Name, Compact(JsonSerializer.SerializeToElement(property.Name)), value, required.Contains(property.Name)));
                }
            }
            if (required.FirstOrDefault(r => node.Properties.All(p => p.Name != r)) is { } missing)
                throw new JsonSchemaException($"{path}/required", $"'{missing}' is required but not among 'properties'.");
            if (!hasProperties)
            {
                node.AnyValue = schema.TryGetProperty("additionalProperties", out var additional) && additional.ValueKind != JsonValueKind.True
                    ? additional.ValueKind == JsonValueKind.False ? null : Node(additional, $"{path}/additionalProperties")
                    : AnyValue(path);
            }
            return node;
        }

        SchemaNode Union(List<SchemaNode> options, string path)
        {
            if (options.Count == 1) return options[0];
            if (options.Any(o => o is RefPlaceholder { Target: null }))
                throw new JsonSchemaException(path, "a '$ref' that is an alternative of its own definition is not supported.");
            // Literals merge; other alternatives must start with different bytes so the first byte decides.
            var literals = options.OfType<LiteralNode>().ToList();
            var rest = options.Where(o => o is not LiteralNode).ToList();
            if (literals.Count > 1) rest.Add(Add(new LiteralNode(literals.SelectMany(l => Enumerable.Range(0, l.Options.Count).Select(i => l.Options[i])))));
            else rest.AddRange(literals);
            for (int b = 0; b < 256; b++)
                if (rest.Count(o => o.Starts((byte)b)) > 1)
                    throw new JsonSchemaException(path, "alternatives of the same JSON type are not supported: each must start differently (e.g. a string or null).");
            return rest.Count == 1 ? rest[0] : Add(new AnyOfNode(rest));
        }

        SchemaNode Ref(JsonElement reference, string path)
        {
            string target = reference.ValueKind == JsonValueKind.String ? reference.GetString()! : throw new JsonSchemaException(path, "'$ref' must be a string.");
            if (_refs.TryGetValue(target, out var known)) return known;
            string[] parts = target.Split('/');
            if (parts.Length != 3 || parts[0] != "#" || parts[1] is not ("$defs" or "definitions"))
                throw new JsonSchemaException(path, $"'$ref' '{target}' is not supported: only '#/$defs/<name>' and '#/definitions/<name>' are.");
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty(parts[1], out var defs) || defs.ValueKind != JsonValueKind.Object
                || !defs.TryGetProperty(parts[2].Replace("~1", "/").Replace("~0", "~"), out var definition))
                throw new JsonSchemaException(path, $"'$ref' '{target}' points at nothing.");
            var placeholder = Add(new RefPlaceholder());
            _refs[target] = placeholder;
            var node = Node(definition, target);
            for (var hop = node; hop is RefPlaceholder next; hop = next.Target)
                if (next == placeholder || next.Target is null) throw new JsonSchemaException(path, $"'$ref' '{target}' refers to itself with no object or array between.");
            placeholder.Target = node;
            return placeholder;
        }

        public void ResolveLengths()
        {
            // Shortest lengths by fixed point: recursive definitions start unbounded and shrink until nothing changes.
            for (bool changed = true; changed;)
            {
                changed = false;
                foreach (var node in _nodes)
                {
                    int length = node.ComputeMinBytes();
                    if (length < node.MinBytes) { node.MinBytes = length; changed = true; }
                }
            }
        }

        static int Count(JsonElement schema, string keyword, int fallback, string path)
        {
            if (!schema.TryGetProperty(keyword, out var value)) return fallback;
            if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out double number) || number < 0 || number != Math.Floor(number))
                throw new JsonSchemaException($"{path}/{keyword}", $"'{keyword}' must be a non-negative integer.");
            bool minimum = keyword.StartsWith("min", StringComparison.Ordinal);
            if (minimum && number > MaxMinimum)
                throw new JsonSchemaException($"{path}/{keyword}", $"'{keyword}' {number:G} is more than {MaxMinimum:N0}: no answer within a model's context can meet it.");
            // A maximum beyond what any answer can reach limits nothing.
            return number > int.MaxValue ? int.MaxValue : (int)number;
        }

        static string Text(JsonElement value, string path)
        {
            try { return value.GetString()!; }
            catch (InvalidOperationException) { throw new JsonSchemaException(path, "not valid Unicode text."); }
        }

        static string Kind(JsonElement e) => e.ValueKind.ToString().ToLowerInvariant();
    }

    /// <summary>Compact UTF-8 JSON text of a value (no insignificant whitespace), as a generated answer writes it.</summary>
    static byte[] Compact(JsonElement value) => JsonSerializer.SerializeToUtf8Bytes(value, CompactOptions);

    static readonly JsonSerializerOptions CompactOptions = new() { WriteIndented = false, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}

/// <summary>A <c>$ref</c>: stands for its definition, which may contain it (a tree of nodes that are trees).</summary>
public sealed class RefPlaceholder : SchemaNode
{
    public SchemaNode Target { get; internal set; } = null!;
    public override bool Starts(byte b) => Target.Starts(b);
    internal override int ComputeMinBytes() => Target.MinBytes;
}
