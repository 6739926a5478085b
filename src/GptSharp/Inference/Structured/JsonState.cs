namespace GptSharp.Inference.Structured;

/// <summary>
/// Where a byte-level matcher stands in the text it accepts. Immutable: <see cref="Feed"/> answers the state after one
/// more byte, or null when the byte cannot come next, so a search over a vocabulary can branch from any state.
/// </summary>
public interface IByteState
{
    IByteState? Feed(byte b);
    /// <summary>Bytes still needed to complete the text by its shortest way; 0 when it may end here.</summary>
    int Remaining { get; }
}

/// <summary>
/// A partial compact JSON text following a compiled schema (<see cref="JsonSchema"/>): a stack of frames, one per open
/// value, with the bytes each still needs. No insignificant whitespace; strings are valid UTF-8 with only the short
/// escapes (<c>\" \\ \/ \b \f \n \r \t</c>), so every complete text parses and validates.
/// </summary>
public sealed class JsonState : IByteState
{
    static readonly JsonState Empty = new(null, null);
    readonly Frame? _top;
    readonly JsonState? _rest;

    JsonState(Frame? top, JsonState? rest)
    {
        (_top, _rest) = (top, rest);
        Remaining = top is null ? 0 : ArrayNode.Add(top.Remaining, rest!.Remaining);
    }

    /// <summary>Before the first byte of a value of <paramref name="root"/>.</summary>
    public static JsonState Start(SchemaNode root) => new(new ValueFrame(root), Empty);

    public int Remaining { get; }

    IByteState? IByteState.Feed(byte b) => Feed(b);

    public JsonState? Feed(byte b)
    {
        var state = this;
        while (true)
        {
            if (state._top is null) return null;   // a complete document takes nothing more
            var step = state._top.Feed(b);
            if (step.Kind == StepKind.Reject) return null;
            var next = state._rest!;
            if (step.Replace is not null) next = new JsonState(step.Replace, next);
            if (step.Child is not null) next = new JsonState(step.Child, next);
            if (step.Kind == StepKind.Consume) return next;
            state = next;   // the byte belongs to the frame below (a number ends at the comma after it)
        }
    }

    enum StepKind { Reject, Consume, Refeed }

    /// <summary>What a frame did with a byte: nothing (reject), took it, or ended before it (refeed to what is below);
    /// <see cref="Replace"/> is the frame after (null: it is done), <see cref="Child"/> a value it opened.</summary>
    readonly record struct Step(StepKind Kind, Frame? Replace = null, Frame? Child = null)
    {
        public static Step Reject => default;
        public static Step Take(Frame? replace, Frame? child = null) => new(StepKind.Consume, replace, child);
        public static Step Done => new(StepKind.Consume);
        public static Step Before(Frame? replace, Frame? child = null) => new(StepKind.Refeed, replace, child);
    }

    abstract class Frame
    {
        /// <summary>Bytes this frame needs to close, not counting frames opened above it.</summary>
        public abstract int Remaining { get; }
        public abstract Step Feed(byte b);
    }

    /// <summary>A value not yet begun: its first byte picks the alternative (through <c>$ref</c> and <c>anyOf</c>).</summary>
    sealed class ValueFrame(SchemaNode node) : Frame
    {
        public override int Remaining => node.MinBytes;

        public override Step Feed(byte b)
        {
            var chosen = Resolve(node, b);
            return chosen is null ? Step.Reject : Step.Before(Open(chosen));
        }

        static SchemaNode? Resolve(SchemaNode node, byte b)
        {
            while (true)
            {
                switch (node)
                {
                    case RefPlaceholder reference: node = reference.Target; break;
                    case AnyOfNode any:
                        var option = any.Options.FirstOrDefault(o => o.Starts(b));
                        if (option is null) return null;
                        node = option;
                        break;
                    default: return node.Starts(b) ? node : null;
                }
            }
        }

