//! Project automation: `cargo xtask <command>`.
//!
//! - `test`: everything CI runs — format check, clippy with warnings denied,
//!   the hub purity check, rustdoc with warnings denied, the whole test suite
//!   (which installs its pinned Python/Node peers under target/), and the
//!   quick benchmark as a smoke test that fails on any lost message.
//! - `bench [--quick] [--compare OLD.json]`: the benchmark matrix.
//! - `doctor [--connections N] [--write-sysctl]`: kernel and ulimit check.

mod bench;
mod doctor;
mod report;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| "help".into());
    let rest: Vec<String> = args.collect();
    match command.as_str() {
        "test" | "ci" => test(&rest),
        "bench" => bench::run(&rest, &workspace_root()),
        "doctor" => doctor::run(&rest, &workspace_root().join("deploy/sysctl/99-wshub.conf")),
        "help" | "--help" | "-h" => {
            print_help();
            Ok(())
        }
        other => {
            print_help();
            bail!("unknown xtask command {other:?}")
        }
    }
}

fn print_help() {
    eprintln!(
        "cargo xtask <command>\n\n\
         commands:\n  \
         test    format check, clippy -D warnings, hub purity, rustdoc, all tests, bench --quick (what CI runs)\n  \
         bench   [--quick] [--compare OLD.json]: benchmark matrix, reports in target/bench/\n  \
         doctor  [--connections N] [--write-sysctl]: kernel and ulimit readiness for N connections\n"
    );
}

fn workspace_root() -> PathBuf {
    // xtask's manifest lives one level below the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(step: &str, command: &mut Command) -> anyhow::Result<()> {
    eprintln!("==> {step}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    check_hub_purity()?;
    run(
        "cargo doc",
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    run(
        "cargo test",
        cargo().args(["test", "--workspace"]).args(extra),
    )?;
    eprintln!("==> cargo xtask bench --quick (smoke test: fails on any lost message)");
    bench::run(&["--quick".to_owned()], &workspace_root())
}

/// The hub must stay runtime-agnostic: no tokio, hyper or mio below it.
fn check_hub_purity() -> anyhow::Result<()> {
    eprintln!("==> hub purity (no tokio/hyper/mio under wshub-hub)");
    let output = cargo()
        .args([
            "tree",
            "-p",
            "wshub-hub",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .context("cannot run cargo tree")?;
    if !output.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&output.stdout);
    let offenders: Vec<&str> = tree
        .lines()
        .filter(|line| {
            let name = line.split_whitespace().next().unwrap_or("");
            matches!(name, "tokio" | "hyper" | "mio")
        })
        .collect();
    if !offenders.is_empty() {
        bail!("wshub-hub depends on a runtime: {offenders:?}");
    }
    Ok(())
}
