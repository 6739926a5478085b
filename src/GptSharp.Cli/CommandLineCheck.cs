using System.ComponentModel;
using System.Globalization;
using System.Reflection;
using Spectre.Console.Cli;

namespace GptSharp.Cli;

/// <summary>A command line the user has to correct; printed as one line naming the option at fault.</summary>
sealed class CommandLineException(string message) : Exception(message);

/// <summary>
/// Checks a command line before and after Spectre.Console.Cli reads it, so every mistake is one line naming the option:
/// a value of the wrong type ("--steps abc: expected a whole number"), an unknown option with the nearest known one
/// ("did you mean --max-tokens?"), a stray argument. Values that begin with '-' (a prompt such as "-(1)", a negative
/// number) are handed on as <c>--option=value</c>, which the parser takes as a value rather than an option.
/// </summary>
static class CommandLineCheck
{
    /// <summary>One option as the settings classes declare it: its names and the property type it binds to.</summary>
    sealed record OptionInfo(string[] Names, Type Type)
    {
        public bool IsFlag => Type == typeof(bool) || Type == typeof(bool?);
    }

    /// <summary>Every option of the given settings types, by each of its names (<c>--steps</c>, <c>-n</c>).</summary>
    static Dictionary<string, List<OptionInfo>> Table(IEnumerable<Type> settingsTypes)
    {
        var table = new Dictionary<string, List<OptionInfo>>(StringComparer.Ordinal);
        foreach (var settings in settingsTypes)
            foreach (var option in Options(settings))
                foreach (string name in option.Names)
                {
                    if (!table.TryGetValue(name, out var list)) table[name] = list = [];
                    if (list.All(o => o.Type != option.Type)) list.Add(option);
                }
        return table;
    }

    static IEnumerable<Type> AllSettings => typeof(CommandLineCheck).Assembly.GetTypes().Where(t => typeof(CommandSettings).IsAssignableFrom(t) && !t.IsAbstract);

    /// <summary>
    /// The settings type of the command that <paramref name="args"/> name, found by the naming rule every command follows
    /// (<c>feedback label</c> is <c>FeedbackLabelCommand</c>); null when the words name no command.
    /// </summary>
    public static Type? SettingsOf(string[] args)
    {
        var words = args.TakeWhile(a => !a.StartsWith('-')).Take(2).ToList();
        for (int count = words.Count; count > 0; count--)   // a command's own arguments may follow its words
        {
            string name = string.Concat(words.Take(count).SelectMany(a => a.Split('-')).Where(w => w.Length > 0)
                .Select(w => char.ToUpperInvariant(w[0]) + w[1..])) + "Command";
            var command = typeof(CommandLineCheck).Assembly.GetTypes().FirstOrDefault(t => t.Name == name && typeof(ICommand).IsAssignableFrom(t));
            for (var type = command?.BaseType; type is not null; type = type.BaseType)
                if (type.IsGenericType && type.GetGenericArguments() is [var settings] && typeof(CommandSettings).IsAssignableFrom(settings)) return settings;
        }
        return null;
    }

    /// <summary>Checks one value of an option of <paramref name="settings"/>; throws as <see cref="Prepare"/> does.</summary>
    public static void Check(Type settings, string name, string value) => CheckValue(name, value, Table([settings])[name]);

    static IEnumerable<OptionInfo> Options(Type settings) => Properties(settings).Select(x => x.Option);

    static IEnumerable<(PropertyInfo Property, OptionInfo Option)> Properties(Type settings) =>
        settings.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Select(p => (Property: p, Attribute: p.GetCustomAttribute<CommandOptionAttribute>()))
            .Where(x => x.Attribute is not null)
            .Select(x => (x.Property, new OptionInfo([.. x.Attribute!.LongNames.Select(n => "--" + n), .. x.Attribute.ShortNames.Select(n => "-" + n)], x.Property.PropertyType)));

