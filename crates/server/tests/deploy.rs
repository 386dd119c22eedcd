//! What `deploy/` ships, checked: the Dockerfile passes hadolint and its
//! settings agree with the server (ports, health check, user, toolchain),
//! `wshub healthcheck` works as the image's HEALTHCHECK uses it, and the
//! systemd unit passes `systemd-analyze verify`. (No container runtime is
//! available here: the image itself is not built in the tests.)
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dockerfile() -> String {
    std::fs::read_to_string(repo().join("deploy/docker/Dockerfile")).unwrap()
}

/// The Dockerfile's `ENV` settings (one `ENV` instruction, continued lines).
fn image_env(text: &str) -> Vec<(String, String)> {
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|line| line.trim().strip_prefix("ENV "))
        .flat_map(|rest| {
            rest.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn wshub(args: &[&str], env: &[(String, String)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let pins = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deploy");
    let dir = support::tools::ensure_installed(&pins, "hadolint", "requirements.txt", |dir| {
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(dir)
        .arg("-r")
        .arg(pins.join("requirements.txt"));
        cmd
    });
    let output = Command::new(dir.join("bin/hadolint"))
        .arg(repo().join("deploy/docker/Dockerfile"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "hadolint: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn the_image_settings_agree_with_the_server() {
    let text = dockerfile();
    let toolchain = std::fs::read_to_string(repo().join("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|line| line.strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        text.contains(&format!("FROM rust:{channel}-")),
        "the build stage uses the pinned toolchain {channel}"
    );
    assert!(text.contains("cargo build --release --locked -p wshub-server"));
    assert!(text.contains("STOPSIGNAL SIGTERM"));
    assert!(
        text.contains(r#"CMD ["/usr/local/bin/wshub", "healthcheck"]"#),
        "exec-form health check, no shell"
    );
    let user = text
        .lines()
        .find_map(|line| line.strip_prefix("USER "))
        .unwrap();
    assert!(
        !user.starts_with('0') && user.chars().next().unwrap().is_ascii_digit(),
        "{user}"
    );

    // The image's environment is a valid configuration once the API key is
    // given, and the ports it listens on are the ones it exposes.
    let mut env = image_env(&text);
    let get = |key: &str, env: &[(String, String)]| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let exposed: Vec<&str> = text
        .lines()
        .find_map(|line| line.strip_prefix("EXPOSE "))
        .unwrap()
        .split_whitespace()
        .collect();
    for key in ["WSHUB_LISTEN", "WSHUB_ADMIN__LISTEN"] {
        let port = get(key, &env).rsplit_once(':').unwrap().1.to_owned();
        assert!(
            exposed.contains(&port.as_str()),
            "{key} port {port} is exposed"
        );
    }
    let refused = wshub(&["config", "check"], &env);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("api.key"));
    env.push(("WSHUB_API__KEY".into(), "an-api-key-for-the-test".into()));
    let checked = wshub(&["config", "check"], &env);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let printed = String::from_utf8(wshub(&["print-config"], &env).stdout).unwrap();
    assert!(printed.contains("listen = \"0.0.0.0:8080\""), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_zero_only_while_the_server_answers() {
    let server = support::TestServer::start().await;
    let url = format!("http://{}/healthz", server.addr);
    let run = |args: Vec<String>, env: Vec<(String, String)>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            wshub(&args, &env)
        })
    };
    let ok = run(
        vec!["healthcheck".into(), "--url".into(), url.clone()],
        vec![],
    )
    .await
    .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // As the image runs it: no URL, the listen address from the environment.
    let by_config = run(
        vec!["healthcheck".into()],
        vec![("WSHUB_LISTEN".into(), server.addr.to_string())],
    )
    .await
    .unwrap();
    assert!(by_config.status.success());
    let addr = server.addr;
    server.shutdown().await;
    let down = run(
        vec![
            "healthcheck".into(),
            "--url".into(),
            format!("http://{addr}/healthz"),
        ],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("unhealthy"));
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/wshub.service")).unwrap();
    assert!(unit.contains("KillSignal=SIGTERM") && unit.contains("LimitNOFILE="));
    // Verified as installed, with the binary where the unit expects it:
    // here, the one cargo built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wshub.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/wshub", env!("CARGO_BIN_EXE_wshub")),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) is a test prerequisite");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "{stderr}"
    );
}
