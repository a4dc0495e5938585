{
  "targets": [
    {
      "target_name": "m3_torch",
      "sources": ["src/addon.cc", "src/dist.cc"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(node locate-libtorch.js include)"
      ],
      "defines": ["NAPI_CPP_EXCEPTIONS", "NAPI_VERSION=8", "<!@(node locate-libtorch.js defines)"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++14"],
      "cflags_cc": ["-std=c++17", "-O2", "-fexceptions", "-frtti", "-Wno-unused-parameter", "-Wno-deprecated-declarations"],
      "libraries": [
        "-L<!(node locate-libtorch.js lib)",
        "-Wl,-rpath,<!(node locate-libtorch.js lib)",
        "<!@(node locate-libtorch.js libs)"
      ]
    }
  ]
}
