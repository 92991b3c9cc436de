using System.Diagnostics;

namespace Mustafar.AI.Tests.Infrastructure;

/// <summary>Runs a sample program of samples/ as a user does, from its build next to the tests.</summary>
internal static class SamplePrograms
{
    public static async Task<(int ExitCode, string Log)> RunAsync(string project, params string[] args)
    {
        // Built next to the tests (same configuration), as part of the solution.
        string configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;
        string dll = Path.Combine(TestPaths.RepoRoot, "samples", project, "bin", configuration, "net10.0", $"{project}.dll");
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
