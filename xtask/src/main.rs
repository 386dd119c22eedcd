//! Project automation: `cargo xtask <command>`.
//!
//! - `test`: everything CI runs — format check, clippy with warnings denied,
//!   the hub purity check, rustdoc with warnings denied, `cargo deny`
//!   (licenses, duplicate versions, sources, advisories), the whole test suite
//!   (which installs its pinned Python/Node peers under target/), the JS
//!   client's tests with Node's runner against the built binary, and the
//!   quick benchmark on the dev build as a smoke test that fails on any
//!   lost message.
//! - `bench [--quick] [--compare OLD.json]`: the benchmark matrix.
//! - `doctor [--connections N] [--write-sysctl]`: kernel and ulimit check.
//! - `test-js`: only the JS client's and web console's tests.
//! - `fuzz [--time 10m]`: the frame reader's property and differential
//!   tests, run with many more cases and a fresh seed each round until the
//!   time is up.

mod bench;
mod deny;
mod doctor;
mod js;
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
        "fuzz" => fuzz(&rest),
        "test-js" => {
            let totals = js::test(&workspace_root())?;
            println!(
                "tests: {} passed, {} failed, {} skipped",
                totals.passed, totals.failed, totals.ignored
            );
            Ok(())
        }
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
         test    format check, clippy -D warnings, hub purity, rustdoc, cargo deny, all tests, JS client tests, bench --quick --debug (what CI runs)\n  \
         bench   [--quick] [--debug] [--only NAME[,NAME]] [--compare OLD.json]: benchmark matrix, reports in target/bench/\n  \
         doctor  [--connections N] [--write-sysctl]: kernel and ulimit readiness for N connections\n  \
         fuzz    [--time 10m]: the frame reader's property tests, longer (each round a fresh seed)\n  \
         test-js the JS client's and web console's tests alone (Node's runner, Chromium)\n"
    );
}

fn workspace_root() -> PathBuf {
    // xtask's manifest lives one level below the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// Where cargo builds: `CARGO_TARGET_DIR`, or `target/` in the workspace.
fn target_dir(root: &std::path::Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// A cargo command without what `cargo run` put in xtask's environment
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …): build scripts that watch those
/// would otherwise see a change, and their crates rebuild, whenever one
/// switches between plain cargo and `cargo xtask`.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if is_set_by_cargo_run(name) {
            command.env_remove(name);
        }
    }
    command
}

fn is_set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_RUSTC_CURRENT_DIR"
        )
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

/// Runs `command` with its output held back (dpkg prints a line per file),
/// showing the last of it only when it fails.
fn quietly(step: &str, command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !output.status.success() {
        let text =
            String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        for line in tail.iter().rev() {
            eprintln!("    {line}");
        }
        bail!("{step} failed ({})", output.status);
    }
    Ok(())
}

/// What the suite drives that the language registries do not provide: the
/// command to look for and the Debian package that brings it.
const PREREQUISITES: &[(&str, &str)] = &[
    ("python3", "python3"),
    ("node", "nodejs"),
    ("npm", "npm"),
    ("chromium", "chromium"),
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("nats-server", "nats-server"),
    ("systemd-analyze", "systemd"),
    ("promtool", "prometheus"),
];

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
}

