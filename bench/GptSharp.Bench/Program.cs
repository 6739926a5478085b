using GptSharp.Runtime;
using GptSharp.Bench;

// Benchmarks print figures; they assert nothing. Usage: dotnet run -c Release --project bench/GptSharp.Bench -- [tokenizer|matmul|model|memory|breakdown|serve [prefill chunks]|dp|zero1|fuzz [cases] [seed]|rl-seeds RUN [seeds] [--pretrain]|open-model|decode [rounds] [presets]|decode-quality RUN SHARD [windows]|rollout SFT_RUN [rounds]|rl-mismatch RUN...|rl-algorithms RUN [steps] [seeds] [variants]|recipe DATA_DIR [seeds] [budget-s] [out.png]|grammar [rounds]|overopt RUN [steps] [targets]|bert ROOT [pretrain-steps] [finetune-steps] [seeds] [context]|bert-poems ROOT TOKENIZER [steps]|bert-contrastive POEMS_RUN SPAM_RUN [steps] [seeds]|speculative [rounds] [RUN]|prefill [rounds]|generate [rounds] [tokens]|pack [rounds]|multi-lora|all]
string which = args.Length > 0 ? args[0] : "all";
var runtime = TorchRuntime.Initialize();
Console.WriteLine($"# GptSharp bench — {SystemReport.CpuModel()}, {Environment.ProcessorCount} cores, torch threads {runtime.Threads}, " +
                  $"TorchSharp {SystemReport.TorchSharpVersion}, libtorch {SystemReport.LibTorchVersion}, .NET {Environment.Version}");
var benches = new Dictionary<string, Action>
{
    ["tokenizer"] = TokenizerBench.Run,
    ["model"] = ModelBench.Run,
    ["memory"] = MemoryBench.Run,
    ["matmul"] = MatmulBench.Run,
    ["breakdown"] = StepBreakdownBench.Run,
    ["serve"] = () => ServeBench.Run(args),
    ["dp"] = DataParallelBench.Run,
    ["zero1"] = DataParallelBench.RunZero1,
    ["fuzz"] = FuzzBench.Run,
    ["rl-seeds"] = () => RlSeedsBench.Run(args),
    ["open-model"] = OpenModelBench.Run,
    ["decode"] = () => DecodeBench.Run(args),
    ["decode-quality"] = () => DecodeQualityBench.Run(args),
    ["rollout"] = () => RolloutBench.Run(args),
    ["rl-mismatch"] = () => RlMismatchBench.Run(args),
    ["rl-algorithms"] = () => RlAlgorithmsBench.Run(args),
    ["recipe"] = () => RecipeBench.Run(args),
    ["grammar"] = () => GrammarBench.Run(args),
    ["overopt"] = () => OverOptimisationBench.Run(args),
    ["bert"] = () => BertBench.Run(args),
    ["bert-poems"] = () => BertBench.RunPoems(args),
    ["bert-contrastive"] = () => BertBench.RunContrastive(args),
    ["speculative"] = () => SpeculativeBench.Run(args),
    ["prefill"] = () => PrefillBench.Run(args),
    ["generate"] = () => GenerateBench.Run(args),
    ["pack"] = () => PackBench.Run(args),
    ["multi-lora"] = MultiLoraBench.Run,
    ["multi-lora-one"] = () => MultiLoraBench.RunOne(args),
};
if (which == "all") foreach (var (name, bench) in benches) { if (name is not ("fuzz" or "rl-seeds" or "open-model" or "decode" or "decode-quality" or "rollout" or "rl-mismatch" or "rl-algorithms" or "recipe" or "grammar" or "overopt" or "bert" or "bert-poems" or "bert-contrastive" or "speculative" or "prefill" or "generate" or "multi-lora" or "multi-lora-one")) bench(); }
else if (benches.TryGetValue(which, out var bench)) bench();
else { Console.Error.WriteLine($"unknown bench '{which}'; choose one of: all, {string.Join(", ", benches.Keys)}"); return 2; }
return 0;
