using System.Reflection;

namespace Mustafar.AI.Tests.Infrastructure;

/// <summary>Where the shared models and the native build live, seen from the test assembly.</summary>
internal static class TestPaths
{
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>../shared/models beside the repository (CI has it; a user's clone may not).</summary>
    public static string ModelsDir { get; } = Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared", "models"));

    public static string NativeBuildDir { get; } = typeof(MustafarOptions).Assembly
        .GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "MustafarNativeBuildDir").Value!;

    public static string Stories => Model("stories260K-f32.gguf");

    public static string BabyLlama => Model("babyllama-tok105-f32.gguf");

    public static string Recall => Model("recall-hd128-q8_0.gguf");

    /// <summary>The path of a shared model, or a skip naming what is missing.</summary>
    public static string Model(string file)
    {
        string path = Path.Combine(ModelsDir, file);
        Skip.IfNot(File.Exists(path), $"shared model {path} is not present (tests that need ../shared/models skip without it)");
        return path;
    }

    public static string TempFile(string name) =>
        Path.Combine(Directory.CreateTempSubdirectory("mustafar-tests-").FullName, name);

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Mustafar.AI.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"Mustafar.AI.sln not found above {AppContext.BaseDirectory}");
    }
}
