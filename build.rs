//! Compiles `src/kernels/cuda/*.cu` to PTX with `nvcc`, only when the `cuda` feature is on:
//! a default build needs no CUDA toolkit. `scripts/cuda-toolkit.sh` sets up the toolkit.
//! Environment: `NVCC` (default `nvcc` on PATH), `CUDA_COMPUTE_CAP` (default 90: H100/H200).

use std::path::PathBuf;
use std::process::Command;

const KERNEL_DIR: &str = "src/kernels/cuda";
const KERNELS: &[&str] = &["attention", "attention_blocked", "rmsnorm", "elementwise", "adamw"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CUDA");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed={KERNEL_DIR}");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".to_string());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in KERNELS {
        let src = format!("{KERNEL_DIR}/{name}.cu");
        let ptx = out_dir.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["-ptx", "-O3", "-std=c++17", "-lineinfo"])
            .arg(format!("-arch=sm_{cap}"))
            .arg(format!("-I{KERNEL_DIR}"))
            .arg("-o")
            .arg(&ptx)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run `{nvcc}` for {src} ({e}); see scripts/cuda-toolkit.sh"));
        if !status.success() {
            panic!("nvcc failed on {src} ({status})");
        }
    }
}
