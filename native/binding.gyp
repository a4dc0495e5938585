# Every flag comes from locate-libtorch.js, which build.js's direct g++ path uses too. Its defines come after
# node-gyp's own, so its _GLIBCXX_USE_CXX11_ABI (the libtorch's ABI) wins over Node's default.
{
  "targets": [
    {
      "target_name": "m3_torch",
      "sources": ["src/addon.cc", "src/dist.cc", "src/adamw.cc", "src/gemm.cc", "src/layer.cc"],
      "include_dirs": ["<!@(node locate-libtorch.js include)"],
      "defines": ["<!@(node locate-libtorch.js defines)"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++14", "-std=gnu++20"],
      "cflags_cc": ["<!@(node locate-libtorch.js cflags)"],
      "libraries": ["<!@(node locate-libtorch.js libs)"]
    }
  ]
}