    /// <summary>Ranges of options that mean the same on every command that has them.</summary>
    static readonly Dictionary<string, (Func<double, bool> Accepts, string Expected)> Ranges = new()
    {
        ["--max-tokens"] = (v => v >= 1, "at least 1 token"),
        ["--temperature"] = (v => v >= 0, "0 (greedy) or more"),
        ["--top-p"] = (v => v is > 0 and <= 1, "more than 0 and at most 1"),
        ["--top-k"] = (v => v >= 0, "0 (all tokens) or more"),
        ["--repetition-penalty"] = (v => v > 0, "more than 0 (1: off)"),
        ["--samples"] = (v => v >= 1, "at least 1"),
        ["--threads"] = (v => v >= 0, "0 (one per core) or more"),
        ["--batch-size"] = (v => v >= 1, "at least 1"),
    };

    /// <summary>
    /// Checks the values of known options and rewrites those that begin with '-' as <c>--option=value</c>; throws a
    /// <see cref="CommandLineException"/> naming the option when a value cannot be read as its type.
    /// </summary>
    /// <summary>Spellings options had before every command spoke one vocabulary (the starting run is <c>--from</c>, the
    /// reward model <c>--reward-model</c>, a held-out share <c>--val-fraction</c>, a file of items <c>--data</c>): still
    /// taken, with a one-line notice on standard error.</summary>
    public static readonly IReadOnlyDictionary<(Type Settings, string Old), string> Renamed = new Dictionary<(Type, string), string>
    {
        [(typeof(Commands.PpoSettings), "--sft")] = "--from",
        [(typeof(Commands.PpoSettings), "--reward")] = "--reward-model",
        [(typeof(Commands.GenerateSettings), "--reward")] = "--reward-model",
        [(typeof(Commands.FormScoreSettings), "--reward")] = "--reward-model",
        [(typeof(Commands.FeedbackAgreementSettings), "--reward")] = "--reward-model",
        [(typeof(Commands.SpeedrunSettings), "--from")] = "--from-stage",
        [(typeof(Commands.BertPretrainSettings), "--held-out")] = "--val-fraction",
        [(typeof(Commands.FeedbackLabelSettings), "--items")] = "--data",
    };

