using GptSharp.Cli;
using GptSharp.Cli.Commands;
using Spectre.Console.Cli;

var app = new CommandApp();
app.Configure(CommandTree.Configure);
try
{
    return app.Run(CommandLineCheck.Prepare(args));
}
catch (CommandLineException e)
{
    return ErrorReport.Print(e);
}
