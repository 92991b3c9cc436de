using System.Diagnostics;
using Mustafar.AI.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Mustafar.AI.Tests.Backend;

/// <summary>
/// Runs the native test programs on fresh random inputs: op conformance (our backend against ggml's CPU
/// backend) and the Mustafar cache tests (pruning rule, attention on compressed cells, local window, state);
/// and, since CI has no CUDA toolkit to compile the CUDA flavour, clang's syntax check of its sources.
/// </summary>
public sealed class NativeTestProgramTests(ITestOutputHelper output)
{
    [Fact]
    public void EveryClaimedOpMatchesGgmlCpuBackendOnFreshRandomInputs() => Run("op_conformance", "cases failed");

    [Fact]
    public void MustafarCachePrunesAttendsAndKeepsWindowsLikeItsSpecification() => Run("kv_tests", "checks failed");

    /// <summary>clang's CUDA front end over every .cu file (but merge_cuda_bench, compute capability 9.0 only),
    /// device and host side, against our stand-ins for the CUDA headers (tests/gpu/syntax-check.sh).</summary>
    [SkippableFact]
    public void EveryCudaSourcePassesClangsSyntaxAndTypeCheck()
    {
        Skip.IfNot(new[] { "/usr/bin/clang++-14", "/usr/bin/clang++" }.Any(File.Exists),
            "clang++ is not installed: the CUDA sources' syntax check needs its CUDA front end");
        string stdout = Execute("bash", Path.Combine(TestPaths.RepoRoot, "tests", "gpu", "syntax-check.sh"), "the CUDA sources' syntax check");
        Assert.Matches(@"syntax check: \d+ files, no errors or warnings", stdout);
    }

    private void Run(string program, string summary)
    {
        string exe = Path.Combine(TestPaths.NativeBuildDir, program);
        Assert.True(File.Exists(exe), $"{exe} was not built (dotnet build runs CMake on native/)");
        string seed = Random.Shared.NextInt64(1, long.MaxValue).ToString(System.Globalization.CultureInfo.InvariantCulture);
        string stdout = Execute(exe, seed, $"{program} (seed {seed})");
        Assert.Matches($@"(?m)^0 of \d+ {summary}", stdout);
    }

    // Runs the program to its end and returns its output, failing with both streams when it exits non-zero.
    private string Execute(string file, string arguments, string what)
    {
        using var process = Process.Start(new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        output.WriteLine(stdout);
        output.WriteLine(stderr.Result);
        Assert.True(process.ExitCode == 0, $"{what} failed:\n{stdout}\n{stderr.Result}");
        return stdout;
    }
}
