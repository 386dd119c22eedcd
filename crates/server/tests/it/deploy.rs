//! What `deploy/` ships, checked: the Dockerfile passes hadolint and its
//! settings agree with the server (ports, health check, user, toolchain),
//! `wshub healthcheck` works as the image's HEALTHCHECK uses it, and the
//! systemd unit passes `systemd-analyze verify`. (No container runtime is
//! available here: the image itself is not built in the tests.)
#![allow(clippy::unwrap_used)]

use crate::support;

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
    let dir = python_tool("hadolint", "requirements.txt");
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
    for setting in [
        "KillSignal=SIGTERM",
        "LimitNOFILE=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "--config /etc/wshub/wshub.toml",
    ] {
        assert!(unit.contains(setting), "the unit sets {setting}");
    }
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

/// The pinned kubernetes-validate (with its bundled schemas and PyYAML),
/// installed under target/.
fn k8s_tools() -> PathBuf {
    python_tool("kubernetes-validate", "k8s-requirements.txt")
}

/// `kubectl kustomize` of a kustomization under deploy/k8s: the YAML, and
/// its documents as JSON (through PyYAML).
fn render(kustomization: &str, tools: &Path) -> (String, Vec<serde_json::Value>) {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("deploy/k8s").join(kustomization))
        .output()
        .expect("kubectl (with kustomize) is a test prerequisite");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let yaml = String::from_utf8(output.stdout).unwrap();
    let mut convert = Command::new("python3")
        .env("PYTHONPATH", tools)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    convert
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let converted = convert.wait_with_output().unwrap();
    assert!(converted.status.success());
    (yaml, serde_json::from_slice(&converted.stdout).unwrap())
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn seconds(text: &str) -> u64 {
    humantime::parse_duration(text).unwrap().as_secs()
}

