using System.ComponentModel;
using System.Reflection;
using Spectre.Console.Cli;
using Spectre.Console.Cli.Help;
using Spectre.Console.Rendering;

namespace GptSharp.Cli;

/// <summary>
/// Settings whose unset options take their defaults from library config records (a stage's <c>TrainingConfig</c>, a
/// <c>PpoConfig</c>, ...): an option named like a property of one of <see cref="Defaults"/> defaults to its value. The
/// defaults are stated once, in the library; the CLI and the speedrun read them from there.
/// </summary>
public interface ILibraryDefaults
{
    IEnumerable<object> Defaults { get; }
}

/// <summary>Finds an option's default and applies set options onto library records.</summary>
public static class OptionDefaults
{
    /// <summary>The default of <paramref name="option"/> on settings of type <paramref name="settingsType"/>: its
    /// initial value, or, when that is null, the same-named property of the settings' library defaults.</summary>
    public static object? Of(Type settingsType, PropertyInfo option)
    {
        if (settingsType.IsAbstract || settingsType.GetConstructor(Type.EmptyTypes) is null) return null;
        object settings = Activator.CreateInstance(settingsType)!;
        if (option.GetValue(settings) is { } initial) return initial;
        return settings is ILibraryDefaults library
            ? library.Defaults.Select(d => Find(d, option.Name)).FirstOrDefault(v => v is not null)
            : null;
    }

    /// <summary>
    /// A copy of the record <paramref name="defaults"/> with every option of <paramref name="settings"/> that was set
    /// (non-null) and shares a property name with it, or with a record it holds (GRPO's and PPO's rollout settings), put
    /// in its place.
    /// </summary>
    public static T Apply<T>(object settings, T defaults) where T : class
    {
        object copy = defaults;
        foreach (var option in settings.GetType().GetProperties().Where(p => p.GetCustomAttribute<CommandOptionAttribute>() is not null))
            if (option.GetValue(settings) is { } value) copy = With(copy, option, value) ?? copy;
        return (T)copy;
    }

    /// <summary>A copy of <paramref name="record"/> with <paramref name="value"/> in the property named as the option, or
    /// in that of a record it holds; null when neither has one of its type.</summary>
    static object? With(object record, PropertyInfo option, object value)
    {
        var type = record.GetType();
        // Options are nullable so that "not given" shows; the record's property may be nullable too (speedrun's --seed).
        if (type.GetProperty(option.Name) is { CanWrite: true } target && Underlying(option.PropertyType) == Underlying(target.PropertyType))
        {
            object copy = Clone(record);
            target.SetValue(copy, value);
            return copy;
        }
        foreach (var nested in type.GetProperties().Where(p => p.CanWrite && IsRecord(p.PropertyType)))
            if (nested.GetValue(record) is { } inner && With(inner, option, value) is { } changed)
            {
                object copy = Clone(record);
                nested.SetValue(copy, changed);
                return copy;
            }
        return null;
    }

    /// <summary>The value of the property named <paramref name="name"/> on <paramref name="record"/> or a record it holds.</summary>
    static object? Find(object record, string name) =>
        record.GetType().GetProperty(name)?.GetValue(record)
        ?? record.GetType().GetProperties().Where(p => IsRecord(p.PropertyType)).Select(p => p.GetValue(record)).OfType<object>()
            .Select(inner => Find(inner, name)).FirstOrDefault(v => v is not null);

    static Type Underlying(Type type) => Nullable.GetUnderlyingType(type) ?? type;
    static bool IsRecord(Type type) => type.IsClass && type.GetMethod("<Clone>$") is not null;
    static object Clone(object record) => record.GetType().GetMethod("<Clone>$")!.Invoke(record, null)!;
}

/// <summary>Spectre's help, with a DEFAULT for every option that has one: its initial value or its library default.</summary>
public sealed class DefaultsHelpProvider(ICommandAppSettings settings) : HelpProvider(settings)
{
    public override IEnumerable<IRenderable> GetOptions(ICommandModel model, ICommandInfo? command) =>
        base.GetOptions(model, command is null ? null : new WithDefaults(command));

    /// <summary>The command as Spectre describes it, its options carrying the defaults found by <see cref="OptionDefaults"/>.</summary>
    sealed class WithDefaults(ICommandInfo command) : ICommandInfo
    {
        public string Name => command.Name;
        public string? Description => command.Description;
        public bool IsBranch => command.IsBranch;
        public bool IsDefaultCommand => command.IsDefaultCommand;
        public bool IsHidden => command.IsHidden;
        public ICommandInfo? Parent => command.Parent;
        public IReadOnlyList<string[]> Examples => command.Examples;
        public IReadOnlyList<ICommandInfo> Commands => command.Commands;
        public ICommandInfo? DefaultCommand => command.DefaultCommand;

        public IReadOnlyList<ICommandParameter> Parameters
        {
            get
            {
                var settingsType = command.GetType().GetProperty("SettingsType")?.GetValue(command) as Type;
                return [.. command.Parameters.Select(p => p is ICommandOption option && settingsType is not null && option.DefaultValue is null && !option.IsFlag
                    && Property(settingsType, option) is { } property && OptionDefaults.Of(settingsType, property) is { } value
                        ? new OptionWithDefault(option, Shown(value)) : p)];
            }
        }

        static PropertyInfo? Property(Type settingsType, ICommandOption option) => settingsType.GetProperties()
            .FirstOrDefault(p => p.GetCustomAttribute<CommandOptionAttribute>() is { } a && a.LongNames.SequenceEqual(option.LongNames));

        static string Shown(object value) => value switch
        {
            string { Length: 0 } => "\"\"",
            double d => d.ToString("G", System.Globalization.CultureInfo.InvariantCulture).ToLowerInvariant(),
            _ => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) ?? "",
        };
    }

    sealed class OptionWithDefault(ICommandOption option, string value) : ICommandOption
    {
        public IReadOnlyList<string> LongNames => option.LongNames;
        public IReadOnlyList<string> ShortNames => option.ShortNames;
        public string? ValueName => option.ValueName;
        public bool ValueIsOptional => option.ValueIsOptional;
        public bool IsFlag => option.IsFlag;
        public bool IsRequired => option.IsRequired;
        public string? Description => option.Description;
        public DefaultValueAttribute? DefaultValue { get; } = new(value);
        public bool IsHidden => option.IsHidden;
    }
}
