//! Compiles simdjson (vendored, unmodified) and the few `extern "C"` functions Rust
//! calls, and links the C++ runtime statically where the compiler has it, so the
//! binary runs where no C++ runtime is installed (the container's distroless image).

use std::path::Path;
use std::process::Command;

fn main() {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        // Always optimised: tests parse many documents, and simdjson at -O0 is ~20 × slower.
        .opt_level(3)
        // simdjson picks its kernel (AVX-512, AVX2, SSE, scalar) at run time, so the
        // build stays portable.
        .define("SIMDJSON_EXCEPTIONS", "0")
        .include("vendor/simdjson")
        .file("vendor/simdjson/simdjson.cpp")
        .file("src/bridge.cpp")
        .warnings(false);
    if let Some(dir) = static_stdcxx(&build) {
        build.cpp_link_stdlib(None);
        println!("cargo:rustc-link-search=native={dir}");
        println!("cargo:rustc-link-lib=static=stdc++");
    }
    build.compile("simdjson_tape");
    println!("cargo:rerun-if-changed=src/bridge.cpp");
    println!("cargo:rerun-if-changed=vendor/simdjson");
}

/// The folder of GNU's static C++ runtime (`libstdc++.a`), on Linux when installed.
fn static_stdcxx(build: &cc::Build) -> Option<String> {
    if std::env::var("CARGO_CFG_TARGET_OS").ok()? != "linux" {
        return None;
    }
    let compiler = build.try_get_compiler().ok()?;
    let out = Command::new(compiler.path())
        .arg("-print-file-name=libstdc++.a")
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    // Without it, the compiler prints the bare name back.
    let dir = Path::new(path.trim()).parent()?;
    (dir.join("libstdc++.a").is_file()).then(|| dir.display().to_string())
}