#[test]
fn the_kubernetes_manifests_render_validate_and_keep_their_promises() {
    let tools = k8s_tools();
    for kustomization in ["base", "overlays/redis"] {
        let (yaml, docs) = render(kustomization, &tools);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rendered.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let validated = Command::new("python3")
            .env("PYTHONPATH", &tools)
            .args([
                "-m",
                "kubernetes_validate",
                "--strict",
                "--quiet",
                "-k",
                "1.32.0",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            validated.status.success(),
            "{kustomization}: {}{}",
            String::from_utf8_lossy(&validated.stdout),
            String::from_utf8_lossy(&validated.stderr)
        );

        // The server's own config, from the ConfigMap, is valid and agrees
        // with the manifests.
        let toml_text = find(&docs, "ConfigMap", "wshub-config")["data"]["wshub.toml"]
            .as_str()
            .unwrap()
            .to_owned();
        let config_file = dir.path().join("wshub.toml");
        std::fs::write(&config_file, &toml_text).unwrap();
        let checked = wshub(
            &["config", "check", "--config", config_file.to_str().unwrap()],
            &[("WSHUB_API__KEY".into(), "an-api-key-for-the-test".into())],
        );
        assert!(
            checked.status.success(),
            "{}",
            String::from_utf8_lossy(&checked.stderr)
        );
        let config: toml::Table = toml_text.parse().unwrap();
        let port_of = |addr: &str| addr.rsplit_once(':').unwrap().1.parse::<u64>().unwrap();
        let listen_port = port_of(config["listen"].as_str().unwrap());
        let admin_port = port_of(config["admin"]["listen"].as_str().unwrap());

        let pod = &find(&docs, "Deployment", "wshub")["spec"]["template"]["spec"];
        assert_eq!(pod["enableServiceLinks"], false);
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        let drain = seconds(config["shutdown_drain_delay"].as_str().unwrap())
            + seconds(config["shutdown_drain_period"].as_str().unwrap())
            + seconds(config["shutdown_timeout"].as_str().unwrap());
        assert!(
            grace > drain,
            "grace {grace}s must cover the drain's {drain}s"
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(
            pod["securityContext"]["sysctls"][0]["name"],
            "net.ipv4.ip_local_port_range"
        );
        let container = &pod["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            container["securityContext"]["capabilities"]["drop"][0],
            "ALL"
        );
        let port_named = |name: &str| {
            container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap()["containerPort"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(port_named("ws"), listen_port);
        assert_eq!(port_named("admin"), admin_port);
        for (probe, path) in [
            ("startupProbe", "/readyz"),
            ("readinessProbe", "/readyz"),
            ("livenessProbe", "/healthz"),
        ] {
            assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
            assert_eq!(container[probe]["httpGet"]["port"], "ws", "{probe}");
        }
        assert_eq!(
            find(&docs, "Service", "wshub-admin")["spec"]["type"],
            "ClusterIP"
        );
        let public = &find(&docs, "Service", "wshub")["spec"]["ports"];
        assert_eq!(
            public.as_array().unwrap().len(),
            1,
            "the admin port is not public"
        );
        find(&docs, "PodDisruptionBudget", "wshub");
        find(&docs, "HorizontalPodAutoscaler", "wshub");
        find(&docs, "NetworkPolicy", "wshub-admin");

        if kustomization == "overlays/redis" {
            let env = container["env"].as_array().unwrap();
            let value = |key: &str| {
                env.iter().find(|e| e["name"] == key).unwrap()["value"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            assert_eq!(value("WSHUB_BROKER__KIND"), "redis");
            let redis = find(&docs, "Service", "wshub-redis");
            let port = redis["spec"]["ports"][0]["port"].as_u64().unwrap();
            assert_eq!(
                value("WSHUB_BROKER__REDIS__URL"),
                format!("redis://wshub-redis:{port}")
            );
        }
    }
}

/// A pinned Python tool from tests/deploy/`pin_file`, installed under target/.
fn python_tool(name: &str, pin_file: &str) -> PathBuf {
    let pins = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deploy");
    support::tools::pip_installed(&pins, name, pin_file)
}

#[test]
fn the_compose_cluster_validates_and_its_load_balancer_routes_websockets() {
    let tools = python_tool("check-jsonschema", "compose-requirements.txt");
    let compose = repo().join("deploy/compose.yaml");
    let output = Command::new("python3")
        .env("PYTHONPATH", &tools)
        .args([
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
        ])
        .arg(&compose)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let text = std::fs::read_to_string(&compose).unwrap();
    let nodes: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter_map(|line| line.strip_suffix(':'))
        .filter(|name| name.starts_with("wshub-"))
        .collect();
    assert_eq!(nodes, ["wshub-1", "wshub-2", "wshub-3"]);
    assert!(text.contains("WSHUB_BROKER__KIND: redis"));

    let haproxy = std::fs::read_to_string(repo().join("deploy/compose/haproxy.cfg")).unwrap();
    assert!(
        haproxy.contains("acl is_ws path /ws"),
        "routes the WebSocket path"
    );
    assert!(
        haproxy.contains("hdr(Upgrade) -i websocket"),
        "on an upgrade"
    );
    assert!(
        haproxy.contains("timeout tunnel"),
        "upgraded connections outlive http timeouts"
    );
    assert!(
        haproxy.contains("option httpchk GET /readyz"),
        "health from readiness"
    );
    let prometheus = std::fs::read_to_string(repo().join("deploy/compose/prometheus.yml")).unwrap();
    for node in &nodes {
        assert!(
            haproxy.contains(&format!("{node}:8080 check")),
            "{node} behind the balancer"
        );
        assert!(
            prometheus.contains(&format!("{node}:8081")),
            "{node} scraped"
        );
    }
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = repo().join("deploy/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yaml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let output = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian package prometheus) is a test prerequisite");
        assert!(
            output.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Every `wshub_*` / `process_*` metric a file names (histogram series
/// reduced to their metric).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for (start, _) in text.match_indices(['w', 'p']) {
        let rest = &text[start..];
        if !(rest.starts_with("wshub_") || rest.starts_with("process_")) {
            continue;
        }
        if start > 0 && text.as_bytes()[start - 1].is_ascii_alphanumeric() {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .map_or(name.clone(), str::to_owned);
        names.insert(name);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_in_a_real_scrape() {
    let redis = support::redis::RedisProcess::start();
    let mut config = support::test_config();
    config.broker.kind = wshub_server::config::BrokerKind::Redis;
    config.broker.redis.url = vec![redis.url()];
    // A hook to a backend that is not there: its request is counted.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.proxy.rpc.url = format!("http://{}/rpc", nobody.local_addr().unwrap());
    drop(nobody);
    let server = support::TestServer::start_with(config).await;
    // Labelled series appear with their first event: one API call, one rpc.
    assert_eq!(support::http_get(server.admin, "/api/info").await.0, 200);
    let mut client = server.client().await;
    client
        .send_json(serde_json::json!({"type":"rpc","method":"m","ref":1}))
        .await;
    assert_eq!(client.recv().await["reason"], "backend_unreachable");
    let scrape = server.metrics().await;
    let exposed: std::collections::BTreeSet<String> = scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    for file in ["deploy/grafana/wshub.json", "deploy/prometheus/alerts.yaml"] {
        let used = metric_names(&std::fs::read_to_string(repo().join(file)).unwrap());
        assert!(used.len() > 5, "{file} names metrics");
        let missing: Vec<&String> = used
            .iter()
            .filter(|name| !exposed.contains(*name))
            .collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics the server does not expose: {missing:?}"
        );
    }
}

#[test]
fn the_binary_runs_as_the_image_runs_it_non_root_read_only_env_only() {
    use std::io::BufRead as _;
    // The image's environment, on loopback ports (tests stay on 127.0.0.1),
    // as uid/gid 65532 in a directory it cannot write, with no config file.
    let mut env = image_env(&dockerfile());
    for (key, value) in &mut env {
        if key == "WSHUB_LISTEN" || key == "WSHUB_ADMIN__LISTEN" {
            *value = "127.0.0.1:0".into();
        }
    }
    env.push(("WSHUB_API__KEY".into(), "an-api-key-for-the-test".into()));
    let cwd = tempfile::tempdir().unwrap();
    let mut perms = std::fs::metadata(cwd.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    std::fs::set_permissions(cwd.path(), perms).unwrap();
    let mut child = Command::new("setpriv")
        .args(["--reuid=65532", "--regid=65532", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_wshub"))
        .arg("serve")
        .current_dir(cwd.path())
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) runs the server as another user");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not start as uid 65532");
        };
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if entry["fields"]["message"] == "listening" {
            break entry["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let healthy = wshub(&["healthcheck"], &[("WSHUB_LISTEN".into(), addr.clone())]);
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(std::time::Instant::now() < deadline, "no graceful exit");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(exit.success(), "SIGTERM ends it cleanly: {exit}");
}
