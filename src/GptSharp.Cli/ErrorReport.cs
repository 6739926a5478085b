using Spectre.Console;

namespace GptSharp.Cli;

/// <summary>Prints an exception as one actionable line (the stack trace only with GPTSHARP_DEBUG=1) and returns exit code 1.</summary>
static class ErrorReport
{
    public static int Print(Exception exception)
    {
        var error = exception is AggregateException { InnerExceptions.Count: 1 } aggregate ? aggregate.InnerExceptions[0] : exception;
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        console.MarkupLine($"[red]error:[/] {Markup.Escape(Message(error))}");
        if (Environment.GetEnvironmentVariable("GPTSHARP_DEBUG") == "1") console.WriteException(exception);
        return 1;
    }

    /// <summary>The message without .NET's " (Parameter 'name')" suffix, which names a field of the code, not an option.</summary>
    static string Message(Exception error) => error is ArgumentException { ParamName: { } name }
        ? error.Message.Replace($" (Parameter '{name}')", "")
        : error.Message;
}
