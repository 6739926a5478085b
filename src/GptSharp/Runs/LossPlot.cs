using GptSharp.Runtime;
using ScottPlot;

namespace GptSharp.Runs;

/// <summary>Draws a run's training and validation loss from its metrics.jsonl as a PNG.</summary>
public static class LossPlot
{
    public const string FileName = "loss.png";

    public static string Write(string runDirectory, string title = "Loss")
    {
        string metricsPath = Path.Combine(runDirectory, MetricsLog.FileName);
        if (!File.Exists(metricsPath)) throw new FileNotFoundException($"No {MetricsLog.FileName} in '{runDirectory}' to plot.", metricsPath);
        var records = MetricsLog.Read(metricsPath).ToList();
        var plot = new Plot();
        var train = records.Where(r => r["loss"] is not null).ToList();
        var trainLine = plot.Add.ScatterLine(train.Select(r => (double)r["step"]!.GetValue<int>()).ToArray(), train.Select(r => r["loss"]!.GetValue<double>()).ToArray());
        trainLine.LegendText = "train";
        var val = records.Where(r => r["valLoss"] is not null).ToList();
        if (val.Count > 0)
        {
            var valLine = plot.Add.ScatterLine(val.Select(r => (double)r["step"]!.GetValue<int>()).ToArray(), val.Select(r => r["valLoss"]!.GetValue<double>()).ToArray());
            valLine.LegendText = "validation";
            valLine.MarkerSize = 5;
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("cross-entropy (nats/token)");
        plot.ShowLegend();
        string path = Path.Combine(runDirectory, FileName);
        AtomicFile.WriteAllBytes(path, plot.GetImageBytes(900, 500, ImageFormat.Png));
        return path;
    }
}
