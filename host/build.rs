//! Builds the plugins workspace for `wasm32-wasip2` so the binary can embed oubli's
//! first-party connectors and the tests can load the test plugins.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.parent().expect("host/ sits in the repository");
    let plugins = root.join("plugins");
    for watched in [
        "Cargo.toml",
        "Cargo.lock",
        "sdk",
        "sql",
        "rest",
        "testkit",
        "evidencekit",
        "compat-newsletter",
        "sdk-0.1",
        ".cargo",
    ] {
        println!("cargo:rerun-if-changed={}", plugins.join(watched).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    // The hand-written example connector is a member of the plugins' workspace.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("examples").join("email-change-plugin").display()
    );

    ensure_wasm_target();
    let target_dir = plugins.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--locked",
        ])
        .env("CARGO_TARGET_DIR", &target_dir);
    // The outer build's flags are for the host target; the plugins need their own.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .expect("run cargo to build the plugins workspace");
    assert!(
        status.success(),
        "building plugins/ for wasm32-wasip2 failed; run `rustup target add wasm32-wasip2` if the target is missing"
    );
    println!(
        "cargo:rustc-env=OUBLI_PLUGINS_DIR={}",
        target_dir.join("wasm32-wasip2").join("release").display()
    );
}

/// rustup installs the targets of `rust-toolchain.toml` only with a new toolchain; on a
/// machine that already had the toolchain, add the plugins' target here so that the
/// README's commands work on their own.
fn ensure_wasm_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    let installed = sysroot.is_some_and(|o| {
        PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
            .join("lib/rustlib/wasm32-wasip2")
            .exists()
    });
    if installed {
        return;
    }
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", "wasm32-wasip2"]);
    if let Some(toolchain) = std::env::var_os("RUSTUP_TOOLCHAIN") {
        rustup.arg("--toolchain").arg(toolchain);
    }
    match rustup.status() {
        Ok(status) if status.success() => {}
        _ => println!(
            "cargo:warning=could not add the wasm32-wasip2 target with rustup; the plugins will not build"
        ),
    }
}
