//! The JavaScript client's tests (`clients/js/test/*.test.js`, Node's own
//! runner) against the real `wshub` binary, with the client's pinned dev
//! dependencies (`ws`, `typescript`, `puppeteer-core`) installed from npm
//! under `target/js-client` by `npm ci`, never into the source tree.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::Totals;

/// Builds the binary, installs the dev dependencies when their lock file
/// changed, runs every test file, and returns the runner's counts.
pub fn test(root: &Path) -> anyhow::Result<Totals> {
    let target = crate::target_dir(root);
    // The binary `cargo test --workspace` builds (for the integration
    // tests) is the one to test; a plain `cargo build` would resolve
    // features differently and rebuild half the graph.
    crate::run(
        "cargo test --workspace --no-run (the wshub binary, as the test build made it)",
        crate::cargo().args(["test", "--workspace", "--no-run"]),
    )?;
    let modules = install(&root.join("clients/js"), &target.join("js-client"))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("clients/js/test"))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.to_string_lossy().ends_with(".test.js"))
        .collect();
    files.sort();
    eprintln!("==> node --test clients/js/test ({} files)", files.len());
    let (totals, status) = crate::run_counted(
        "node",
        Command::new("node")
            .args(["--test", "--test-reporter=spec"])
            .args(&files)
            .current_dir(root.join("clients/js"))
            .env("WSHUB_BIN", target.join("debug/wshub"))
            .env("WSHUB_NODE_MODULES", &modules)
            .env("CARGO_TARGET_DIR", &target),
        Totals::add_node,
    )?;
    if !status.success() || totals.failed > 0 {
        bail!(
            "the JS client's tests failed ({status}; {} failed)",
            totals.failed
        );
    }
    Ok(totals)
}

/// `npm ci` into `dir` from the package's manifest and lock file; skipped
/// when `dir` already holds an install of the same lock file.
pub(crate) fn install(package: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let lock = std::fs::read_to_string(package.join("package-lock.json"))
        .context("clients/js/package-lock.json")?;
    let stamp = dir.join(".wshub-lock");
    let modules = dir.join("node_modules");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(lock.as_str()) {
        return Ok(modules);
    }
    let scratch = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(package.join(file), scratch.join(file))?;
    }
    crate::run(
        "npm ci (the JS client's pinned dev dependencies, under target/)",
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&scratch),
    )?;
    std::fs::write(scratch.join(".wshub-lock"), &lock)?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&scratch, dir)?;
    Ok(modules)
}
