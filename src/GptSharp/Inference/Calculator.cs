using System.Globalization;

namespace GptSharp.Inference;

/// <summary>
/// The calculator a model may call: arithmetic and nothing else — numbers, + − × ÷ (also * / x), parentheses and
/// unary minus, evaluated in <see cref="decimal"/> (28 significant digits). No names, no functions, no code: the input
/// is parsed by a small recursive-descent parser with limits on length (<see cref="MaxLength"/>) and nesting
/// (<see cref="MaxDepth"/>), so a malformed or huge expression gives an error text, never a crash or a hang.
/// </summary>
public static class Calculator
{
    public const int MaxLength = 256;
    public const int MaxDepth = 32;

    public static ToolResult Evaluate(string? expression)
    {
        if (string.IsNullOrWhiteSpace(expression)) return new(false, "error: empty expression");
        if (expression.Length > MaxLength) return new(false, $"error: expression longer than {MaxLength} characters");
        var parser = new Parser(expression);
        try
        {
            decimal value = parser.Expression(0);
            parser.SkipSpaces();
            if (!parser.AtEnd) return new(false, $"error: unexpected '{parser.Current}' at {parser.Position + 1}");
            return new(true, Format(value));
        }
        catch (CalculatorError e) { return new(false, "error: " + e.Message); }
        catch (OverflowException) { return new(false, "error: result too large"); }
        catch (DivideByZeroException) { return new(false, "error: division by zero"); }
    }

    /// <summary>Invariant digits, no exponent, no trailing zeros after the point.</summary>
    static string Format(decimal value)
    {
        string text = value.ToString("0.############################", CultureInfo.InvariantCulture);
        return text == "-0" ? "0" : text;
    }

    sealed class CalculatorError(string message) : Exception(message);

    sealed class Parser(string text)
    {
        int _at;
        public int Position => _at;
        public bool AtEnd => _at >= text.Length;
        public char Current => text[_at];

        public void SkipSpaces() { while (!AtEnd && char.IsWhiteSpace(Current)) _at++; }

        bool Take(params char[] options)
        {
            SkipSpaces();
            if (AtEnd || Array.IndexOf(options, Current) < 0) return false;
            _at++;
            return true;
        }

        // expression := term (('+' | '-' | '−') term)*
        public decimal Expression(int depth)
        {
            if (depth > MaxDepth) throw new CalculatorError($"more than {MaxDepth} nested parentheses");
            decimal value = Term(depth);
            while (true)
            {
                SkipSpaces();
                if (Take('+')) value = checked(value + Term(depth));
                else if (Take('-', '−')) value = checked(value - Term(depth));
                else return value;
            }
        }

        // term := factor (('*' | '×' | 'x' | '/' | '÷') factor)*
        decimal Term(int depth)
        {
            decimal value = Factor(depth);
            while (true)
            {
                if (Take('*', '×', 'x', 'X')) value = checked(value * Factor(depth));
                else if (Take('/', '÷'))
                {
                    decimal divisor = Factor(depth);
                    if (divisor == 0) throw new CalculatorError("division by zero");
                    value = value / divisor;
                }
                else return value;
            }
        }

        // factor := '-' factor | '(' expression ')' | number
        decimal Factor(int depth)
        {
            if (depth > MaxDepth) throw new CalculatorError($"more than {MaxDepth} nested signs or parentheses");
            SkipSpaces();
            if (AtEnd) throw new CalculatorError("the expression ends where a number was expected");
            if (Take('-', '−')) return -Factor(depth + 1);
            if (Take('+')) return Factor(depth + 1);
            if (Take('('))
            {
                decimal inner = Expression(depth + 1);
                if (!Take(')')) throw new CalculatorError(AtEnd ? "missing ')'" : $"expected ')' at {_at + 1}");
                return inner;
            }
            int start = _at;
            while (!AtEnd && (char.IsAsciiDigit(Current) || Current is '.' or ',' or '_')) _at++;
            if (start == _at) throw new CalculatorError($"unexpected '{Current}' at {_at + 1}");
            string digits = text[start.._at].Replace(",", "").Replace("_", "");
            if (digits.Count(c => c != '.') > 28) throw new CalculatorError("a number with more than 28 digits");
            if (!decimal.TryParse(digits, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out decimal number))
                throw new CalculatorError($"'{text[start.._at]}' is not a number");
            return number;
        }
    }
}
