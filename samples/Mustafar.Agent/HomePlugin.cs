using System.ComponentModel;
using System.Text.Json.Serialization;
using Microsoft.SemanticKernel;

namespace Mustafar.Agent;

/// <summary>A room of the sample's house (a closed set, so the model's call is constrained to these names).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<Room>))]
public enum Room
{
    /// <summary>The kitchen.</summary>
    Kitchen,

    /// <summary>The bedroom.</summary>
    Bedroom,

    /// <summary>The garden.</summary>
    Garden,
}

/// <summary>The functions the agent may call: the lights of a small house.</summary>
public sealed class HomePlugin
{
    private readonly HashSet<Room> _on = [];

    /// <summary>The rooms whose light is on, for the sample's last line.</summary>
    public IReadOnlyCollection<Room> LightsOn => _on;

    /// <summary>Switches a room's light.</summary>
    [KernelFunction("switch_light")]
    [Description("Switches the light of a room on or off.")]
    public string SwitchLight([Description("The room.")] Room room, [Description("True to switch it on, false to switch it off.")] bool on)
    {
        if (on)
        {
            _on.Add(room);
        }
        else
        {
            _on.Remove(room);
        }

        return $"The {room} light is now {(on ? "on" : "off")}.";
    }

    /// <summary>Says which lights are on.</summary>
    [KernelFunction("lights_on")]
    [Description("Lists the rooms whose light is on.")]
    public string ListLightsOn() => _on.Count == 0 ? "No light is on." : $"Lights on: {string.Join(", ", _on)}.";
}
