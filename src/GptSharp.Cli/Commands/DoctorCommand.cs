using GptSharp.Runtime;
using Spectre.Console;
using Spectre.Console.Cli;
using TorchSharp;

namespace GptSharp.Cli.Commands;

/// <summary><c>gptsharp doctor</c>: what this machine and build give GptSharp.</summary>
sealed class DoctorCommand : Command<CommonSettings>
{
    public override int Execute(CommandContext context, CommonSettings settings, CancellationToken cancellation)
    {
        var runtime = TorchRuntime.Initialize(settings.Threads);
        var compat = SystemReport.LibTorchSharpCompat();
        double gflops = SystemReport.MatmulGflops();
        var table = new Table().AddColumns("item", "value").HideHeaders();
        table.AddRow("TorchSharp", SystemReport.TorchSharpVersion);
        table.AddRow("libtorch", SystemReport.LibTorchVersion);
        table.AddRow(".NET", Environment.Version.ToString());
        table.AddRow("OS", System.Runtime.InteropServices.RuntimeInformation.OSDescription);
        table.AddRow("CPU", $"{SystemReport.CpuModel()} ({Environment.ProcessorCount} logical cores)");
        table.AddRow("CPU features", string.Join(" ", SystemReport.CpuFeatures()));
        table.AddRow("torch threads", runtime.Threads.ToString());
        table.AddRow("malloc tuning", runtime.MallocTuned ? "on (no mmap for big blocks, no trim)" : "off");
        table.AddRow("device", torch.cuda.is_available() ? $"CUDA ({torch.cuda.device_count()} device(s)), cpu" : "cpu (no CUDA device)");
        table.AddRow("libstdc++ fix", Markup.Escape(compat.Status));
        table.AddRow("matmul fp32 1024³", $"{gflops:F1} GFLOP/s");
        AnsiConsole.Write(table);
        return 0;
    }
}
