using GptSharp.Inference;

namespace GptSharp.Tests;

/// <summary>The tool a model may call: arithmetic only; bad input gives an error text, never an exception.</summary>
public class CalculatorTests
{
    [Theory]
    [InlineData("12+30", "42")]
    [InlineData("123456 × 654321", "80779853376")]
    [InlineData("987654321987 * 123456789123", "121932631355968601347401")]
    [InlineData("7 − 10", "-3")]
    [InlineData("-(2 + 3) * 4", "-20")]
    [InlineData("1,000 + 1_000", "2000")]
    [InlineData("10 / 4", "2.5")]
    [InlineData("1 ÷ 4 × 4", "1")]
    [InlineData("((((2))))", "2")]
    [InlineData(" 2 x 3 ", "6")]
    public void EvaluatesArithmetic(string expression, string expected)
    {
        var result = Calculator.Evaluate(expression);
        Assert.True(result.Ok, result.Text);
        Assert.Equal(expected, result.Text);
    }

    [Theory]
    [InlineData("", "empty expression")]
    [InlineData("2 +", "ends where a number was expected")]
    [InlineData("2 + abc", "unexpected 'a' at 5")]
    [InlineData("import os", "unexpected 'i' at 1")]
    [InlineData("(1 + 2", "missing ')'")]
    [InlineData("1 / 0", "division by zero")]
    [InlineData("2 3", "unexpected '3' at 3")]
    [InlineData("1.2.3", "is not a number")]
    [InlineData("99999999999999999999999999 * 99999999999999999999999", "result too large")]
    [InlineData("12345678901234567890123456789", "more than 28 digits")]
    public void MalformedOrHugeInputGivesAnErrorText(string expression, string error)
    {
        var result = Calculator.Evaluate(expression);
        Assert.False(result.Ok);
        Assert.StartsWith("error: ", result.Text);
        Assert.Contains(error, result.Text);
    }

    [Fact]
    public void LimitsHoldAgainstHostileInput()
    {
        Assert.Contains("longer than", Calculator.Evaluate(new string('1', Calculator.MaxLength + 1)).Text);
        Assert.Contains("nested", Calculator.Evaluate(new string('(', 100) + "1" + new string(')', 100)).Text);
        Assert.Contains("nested", Calculator.Evaluate(new string('-', 200) + "1").Text);
        Assert.False(Calculator.Evaluate(null).Ok);
        var random = new Random(7);
        const string alphabet = "0123456789+-*/()×÷. x,e";
        for (int i = 0; i < 2000; i++)
        {
            string text = new([.. Enumerable.Range(0, random.Next(1, 40)).Select(_ => alphabet[random.Next(alphabet.Length)])]);
            var result = Calculator.Evaluate(text); // never throws
            Assert.True(result.Ok || result.Text.StartsWith("error: "), text);
        }
    }
}
