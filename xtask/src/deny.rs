//! `cargo deny` over the dependency tree, as `deny.toml` says: licenses,
//! duplicate versions, sources, and the RustSec advisories whenever their
//! database can be fetched. cargo-deny is installed, pinned, under
//! `target/tools` the first time (crates.io is reachable wherever the
//! build is; GitHub, where the advisory database lives, may not be).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// The cargo-deny release `deny.toml` is written for.
const VERSION: &str = "0.20.2";

pub fn check(root: &Path) -> anyhow::Result<()> {
    let tools = crate::target_dir(root).join("tools");
    let bin = tools.join("bin");
    let installed = Command::new(bin.join("cargo-deny"))
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(VERSION));
    if !installed {
        crate::quietly(
            &format!("cargo install cargo-deny {VERSION} into target/tools (once)"),
            crate::cargo()
                .args(["install", "--locked", "cargo-deny", "--version", VERSION])
                .arg("--root")
                .arg(&tools),
        )?;
    }
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .context("PATH")?;
    crate::run(
        "cargo deny check bans licenses sources",
        crate::cargo().current_dir(root).env("PATH", &path).args([
            "deny",
            "--log-level",
            "error",
            "check",
            "bans",
            "licenses",
            "sources",
        ]),
    )?;
    eprintln!("==> cargo deny check advisories");
    let output = crate::cargo()
        .current_dir(root)
        .env("PATH", &path)
        .args(["deny", "--log-level", "error", "check", "advisories"])
        .output()
        .context("cannot run cargo deny")?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    if unreachable_database(&said) {
        eprintln!(
            "    skipped: the RustSec advisory database (github.com/rustsec/advisory-db) cannot be fetched from this machine"
        );
        return Ok(());
    }
    eprintln!("{said}");
    bail!("cargo deny check advisories failed ({})", output.status)
}

/// Whether cargo-deny failed because it could not fetch the database, not
/// because an advisory matched.
fn unreachable_database(stderr: &str) -> bool {
    let lower = stderr.to_ascii_lowercase();
    [
        "failed to fetch",
        "failed to open advisory database",
        "unable to fetch",
        "could not resolve",
        "connection",
    ]
    .iter()
    .any(|sign| lower.contains(sign))
        && !lower.contains("error[vulnerability]")
        && !lower.contains("error[unsound]")
        && !lower.contains("error[unmaintained]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_told_apart_from_a_finding() {
        assert!(unreachable_database(
            "error: failed to fetch advisory database https://github.com/rustsec/advisory-db: Could not resolve host"
        ));
        assert!(!unreachable_database(
            "error[vulnerability]: Marvin Attack\n  ID: RUSTSEC-2023-0071"
        ));
        assert!(!unreachable_database(
            "error[vulnerability]: x\nfailed to fetch something else"
        ));
    }
}