        static Frame Open(SchemaNode node) => node switch
        {
            StringNode s => new StringFrame(s.MinLength, s.MaxLength),
            NumberNode n => new NumberFrame(n.Integer, NumberPhase.Start, 0),
            LiteralNode l => new LiteralFrame(l.Options, 0, l.Options.Count, 0),
            ArrayNode a => new ArrayFrame(a, ArrayPhase.Open, 0),
            ObjectNode o => new ObjectFrame(o, ObjectPhase.Open, 0, [], 0, -1),
            _ => throw new InvalidOperationException($"No frame for {node.GetType().Name}."),
        };
    }

    /// <summary>Values [<paramref name="lo"/>, <paramref name="hi"/>) of a literal set, which all begin with the bytes so far.</summary>
    sealed class LiteralFrame(LiteralSet options, int lo, int hi, int position) : Frame
    {
        public override int Remaining => options.ShortestFrom(lo, hi, position);

        public override Step Feed(byte b)
        {
            var (nextLo, nextHi) = options.Narrow(lo, hi, position, b);
            if (nextLo == nextHi) return options.EndsAt(lo, position) ? Step.Before(null) : Step.Reject;
            return nextHi - nextLo == 1 && options[nextLo].Length == position + 1 ? Step.Done : Step.Take(new LiteralFrame(options, nextLo, nextHi, position + 1));
        }
    }

    sealed class StringFrame(int minLength, int maxLength, bool open = false, int length = 0, bool escape = false,
        int continuations = 0, byte low = 0x80, byte high = 0xBF) : Frame
    {
        public override int Remaining => !open ? 2 + minLength : (escape ? 1 : 0) + continuations + Math.Max(0, minLength - length) + 1;

        public override Step Feed(byte b)
        {
            if (!open) return b == '"' ? Step.Take(new StringFrame(minLength, maxLength, open: true)) : Step.Reject;
            if (escape)
                return b is (byte)'"' or (byte)'\\' or (byte)'/' or (byte)'b' or (byte)'f' or (byte)'n' or (byte)'r' or (byte)'t'
                    ? Step.Take(new StringFrame(minLength, maxLength, true, length)) : Step.Reject;
            if (continuations > 0)
                return b >= low && b <= high ? Step.Take(new StringFrame(minLength, maxLength, true, length, false, continuations - 1)) : Step.Reject;
            if (b == '"') return length >= minLength ? Step.Done : Step.Reject;
            if (b < 0x20 || length >= maxLength) return Step.Reject;
            // A character starts: ASCII, an escape, or a UTF-8 lead byte whose continuations are bounded to valid scalars.
            (int more, byte lo, byte hi) = b switch
            {
                (byte)'\\' => (0, (byte)0, (byte)0),
                < 0x80 => (0, (byte)0, (byte)0),
                >= 0xC2 and <= 0xDF => (1, (byte)0x80, (byte)0xBF),
                0xE0 => (2, (byte)0xA0, (byte)0xBF),
                0xED => (2, (byte)0x80, (byte)0x9F),
                >= 0xE1 and <= 0xEF => (2, (byte)0x80, (byte)0xBF),
                0xF0 => (3, (byte)0x90, (byte)0xBF),
                >= 0xF1 and <= 0xF3 => (3, (byte)0x80, (byte)0xBF),
                0xF4 => (3, (byte)0x80, (byte)0x8F),
                _ => (-1, (byte)0, (byte)0),
            };
            if (more < 0) return Step.Reject;
            return Step.Take(new StringFrame(minLength, maxLength, true, length + 1, b == '\\', more, lo, hi));
        }
    }

    enum NumberPhase { Start, Minus, Zero, Int, Dot, Frac, E, ESign, Exp }

    /// <summary>A number; digits are capped (15 whole, 15 fraction, 2 exponent) so every one is a finite double, and an
    /// integer has at most 9 digits so it fits the 32-bit int a typed client most often binds it to.</summary>
    sealed class NumberFrame(bool integer, NumberPhase phase, int digits) : Frame
    {
        public override int Remaining => phase is NumberPhase.Zero or NumberPhase.Int or NumberPhase.Frac or NumberPhase.Exp ? 0 : 1;

