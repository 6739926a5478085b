using Spectre.Console;

namespace GptSharp.Cli;

/// <summary>Prints an exception as one actionable line (the stack trace only with GPTSHARP_DEBUG=1) and returns exit code 1.</summary>
static class ErrorReport
{
    public static int Print(Exception exception)
    {
        var error = exception is AggregateException { InnerExceptions.Count: 1 } aggregate ? aggregate.InnerExceptions[0] : exception;
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        console.MarkupLine($"[red]error:[/] {Markup.Escape(error.Message)}");
        if (Environment.GetEnvironmentVariable("GPTSHARP_DEBUG") == "1") console.WriteException(exception);
        return 1;
    }
}
