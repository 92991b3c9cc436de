using System.Diagnostics;
using Mustafar.AI.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Mustafar.AI.Tests.Backend;

/// <summary>
/// Runs the native test programs on fresh random inputs: op conformance (our backend against ggml's CPU
/// backend) and the Mustafar cache tests (pruning rule, attention on compressed cells, local window, state).
/// </summary>
public sealed class NativeTestProgramTests(ITestOutputHelper output)
{
    [Fact]
    public void EveryClaimedOpMatchesGgmlCpuBackendOnFreshRandomInputs() => Run("op_conformance", "cases failed");

    [Fact]
    public void MustafarCachePrunesAttendsAndKeepsWindowsLikeItsSpecification() => Run("kv_tests", "checks failed");

    private void Run(string program, string summary)
    {
        string exe = Path.Combine(TestPaths.NativeBuildDir, program);
        Assert.True(File.Exists(exe), $"{exe} was not built (dotnet build runs CMake on native/)");
        string seed = Random.Shared.NextInt64(1, long.MaxValue).ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var process = Process.Start(new ProcessStartInfo(exe, seed) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        string stdout = process.StandardOutput.ReadToEnd();
        string stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        output.WriteLine(stdout);
        output.WriteLine(stderr);
        Assert.True(process.ExitCode == 0, $"{program} failed (seed {seed}):\n{stdout}\n{stderr}");
        Assert.Matches($@"(?m)^0 of \d+ {summary}", stdout);
    }
}
