using System.Diagnostics;
using Mustafar.AI.Tests.Infrastructure;

namespace Mustafar.AI.Tests.Samples;

/// <summary>samples/Mustafar.Agent as a user runs it (README), on the tiny story model with a required function.</summary>
public sealed class AgentSampleTests
{
    [SkippableFact]
    public async Task TheAgentCallsTheRequiredPluginFunctionAndReportsItsEffect()
    {
        var (exitCode, log) = await RunAgentAsync("--model", TestPaths.Stories, "--require", "switch_light");

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
        var (exitCode, log) = await RunAgentAsync("--model", "/nonexistent/model.gguf", "--require", "open_door");  // refused before any load
        Assert.Equal(2, exitCode);
        Assert.Contains("the home plugin has no function open_door (switch_light, lights_on)", log, StringComparison.Ordinal);
    }

    private static async Task<(int ExitCode, string Log)> RunAgentAsync(params string[] args)
    {
        // Built next to the tests (same configuration), as part of the solution.
        string configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;
        string dll = Path.Combine(TestPaths.RepoRoot, "samples", "Mustafar.Agent", "bin", configuration, "net10.0", "Mustafar.Agent.dll");
        Assert.True(File.Exists(dll), $"{dll} is missing: build the solution (dotnet test Mustafar.AI.sln builds it)");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(dll);
        args.ToList().ForEach(start.ArgumentList.Add);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(2));
        return (process.ExitCode, await stdout + await stderr);
    }
}
