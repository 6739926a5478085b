using GptSharp.Tokenization;
using GptSharp.Alignment;
using GptSharp.Data;

namespace GptSharp.Cli.Commands;

/// <summary>Training data for sft, reward and dpo: the built-in sets, or a user's file with an optional held-out file.</summary>
static class FineTuneData
{
    public static (IReadOnlyList<PreferencePair> Train, IReadOnlyList<PreferencePair> HeldOut) Preferences(string data, string? val, long seed, string splitName)
    {
        if (data == "builtin")
        {
            var builtIn = BuiltInDatasets.Build(seed);
            return (builtIn.TrainPairs, builtIn.HeldOutPairs);
        }
        var pairs = ChatData.ReadPreferences(data).ToList();
        if (val is not null) return (pairs, ChatData.ReadPreferences(val).ToList());
        return ChatData.SplitByGroup(pairs, seed, splitName); // a pair without a group is a group of one
    }

    public static (IReadOnlyList<IReadOnlyList<ChatMessage>> Train, IReadOnlyList<IReadOnlyList<ChatMessage>> HeldOut) Conversations(string data, string? val, long seed)
    {
        if (data == "builtin")
        {
            var builtIn = BuiltInDatasets.Build(seed);
            if (builtIn.HeldOutDuplicatesDropped > 0) Console.WriteLine($"{builtIn.HeldOutDuplicatesDropped} held-out items also asked in training were dropped.");
            return (builtIn.TrainChats, builtIn.HeldOutChats);
        }
        if (data == "arithmetic") return BuiltInDatasets.ArithmeticChats();   // fixed split: the arithmetic score's problems never reach training
        if (data == "verse-rhyme") return BuiltInDatasets.VerseRhymeChats(seed);
        if (data == ArithmeticStepsEnvironment.Name) return BuiltInDatasets.ArithmeticStepsChats();
        return Split(ChatData.ReadConversations(data).ToList(), val is null ? null : ChatData.ReadConversations(val).ToList(), seed, "sft");
    }

    /// <summary>A given held-out file, or 5% of the training file chosen by seed.</summary>
    static (IReadOnlyList<T> Train, IReadOnlyList<T> HeldOut) Split<T>(List<T> all, List<T>? heldOut, long seed, string splitName)
    {
        if (heldOut is not null) return (all, heldOut);
        bool HeldOut(int i) => ShardBuilder.IsValidation(seed, splitName, i, 0.05);
        return (all.Where((_, i) => !HeldOut(i)).ToList(), all.Where((_, i) => HeldOut(i)).ToList());
    }
}