        public override Step Feed(byte b)
        {
            bool digit = b is >= (byte)'0' and <= (byte)'9';
            bool exponent = !integer && b is (byte)'e' or (byte)'E';
            Step To(NumberPhase next, int count = 0) => Step.Take(new NumberFrame(integer, next, count));
            switch (phase)
            {
                case NumberPhase.Start when b == '-': return To(NumberPhase.Minus);
                case NumberPhase.Start or NumberPhase.Minus when b == '0': return To(NumberPhase.Zero);
                case NumberPhase.Start or NumberPhase.Minus when digit: return To(NumberPhase.Int, 1);
                case NumberPhase.Int when digit && digits < (integer ? 9 : 15): return To(NumberPhase.Int, digits + 1);
                case NumberPhase.Zero or NumberPhase.Int when !integer && b == '.': return To(NumberPhase.Dot);
                case NumberPhase.Zero or NumberPhase.Int or NumberPhase.Frac when exponent: return To(NumberPhase.E);
                case NumberPhase.Dot when digit: return To(NumberPhase.Frac, 1);
                case NumberPhase.Frac when digit && digits < 15: return To(NumberPhase.Frac, digits + 1);
                case NumberPhase.E when b is (byte)'+' or (byte)'-': return To(NumberPhase.ESign);
                case NumberPhase.E or NumberPhase.ESign when digit: return To(NumberPhase.Exp, 1);
                case NumberPhase.Exp when digit && digits < 2: return To(NumberPhase.Exp, digits + 1);
            }
            return Remaining == 0 ? Step.Before(null) : Step.Reject;
        }
    }

    enum ArrayPhase { Open, First, AfterValue, AfterComma }

    sealed class ArrayFrame(ArrayNode node, ArrayPhase phase, int count) : Frame
    {
        public override int Remaining
        {
            get
            {
                int item = node.Items.MinBytes, missing = Math.Max(0, node.MinItems - count);
                return phase switch
                {
                    ArrayPhase.Open => node.MinBytes,
                    ArrayPhase.First => node.MinItems == 0 ? 1 : ArrayNode.Add(ArrayNode.Add(ArrayNode.Mul(node.MinItems, item), node.MinItems - 1), 1),
                    ArrayPhase.AfterValue => ArrayNode.Add(ArrayNode.Mul(missing, ArrayNode.Add(item, 1)), 1),
                    _ => ArrayNode.Add(ArrayNode.Add(item, ArrayNode.Mul(Math.Max(1, missing) - 1, ArrayNode.Add(item, 1))), 1),
                };
            }
        }

        public override Step Feed(byte b)
        {
            switch (phase)
            {
                case ArrayPhase.Open: return b == '[' ? Step.Take(new ArrayFrame(node, ArrayPhase.First, 0)) : Step.Reject;
                case ArrayPhase.First when b == ']': return node.MinItems == 0 ? Step.Done : Step.Reject;
                case ArrayPhase.First or ArrayPhase.AfterComma:
                    return count < node.MaxItems && node.Items.Starts(b)
                        ? Step.Before(new ArrayFrame(node, ArrayPhase.AfterValue, count + 1), new ValueFrame(node.Items)) : Step.Reject;
                case ArrayPhase.AfterValue when b == ',': return count < node.MaxItems ? Step.Take(new ArrayFrame(node, ArrayPhase.AfterComma, count)) : Step.Reject;
                case ArrayPhase.AfterValue when b == ']': return count >= node.MinItems ? Step.Done : Step.Reject;
                default: return Step.Reject;
            }
        }
    }

    enum ObjectPhase { Open, First, Key, Colon, AfterValue, AfterComma }

    /// <summary>An object: <paramref name="seen"/> holds the declared properties written so far (bit per index);
    /// in <see cref="ObjectPhase.Key"/>, <paramref name="candidates"/> are the keys the bytes so far still match.</summary>
    sealed class ObjectFrame(ObjectNode node, ObjectPhase phase, ulong seen, IReadOnlyList<int> candidates, int keyPosition, int property) : Frame
    {
        bool FreeForm => node.Properties.Count == 0;
        bool Bit(int i) => (seen & (1UL << i)) != 0;
        IEnumerable<int> Unseen => Enumerable.Range(0, node.Properties.Count).Where(i => !Bit(i));
        bool MayClose => node.Properties.Select((p, i) => !p.Required || Bit(i)).All(ok => ok);

