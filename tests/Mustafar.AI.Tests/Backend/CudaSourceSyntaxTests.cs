using System.Diagnostics;
using Mustafar.AI.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Mustafar.AI.Tests.Backend;

/// <summary>
/// CI has no CUDA toolkit, so nothing else here compiles the CUDA flavour: clang's CUDA front end checks every
/// .cu file (device and host side) against our stand-ins for the CUDA headers (tests/gpu/syntax-check.sh).
/// </summary>
public sealed class CudaSourceSyntaxTests(ITestOutputHelper output)
{
    [SkippableFact]
    public void EveryCudaSourcePassesClangsSyntaxAndTypeCheck()
    {
        string? clang = new[] { "/usr/bin/clang++-14", "/usr/bin/clang++" }.FirstOrDefault(File.Exists);
        Skip.If(clang is null, "clang++ is not installed: the CUDA sources' syntax check needs its CUDA front end");
        string script = Path.Combine(TestPaths.RepoRoot, "tests", "gpu", "syntax-check.sh");
        using var process = Process.Start(new ProcessStartInfo("bash", script) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        output.WriteLine(stdout);
        output.WriteLine(stderr.Result);
        Assert.True(process.ExitCode == 0, $"syntax check failed:\n{stdout}\n{stderr.Result}");
        Assert.Matches(@"syntax check: \d+ files, no errors or warnings", stdout);
    }
}
