using static TorchSharp.torch;
Console.WriteLine(TorchSharp.torch.__version__);
var a = randn(256, 256);
Console.WriteLine(matmul(a, a).sum().item<float>());
