//! Compiles simdjson (vendored, unmodified) and the few `extern "C"` functions Rust calls.

fn main() {
    cc::Build::new()
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
        .warnings(false)
        .compile("simdjson_tape");
    println!("cargo:rerun-if-changed=src/bridge.cpp");
    println!("cargo:rerun-if-changed=vendor/simdjson");
}
