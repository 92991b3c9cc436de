using Mustafar.AI.Tests.Infrastructure;

namespace Mustafar.AI.Tests.Samples;

/// <summary>samples/Mustafar.Agent as a user runs it (README), on the tiny story model with a required function.</summary>
public sealed class AgentSampleTests
{
    [SkippableFact]
    public async Task TheAgentCallsTheRequiredPluginFunctionAndReportsItsEffect()
    {
        var (exitCode, log) = await SamplePrograms.RunAsync("Mustafar.Agent", "--model", TestPaths.Stories, "--require", "switch_light");

        Assert.True(exitCode == 0, log);
        var call = log.Split('\n').Single(l => l.StartsWith("call: home_switch_light(room: ", StringComparison.Ordinal));
        string room = call.Split("room: ")[1].Split(',')[0];
        bool on = call.Contains("on: True", StringComparison.Ordinal);
        Assert.Contains($"result: The {room} light is now {(on ? "on" : "off")}.", log, StringComparison.Ordinal);
        Assert.Contains($"lights on: {(on ? room : "none")}", log, StringComparison.Ordinal);
        Assert.Contains("\nassistant: ", log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnUnknownFunctionIsRefusedWithTheNamesThePluginHas()
    {
        var (exitCode, log) = await SamplePrograms.RunAsync("Mustafar.Agent", "--model", "/nonexistent/model.gguf", "--require", "open_door");  // refused before any load
        Assert.Equal(2, exitCode);
        Assert.Contains("the home plugin has no function open_door (switch_light, lights_on)", log, StringComparison.Ordinal);
    }
}
