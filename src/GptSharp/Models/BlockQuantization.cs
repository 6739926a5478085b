namespace GptSharp.Models;

/// <summary>GGUF's block quantisations, row-major: each run of 32 weights as small integers and one F16 scale.</summary>
public static class BlockQuantization
{
    public const int Block = 32;

    /// <summary>
    /// Q8_0: per 32 values, scale = max |w| / 127 stored as F16, bytes rounded from w ÷ the exact scale, half away from
    /// zero (34 bytes a block).
    /// </summary>
    public static (byte[] Quants, float[] Scales) Q8_0(float[] data)
    {
        var quants = new byte[data.Length];
        var scales = new float[data.Length / Block];
        for (int b = 0; b < scales.Length; b++)
        {
            float max = 0;
            for (int k = 0; k < Block; k++) max = Math.Max(max, Math.Abs(data[b * Block + k]));
            scales[b] = (float)(Half)(max / 127f);
            float inverse = max == 0 ? 0 : 1f / (max / 127f);
            for (int k = 0; k < Block; k++) quants[b * Block + k] = (byte)(sbyte)Math.Round(data[b * Block + k] * inverse, MidpointRounding.AwayFromZero);
        }
        return (quants, scales);
    }

    /// <summary>
    /// Q4_0 as llama.cpp writes it: per 32 values, the scale is the value of largest magnitude ÷ −8 (stored as F16), each
    /// weight w becomes min(15, ⌊w ÷ scale + 8.5⌋), and byte j holds value j in its low nibble and value j + 16 in its
    /// high one (18 bytes a block). A weight reads back as (q − 8) × scale.
    /// </summary>
    public static (byte[] Quants, float[] Scales) Q4_0(float[] data)
    {
        var quants = new byte[data.Length / 2];
        var scales = new float[data.Length / Block];
        for (int b = 0; b < scales.Length; b++)
        {
            float extreme = 0;
            for (int k = 0; k < Block; k++)
                if (Math.Abs(data[b * Block + k]) > Math.Abs(extreme)) extreme = data[b * Block + k];
            float scale = extreme / -8;
            scales[b] = (float)(Half)scale;
            float inverse = scale == 0 ? 0 : 1 / scale;
            for (int j = 0; j < Block / 2; j++)
            {
                int low = Math.Min(15, (int)(data[b * Block + j] * inverse + 8.5f));
                int high = Math.Min(15, (int)(data[b * Block + j + Block / 2] * inverse + 8.5f));
                quants[b * Block / 2 + j] = (byte)(low | high << 4);
            }
        }
        return (quants, scales);
    }
}
