using System.Diagnostics;
using Mustafar.AI.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Mustafar.AI.Tests.Backend;

/// <summary>Runs the native op conformance program (our backend against ggml's CPU backend) on fresh random inputs.</summary>
public sealed class OpConformanceTests(ITestOutputHelper output)
{
    [Fact]
    public void EveryClaimedOpMatchesGgmlCpuBackendOnFreshRandomInputs()
    {
        string exe = Path.Combine(TestPaths.NativeBuildDir, "op_conformance");
        Assert.True(File.Exists(exe), $"{exe} was not built (dotnet build runs CMake on native/)");
        string seed = Random.Shared.NextInt64(1, long.MaxValue).ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var process = Process.Start(new ProcessStartInfo(exe, seed) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        string stdout = process.StandardOutput.ReadToEnd();
        string stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        output.WriteLine(stdout);
        output.WriteLine(stderr);
        Assert.True(process.ExitCode == 0, $"op_conformance failed (seed {seed}):\n{stdout}\n{stderr}");
        Assert.Matches(@"(?m)^0 of \d+ cases failed", stdout);
    }
}