        /// <summary>Bytes from after the value of property <paramref name="i"/> to the closing brace.</summary>
        int After(int i) => node.ClosingBytes(seen | (1UL << i), first: false);
        int ValueAndAfter(int i) => ArrayNode.Add(node.Properties[i].Value.MinBytes, After(i));
        int FreeValueAndAfter => ArrayNode.Add(node.AnyValue?.MinBytes ?? JsonSchema.Unbounded, 1);

        public override int Remaining => phase switch
        {
            ObjectPhase.Open => node.MinBytes,
            ObjectPhase.First => node.ClosingBytes(seen),
            ObjectPhase.AfterValue => node.ClosingBytes(seen, first: false),
            ObjectPhase.AfterComma when FreeForm => ArrayNode.Add(3, FreeValueAndAfter),
            ObjectPhase.AfterComma => Unseen.Select(i => ArrayNode.Add(node.Properties[i].Key.Length + 1, ValueAndAfter(i))).DefaultIfEmpty(JsonSchema.Unbounded).Min(),
            ObjectPhase.Key => candidates.Min(i => ArrayNode.Add(node.Properties[i].Key.Length - keyPosition + 1, ValueAndAfter(i))),
            _ /* Colon */ => property < 0 ? ArrayNode.Add(1, FreeValueAndAfter) : ArrayNode.Add(1, ValueAndAfter(property)),
        };

        ObjectFrame With(ObjectPhase next, ulong nextSeen, IReadOnlyList<int>? nextCandidates = null, int position = 0, int nextProperty = -1) =>
            new(node, next, nextSeen, nextCandidates ?? [], position, nextProperty);

        public override Step Feed(byte b)
        {
            switch (phase)
            {
                case ObjectPhase.Open: return b == '{' ? Step.Take(With(ObjectPhase.First, 0)) : Step.Reject;
                case ObjectPhase.First or ObjectPhase.AfterValue when b == '}': return MayClose ? Step.Done : Step.Reject;
                case ObjectPhase.AfterValue when b == ',':
                    return FreeForm ? (node.AnyValue is null ? Step.Reject : Step.Take(With(ObjectPhase.AfterComma, seen)))
                        : Unseen.Any() ? Step.Take(With(ObjectPhase.AfterComma, seen)) : Step.Reject;
                case ObjectPhase.First or ObjectPhase.AfterComma when b == '"':
                    if (FreeForm)
                        return node.AnyValue is null ? Step.Reject
                            : Step.Before(With(ObjectPhase.Colon, seen), new StringFrame(0, int.MaxValue));
                    var open = Unseen.ToList();
                    return open.Count == 0 ? Step.Reject : Step.Take(With(ObjectPhase.Key, seen, open, 1));
                case ObjectPhase.Key:
                    var matching = candidates.Where(i => node.Properties[i].Key[keyPosition] == b).ToList();
                    if (matching.Count == 0) return Step.Reject;
                    // Keys are quoted and distinct, so the one whose closing quote this is is the only match left.
                    var whole = matching.FirstOrDefault(i => node.Properties[i].Key.Length == keyPosition + 1, -1);
                    return whole >= 0 ? Step.Take(With(ObjectPhase.Colon, seen, nextProperty: whole))
                        : Step.Take(With(ObjectPhase.Key, seen, matching, keyPosition + 1));
                case ObjectPhase.Colon when b == ':':
                    return property < 0
                        ? Step.Take(With(ObjectPhase.AfterValue, seen), new ValueFrame(node.AnyValue!))
                        : Step.Take(With(ObjectPhase.AfterValue, seen | (1UL << property)), new ValueFrame(node.Properties[property].Value));
                default: return Step.Reject;
            }
        }
    }
}
