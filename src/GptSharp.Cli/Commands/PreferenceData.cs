using GptSharp.Alignment;
using GptSharp.Data;

namespace GptSharp.Cli.Commands;

/// <summary>Preference pairs for `reward` and `dpo`: the built-in ones, or a user's file with an optional held-out file.</summary>
static class PreferenceData
{
    public static (IReadOnlyList<PreferencePair> Train, IReadOnlyList<PreferencePair> HeldOut) Load(string data, string? val, long seed, string splitName)
    {
        if (data == "builtin")
        {
            var builtIn = BuiltInDatasets.Build(seed);
            return (builtIn.TrainPairs, builtIn.HeldOutPairs);
        }
        var all = ChatData.ReadPreferences(data).ToList();
        if (val is not null) return (all, ChatData.ReadPreferences(val).ToList());
        bool HeldOut(int i) => ShardBuilder.IsValidation(seed, splitName, i, 0.05);
        return (all.Where((_, i) => !HeldOut(i)).ToList(), all.Where((_, i) => HeldOut(i)).ToList());
    }
}
