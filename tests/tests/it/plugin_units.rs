//! The plugins workspace's own unit tests (the SDK's URL handling, the REST connector's
//! paths, encoding, `Link` headers and cursors), built for this machine and run here so
//! that the workspace's test command covers them.

use std::path::Path;
use std::process::Command;

#[test]
fn the_plugins_unit_tests_pass() {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc runs");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names the host");
    let output = Command::new(cargo)
        .current_dir(&plugins)
        .args(["test", "--locked", "--target", &host])
        .env("CARGO_TARGET_DIR", plugins.join("target"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("cargo runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    assert!(report.contains("cursors_round_trip ... ok"), "{report}");
}

/// The SDK packages on its own: its crate carries the contract's WIT (through the
/// `plugins/sdk/wit` link to `wit/`), so `cargo package` works outside this repository.
#[test]
fn the_sdk_packages_with_its_own_copy_of_the_contract() {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&plugins)
        .args([
            "package",
            "--list",
            "--allow-dirty",
            "--offline",
            "-p",
            "oubli-connector",
        ])
        .env("CARGO_TARGET_DIR", plugins.join("target"))
        .output()
        .expect("cargo runs");
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{listed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in [
        "wit/0.2.0/connector.wit",
        "wit/0.2.0/deps/connector-0.1.0/connector.wit",
        "README.md",
        "src/lib.rs",
    ] {
        assert!(
            listed.lines().any(|l| l == file),
            "{file} is not packaged:\n{listed}"
        );
    }
}