/// Checks the system prerequisites before anything is built. As root on
/// Debian the missing packages are installed (as `.ci/run` does); otherwise
/// one line says what to install.
fn check_prerequisites() -> anyhow::Result<()> {
    let missing: Vec<(&str, &str)> = PREREQUISITES
        .iter()
        .copied()
        .filter(|(command, _)| !on_path(command))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if is_root && on_path("apt-get") {
        eprintln!(
            "==> installing missing prerequisites with apt-get: {}",
            packages.join(" ")
        );
        quietly(
            "apt-get update",
            Command::new("apt-get").args(["update", "-qq"]),
        )?;
        quietly(
            "apt-get install",
            Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(&packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        return Ok(());
    }
    bail!(
        "missing prerequisites: {}; install them first (Debian: sudo apt-get install {})",
        missing
            .iter()
            .map(|(command, _)| *command)
            .collect::<Vec<_>>()
            .join(", "),
        packages.join(" ")
    )
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    check_prerequisites()?;
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
    deny::check(&workspace_root())?;
    // --no-fail-fast: one failing test binary must not hide the others, and
    // the closing line counts every test.
    let mut totals = run_tests(
        cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(extra),
    )?;
    let js = js::test(&workspace_root())?;
    totals.passed += js.passed;
    totals.failed += js.failed;
    totals.ignored += js.ignored;
    // The dev build the tests made: the smoke run checks that nothing is
    // lost, and a release build would cost CI about 5 minutes.
    eprintln!("==> cargo xtask bench --quick --debug (smoke test: fails on any lost message)");
    bench::run(
        &["--quick".to_owned(), "--debug".to_owned()],
        &workspace_root(),
    )?;
    // One closing line for the whole suite: cargo prints a summary per test
    // binary, and the last of those is often a doc-test binary with none.
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(())
}

/// Runs the frame reader's generators (`crates/transport/src/ws/props.rs`)
/// in rounds of many cases, each with a fresh seed, until `--time` is up.
fn fuzz(args: &[String]) -> anyhow::Result<()> {
    let time = match args {
        [] => std::time::Duration::from_secs(600),
        [flag, value] if flag == "--time" => parse_duration(value)?,
        _ => bail!("usage: cargo xtask fuzz [--time 10m]"),
    };
    let deadline = std::time::Instant::now() + time;
    let cases = 200_000;
    let mut round = 0;
    while std::time::Instant::now() < deadline {
        round += 1;
        run(
            &format!("fuzz round {round} ({cases} cases per property)"),
            cargo()
                .args([
                    "test",
                    "--release",
                    "-p",
                    "wshub-transport",
                    "--lib",
                    "ws::props",
                    "--",
                    "--test-threads=2",
                ])
                .env("PROPTEST_CASES", cases.to_string()),
        )?;
    }
    eprintln!(
        "==> fuzz: {round} rounds, {} cases per property, no failure",
        round * cases
    );
    Ok(())
}

/// `90s`, `10m`, `1h`, or plain seconds.
fn parse_duration(text: &str) -> anyhow::Result<std::time::Duration> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a duration like 90s, 10m or 1h"))?;
    let seconds = match unit {
        "" | "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => bail!("{text:?} is not a duration like 90s, 10m or 1h"),
    };
    Ok(std::time::Duration::from_secs(seconds))
}

#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Counts `count` tests under the word the runner used for them.
    fn count(&mut self, word: &str, count: &str) {
        let Ok(count) = count.parse::<u64>() else {
            return;
        };
        match word {
            "passed" | "pass" => self.passed += count,
            "failed" | "fail" => self.failed += count,
            "ignored" | "skipped" | "todo" => self.ignored += count,
            _ => {}
        }
    }

    /// Adds a line of Node's spec reporter summary: "ℹ pass 12", "ℹ fail 0", "ℹ skipped 1".
    fn add_node(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("ℹ ") else {
            return;
        };
        if let [word, count] = rest.split_whitespace().collect::<Vec<_>>()[..] {
            self.count(word, count);
        }
    }

    /// Adds a cargo summary line: "test result: ok. 9 passed; 0 failed; 1 ignored; …".
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            if let (Some(word), Some(count)) = (words.next(), words.next()) {
                self.count(word, count);
            }
        }
    }
}

/// Runs a test runner, passing its output through and totalling its
/// summary lines with `add`.
fn run_counted(
    name: &str,
    command: &mut Command,
    add: fn(&mut Totals, &str),
) -> anyhow::Result<(Totals, std::process::ExitStatus)> {
    use std::io::BufRead as _;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let mut totals = Totals::default();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            add(&mut totals, &line);
        }
    }
    Ok((totals, child.wait()?))
}

/// Runs `cargo test`, passing its output through and totalling its results.
fn run_tests(command: &mut Command) -> anyhow::Result<Totals> {
    eprintln!("==> cargo test");
    let (totals, status) = run_counted("cargo test", command, Totals::add)?;
    if !status.success() {
        println!(
            "tests: {} passed, {} failed, {} skipped",
            totals.passed, totals.failed, totals.ignored
        );
        bail!("cargo test failed ({status})");
    }
    Ok(totals)
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

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn fuzz_durations_read_as_people_write_them() {
        use std::time::Duration;
        assert_eq!(
            super::parse_duration("10m").unwrap(),
            Duration::from_secs(600)
        );
        assert_eq!(
            super::parse_duration("90s").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            super::parse_duration("45").unwrap(),
            Duration::from_secs(45)
        );
        assert!(super::parse_duration("ten").is_err());
        assert!(super::parse_duration("5d").is_err());
    }

    #[test]
    fn summary_lines_are_totalled() {
        let mut totals = Totals::default();
        totals.add("test result: ok. 9 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        totals.add("test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s");
        totals.add("running 5 tests");
        assert_eq!((totals.passed, totals.failed, totals.ignored), (11, 3, 1));
    }

    #[test]
    fn inner_cargo_runs_without_cargo_runs_package_variables() {
        assert!(super::is_set_by_cargo_run("CARGO_MANIFEST_DIR"));
        assert!(super::is_set_by_cargo_run("CARGO_PKG_VERSION"));
        assert!(!super::is_set_by_cargo_run("CARGO_TARGET_DIR"));
        assert!(!super::is_set_by_cargo_run("CARGO_HOME"));
        let command = super::cargo();
        let removed: Vec<_> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        // Under `cargo test` these are set, so they are taken out.
        assert!(
            removed.contains(&"CARGO_MANIFEST_DIR".to_owned()),
            "{removed:?}"
        );
    }

    #[test]
    fn node_summary_lines_are_totalled() {
        let mut totals = Totals::default();
        for line in [
            "ℹ tests 14",
            "ℹ pass 12",
            "ℹ fail 1",
            "ℹ skipped 1",
            "ℹ duration_ms 9123.4",
            "✔ ℹ pass 3 (in a test name)",
        ] {
            totals.add_node(line);
        }
        assert_eq!((totals.passed, totals.failed, totals.ignored), (12, 1, 1));
    }
}
