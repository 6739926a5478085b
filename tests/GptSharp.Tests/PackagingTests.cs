namespace GptSharp.Tests;

/// <summary>
/// The library on NuGet and the CLI as a .NET tool, as a user takes them: both packed into a folder feed; a fresh console
/// project references GptSharp from it and answers a chat through <c>IChatClient</c>; the tool is installed from it and
/// runs <c>gptsharp doctor</c>.
/// </summary>
public class PackagingTests(TrainedTokenizerFixture fixture) : IClassFixture<TrainedTokenizerFixture>
{
    [Fact]
    public void TheLibraryAndTheToolInstallFromTheirPackagesAndWork()
    {
        using var dir = new TempDirectory();
        // A version no earlier run used, so the global package cache cannot hand back an older package of the same number.
        string version = $"0.1.0-test{Guid.NewGuid():N}"[..18];
        string feed = dir.File("feed");
        string packages = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        try
        {
            foreach (string project in new[] { "src/GptSharp/GptSharp.csproj", "src/GptSharp.Cli/GptSharp.Cli.csproj" })
            {
                var (packed, packLog) = NodePackages.Run("dotnet", Repository.Root, "pack", project, "--no-build", "-c", Repository.Configuration, "-o", feed, $"-p:Version={version}");
                Assert.True(packed == 0, packLog);
            }
            Assert.True(File.Exists(Path.Combine(feed, $"GptSharp.{version}.nupkg")));
            Assert.True(File.Exists(Path.Combine(feed, $"GptSharp.Cli.{version}.nupkg")));

            // A user's console project: the package from the feed, a chat through Microsoft.Extensions.AI.
            fixture.SaveInitialRun(dir.File("run"), context: 64);
            string app = dir.File("app");
            Directory.CreateDirectory(app);
            File.WriteAllText(Path.Combine(app, "app.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup>
                    <OutputType>Exe</OutputType>
                    <TargetFramework>net10.0</TargetFramework>
                    <ImplicitUsings>enable</ImplicitUsings>
                    <NoWarn>NU1603</NoWarn>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="GptSharp" Version="{version}" />
                  </ItemGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <add key="local" value="{feed}" />
                  </packageSources>
                </configuration>
                """);
            File.WriteAllText(Path.Combine(app, "Program.cs"), """
                using GptSharp.Serving;
                using Microsoft.Extensions.AI;

                using var gpt = GptChatClient.Load(args[0]);
                IChatClient client = gpt;
                ChatResponse answer = await client.GetResponseAsync("Hello", new ChatOptions { MaxOutputTokens = 6, Temperature = 0 });
                Console.WriteLine($"finish {answer.FinishReason}, {answer.Usage?.OutputTokenCount} tokens");
                """);
            var (ran, runLog) = NodePackages.Run("dotnet", app, "run", "--", dir.File("run"));
            Assert.True(ran == 0, runLog);
            Assert.Contains("finish length, 6 tokens", runLog);

            // The tool, installed from the feed into a folder of its own.
            string tools = dir.File("tools");
            var (installed, installLog) = NodePackages.Run("dotnet", dir.Path, "tool", "install", "GptSharp.Cli", "--tool-path", tools, "--add-source", feed, "--version", version);
            Assert.True(installed == 0, installLog);
            var (doctor, doctorLog) = CliProcess.Run(Path.Combine(tools, "gptsharp"), "doctor");
            Assert.True(doctor == 0, doctorLog);
            Assert.Contains("libtorch", doctorLog);
            Assert.Contains("matmul fp32", doctorLog);
        }
        finally
        {
            foreach (string id in new[] { "gptsharp", "gptsharp.cli" })
            {
                string cached = Path.Combine(packages, id, version);
                if (Directory.Exists(cached)) Directory.Delete(cached, recursive: true);
            }
        }
    }
}