    public static string[] Prepare(string[] args)
    {
        var command = SettingsOf(args);
        if (command is not null) args = [.. args.Select(arg => Rename(command, arg))];
        var known = Table(command is { } settings ? [settings] : AllSettings);
        var result = new List<string>(args.Length);
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            if (arg == "--")
            {
                result.AddRange(args[i..]);
                break;
            }
            if (!arg.StartsWith('-') || arg.Length < 2 || char.IsAsciiDigit(arg[1]))
            {
                result.Add(arg);
                continue;
            }
            int split = arg.IndexOfAny(['=', ':']);
            string name = split > 0 ? arg[..split] : arg;
            if (!known.TryGetValue(name, out var options))
            {
                result.Add(arg);   // unknown here: the check after parsing names it against the command's own options
                continue;
            }
            if (options.All(o => o.IsFlag))
            {
                if (split > 0) CheckValue(name, arg[(split + 1)..], options);
                result.Add(arg);
                continue;
            }
            string? value = split > 0 ? arg[(split + 1)..] : i + 1 < args.Length ? args[++i] : null;
            if (value is null) throw new CommandLineException($"{name} needs a value: {Expected(options[0].Type)}.");
            if (split < 0 && known.ContainsKey(value) && !Number(value))
                throw new CommandLineException($"{name} needs a value ({Expected(options[0].Type)}), but is followed by the option {value}.");
            CheckValue(name, value, options);
            result.Add(value.StartsWith('-') || split > 0 ? $"{name}={value}" : name);
            if (!value.StartsWith('-') && split < 0) result.Add(value);
        }
        return [.. result];
    }

    static string Rename(Type settings, string arg)
    {
        int split = arg.IndexOfAny(['=', ':']);
        string name = split > 0 ? arg[..split] : arg;
        if (!Renamed.TryGetValue((settings, name), out string? now)) return arg;
        Console.Error.WriteLine($"note: {name} is now {now}; the old spelling still works for now.");
        return now + arg[name.Length..];
    }

    static bool Number(string text) => double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out _);

    static void CheckValue(string name, string value, List<OptionInfo> options)
    {
        if (options.Any(o => Converts(o.Type, value))) return;
        throw new CommandLineException($"{name} '{value}': expected {Expected(options[0].Type)}.");
    }

    static bool Converts(Type type, string value)
    {
        var target = Nullable.GetUnderlyingType(type) ?? type;
        if (target == typeof(string)) return true;
        if (target == typeof(double) || target == typeof(float))
            return double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double number) && double.IsFinite(number);
        if (target.IsEnum) return Enum.TryParse(target, value, ignoreCase: true, out var parsed) && Enum.IsDefined(target, parsed!) && !Number(value);
        try
        {
            return TypeDescriptor.GetConverter(target).ConvertFromInvariantString(value) is not null;
        }
        catch (Exception e) when (e is FormatException or NotSupportedException or ArgumentException or OverflowException
                                  || e.InnerException is FormatException or OverflowException)
        {
            return false;
        }
    }

    /// <summary>What an option of <paramref name="type"/> accepts, in words.</summary>
    static string Expected(Type type)
    {
        var target = Nullable.GetUnderlyingType(type) ?? type;
        if (target.IsEnum) return "one of " + string.Join(", ", Enum.GetNames(target).Select(n => n.ToLowerInvariant()));
        return target == typeof(int) ? "a whole number, such as 100"
            : target == typeof(long) ? "a whole number, such as 1337"
            : target == typeof(double) || target == typeof(float) ? "a number, such as 0.5"
            : target == typeof(bool) ? "true or false (or leave the value out)"
            : "a text";
    }

    /// <summary>
    /// After parsing: options the command does not know, and arguments it does not take, are errors naming them (and
    /// the nearest option the command has). Spectre.Console.Cli would otherwise pass them by silently.
    /// </summary>
    public sealed class Interceptor : ICommandInterceptor
    {
        public void Intercept(CommandContext context, CommandSettings settings)
        {
            var known = Options(settings.GetType()).SelectMany(o => o.Names).ToList();
            foreach (var (property, option) in Properties(settings.GetType()))
                if (Ranges.TryGetValue(option.Names[0], out var range) && property.GetValue(settings) is { } value and (int or long or double)
                    && !range.Accepts(Convert.ToDouble(value, CultureInfo.InvariantCulture)))
                    throw new CommandLineException($"{option.Names[0]} {Convert.ToString(value, CultureInfo.InvariantCulture)}: expected {range.Expected}.");
            foreach (var group in context.Remaining.Parsed)
            {
                string name = group.Key.StartsWith('-') ? group.Key : (group.Key.Length == 1 ? "-" : "--") + group.Key;
                string? nearest = Nearest(name, known);
                throw new CommandLineException($"Unknown option {name} for '{context.Name}'" +
                                               (nearest is null ? "; see --help for the options it takes." : $"; did you mean {nearest}?"));
            }
            if (context.Remaining.Raw.Count > 0)
                throw new CommandLineException($"'{context.Name}' takes no arguments after its options, but was given '{context.Remaining.Raw[0]}'; " +
                                               "put a value that begins with '-' as --option=VALUE.");
        }
    }

    /// <summary>The known option closest in spelling to <paramref name="name"/>, when one is close enough to be meant.</summary>
    public static string? Nearest(string name, IEnumerable<string> known)
    {
        var best = known.Where(k => k.StartsWith("--", StringComparison.Ordinal))
            .Select(k => (Name: k, Distance: Distance(name, k)))
            .OrderBy(x => x.Distance).ThenBy(x => x.Name, StringComparer.Ordinal).FirstOrDefault();
        return best.Name is not null && best.Distance <= Math.Max(2, name.Length / 3) ? best.Name : null;
    }

    /// <summary>Edits (insert, delete, substitute) between two names.</summary>
    static int Distance(string a, string b)
    {
        var previous = Enumerable.Range(0, b.Length + 1).ToArray();
        var current = new int[b.Length + 1];
        for (int i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (int j = 1; j <= b.Length; j++)
                current[j] = Math.Min(Math.Min(current[j - 1], previous[j]) + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (previous, current) = (current, previous);
        }
        return previous[b.Length];
    }
}
