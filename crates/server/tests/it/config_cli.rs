//! The configuration as a user meets it: the real binary, a TOML file,
//! `WSHUB_*` variables and flags; every problem reported at once, each named
//! the way the user wrote it.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn wshub(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wshub"));
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn write_toml(dir: &Path, text: &str) -> String {
    let file = dir.join("wshub.toml");
    std::fs::write(&file, text).unwrap();
    file.display().to_string()
}

fn refused(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    stderr
}

#[test]
fn every_bad_key_is_reported_in_one_run_named_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_toml(
        dir.path(),
        "listen = \"nonsense\"\n[hub]\nslow_consumer = \"fast\"\nmax_room_per_connection = 3\n[transport]\nheartbeat_interval = \"often\"\n",
    );
    let stderr = refused(&wshub(
        &["print-config", "--config", &file, "--log-format", "xml"],
        &[("WSHUB_HUB__DATA_QUEUE_BYTES", "lots")],
    ));
    assert!(stderr.contains("6 problems"), "{stderr}");
    let line = |needle: &str| {
        stderr
            .lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{stderr}"))
            .to_owned()
    };
    let listen = line("listen (in ");
    assert!(
        listen.contains("\"nonsense\"") && listen.contains("127.0.0.1:8080"),
        "{listen}"
    );
    let policy = line("hub.slow_consumer (in ");
    assert!(
        policy.contains("\"fast\"") && policy.contains("disconnect, drop_oldest"),
        "{policy}"
    );
    let typo = line("hub.max_room_per_connection");
    assert!(
        typo.contains("did you mean hub.max_rooms_per_connection?"),
        "{typo}"
    );
    assert!(
        !typo.contains("default."),
        "no figment profile in the name: {typo}"
    );
    let duration = line("transport.heartbeat_interval (in ");
    assert!(
        duration.contains("\"often\"") && duration.contains("\"30s\""),
        "{duration}"
    );
    let env = line("WSHUB_HUB__DATA_QUEUE_BYTES:");
    assert!(
        env.contains("\"lots\"") && env.contains("whole number"),
        "{env}"
    );
    let flag = line("--log-format:");
    assert!(
        flag.contains("\"xml\"") && flag.contains("text, json"),
        "{flag}"
    );
}

#[test]
fn a_value_check_names_the_environment_variable_that_set_it() {
    let stderr = refused(&wshub(
        &["--listen", "127.0.0.1:0"],
        &[("WSHUB_TRANSPORT__HEARTBEAT_TIMEOUT", "1s")],
    ));
    assert!(
        stderr.contains("WSHUB_TRANSPORT__HEARTBEAT_TIMEOUT: 1s must be longer than transport.heartbeat_interval (25s)"),
        "{stderr}"
    );
}

#[test]
fn a_hostname_in_listen_is_refused_with_the_reason() {
    let stderr = refused(&wshub(&["print-config", "--listen", "localhost:9000"], &[]));
    assert!(stderr.contains("--listen: \"localhost:9000\""), "{stderr}");
    assert!(
        stderr.contains("hostnames such as localhost:9000 are refused"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_variable_warns_with_the_closest_real_one_and_does_not_stop_start_up() {
    let output = wshub(&["print-config"], &[("WSHUB_LISTN", "127.0.0.1:1")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "WSHUB_LISTN is not a wshub setting and is ignored; did you mean WSHUB_LISTEN?"
        ),
        "{stderr}"
    );
    // In a file, an unknown key is still an error.
    let dir = tempfile::tempdir().unwrap();
    let file = write_toml(dir.path(), "listn = \"127.0.0.1:1\"\n");
    let stderr = refused(&wshub(&["print-config", "--config", &file], &[]));
    assert!(
        stderr.contains("unknown key; did you mean listen?"),
        "{stderr}"
    );
}

/// Kubernetes injects service links into every pod of a namespace; with a
/// Service named `wshub` they look like settings, but are none: they pass
/// in silence, while a typo beside them is warned about once.
#[test]
fn kubernetes_service_link_variables_do_not_stop_the_server() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .env("WSHUB_PORT", "tcp://10.0.0.7:8080")
        .env("WSHUB_SERVICE_HOST", "10.0.0.7")
        .env("WSHUB_SERVICE_PORT", "8080")
        .env("WSHUB_PORT_8080_TCP_ADDR", "10.0.0.7")
        .env("WSHUB_HUB__SLOW_CONSUMR", "x")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let listening = loop {
        let Some(Ok(line)) = lines.next() else {
            break false;
        };
        if line.contains("listening") {
            break true;
        }
        seen.push(line);
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "the server did not start: {seen:#?}");
    for variable in [
        "WSHUB_PORT ",
        "WSHUB_SERVICE_HOST",
        "WSHUB_SERVICE_PORT",
        "WSHUB_PORT_8080_TCP_ADDR",
    ] {
        assert_eq!(
            seen.iter()
                .filter(|line| line.contains(variable) && line.contains("WARN"))
                .count(),
            0,
            "a service link is no setting and no typo: no warning for {variable}: {seen:#?}"
        );
    }
    assert_eq!(
        seen.iter()
            .filter(|line| line.contains("WSHUB_HUB__SLOW_CONSUMR") && line.contains("WARN"))
            .count(),
        1,
        "a typo is warned about, once: {seen:#?}"
    );
}

#[test]
fn config_layers_apply_in_order_defaults_file_env_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_toml(
        dir.path(),
        "ws_path = \"/from-file\"\nlisten = \"127.0.0.1:7001\"\n[hub]\nslow_consumer = \"drop_oldest\"\ndata_queue_bytes = 70000\n[permissions.namespaces.chat]\njoin = \"claim\"\npublish = \"authenticated\"\n",
    );
    let output = wshub(
        &[
            "print-config",
            "--config",
            &file,
            "--listen",
            "127.0.0.1:7003",
        ],
        &[
            ("WSHUB_LISTEN", "127.0.0.1:7002"),
            ("WSHUB_HUB__DATA_QUEUE_BYTES", "80000"),
            (
                "WSHUB_ALLOWED_ORIGINS",
                "http://127.0.0.1:8000, https://app.example.com",
            ),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let printed: toml::Value = toml::from_str(&String::from_utf8_lossy(&output.stdout)).unwrap();
    assert_eq!(
        printed["ws_path"].as_str(),
        Some("/from-file"),
        "file over defaults"
    );
    assert_eq!(
        printed["hub"]["slow_consumer"].as_str(),
        Some("drop_oldest")
    );
    assert_eq!(
        printed["hub"]["data_queue_bytes"].as_integer(),
        Some(80000),
        "env over file"
    );
    assert_eq!(
        printed["listen"].as_str(),
        Some("127.0.0.1:7003"),
        "flags over env"
    );
    assert_eq!(
        printed["transport"]["heartbeat_interval"].as_str(),
        Some("25s"),
        "defaults"
    );
    assert_eq!(
        printed["allowed_origins"],
        toml::Value::Array(vec![
            "http://127.0.0.1:8000".into(),
            "https://app.example.com".into()
        ]),
        "a comma-separated list from the environment"
    );
    assert_eq!(
        printed["permissions"]["namespaces"]["chat"]["join"].as_str(),
        Some("claim")
    );
}

#[test]
fn printed_config_is_accepted_back_and_keeps_secrets_out() {
    let secret = "a-secret-of-more-than-32-bytes-xxxxxxxx";
    let output = wshub(
        &["print-config"],
        &[("WSHUB_AUTH__MODE", "jwt"), ("WSHUB_AUTH__SECRET", secret)],
    );
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!printed.contains(secret), "the secret is never printed");
    let dir = tempfile::tempdir().unwrap();
    let file = write_toml(dir.path(), &printed);
    let again = wshub(
        &["print-config", "--config", &file],
        &[("WSHUB_AUTH__SECRET", secret)],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&again.stdout), printed);
}

#[test]
fn every_hub_and_transport_field_is_reachable_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_toml(
        dir.path(),
        "[hub]\nnode_id = \"node-7\"\nroom_linger = \"5m\"\n[transport]\nclose_timeout = \"7s\"\n",
    );
    let output = wshub(&["print-config", "--config", &file], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: toml::Value = toml::from_str(&String::from_utf8_lossy(&output.stdout)).unwrap();
    assert_eq!(printed["hub"]["node_id"].as_str(), Some("node-7"));
    assert_eq!(printed["hub"]["room_linger"].as_str(), Some("5m"));
    assert_eq!(printed["transport"]["close_timeout"].as_str(), Some("7s"));
    let stderr = refused(&wshub(&["print-config"], &[("WSHUB_HUB__NODE_ID", "a.b")]));
    assert!(stderr.contains("WSHUB_HUB__NODE_ID: \"a.b\""), "{stderr}");
}

#[test]
fn every_flag_applies_before_and_after_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_toml(dir.path(), "ws_path = \"/from-file\"\n");
    let cases: [(&[&str], &str, &str); 6] = [
        (&["--listen", "127.0.0.1:7100"], "listen", "127.0.0.1:7100"),
        (&["--ws-path", "/flag"], "ws_path", "/flag"),
        (&["--log-format", "json"], "log.format", "json"),
        (&["--log-level", "debug"], "log.level", "debug"),
        (&["--shutdown-timeout", "7s"], "shutdown_timeout", "7s"),
        (&["--config", &file], "ws_path", "/from-file"),
    ];
    for (flag, key, want) in cases {
        for args in [
            [flag, &["print-config"][..]].concat(),
            [&["print-config"][..], flag].concat(),
        ] {
            let output = wshub(&args, &[]);
            assert!(
                output.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let printed: toml::Value =
                toml::from_str(&String::from_utf8_lossy(&output.stdout)).unwrap();
            let got = key
                .split('.')
                .fold(&printed, |value, part| &value[part])
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(got, want, "{args:?}");
        }
    }
}

#[test]
fn a_flag_the_command_does_not_use_is_refused_and_a_missing_config_file_stops_start_up() {
    let stderr = refused(&wshub(
        &["--listen", "127.0.0.1:1", "token", "--sub", "a"],
        &[],
    ));
    assert!(
        stderr.contains("--listen does not apply to `wshub token`"),
        "{stderr}"
    );
    for args in [
        &["--config", "/nonexistent/wshub.toml"][..],
        &["serve", "--config", "/nonexistent/wshub.toml"],
        &["--config", "/nonexistent/wshub.toml", "serve"],
    ] {
        let stderr = refused(&wshub(args, &[]));
        assert!(
            stderr.contains("--config: cannot read /nonexistent/wshub.toml"),
            "{args:?}: {stderr}"
        );
    }
    let help = wshub(&["token", "--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        !help.contains("--listen") && help.contains("--config"),
        "{help}"
    );
}

#[test]
fn token_without_a_secret_says_which_key_to_set_and_signs_with_the_servers_secret() {
    let stderr = refused(&wshub(&["token", "--sub", "alice"], &[]));
    assert!(
        stderr.contains("auth.secret: not set; set auth.secret or WSHUB_AUTH__SECRET"),
        "{stderr}"
    );
    let secret = "0123456789abcdef0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let file = write_toml(
        dir.path(),
        &format!("[auth]\nmode = \"jwt\"\nsecret = \"{secret}\"\n"),
    );
    let output = wshub(&["--config", &file, "token", "--sub", "alice"], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");
}

#[test]
fn a_port_in_use_is_reported_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = wshub(&["--listen", &addr], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains(&format!("listen {addr}: ")), "{stderr}");
    assert!(!stderr.contains("admin.listen"), "{stderr}");

    // The admin address taken: only that one is named.
    let output = wshub(&["--listen", "127.0.0.1:0", "--admin-listen", &addr], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot start: admin.listen {addr}: ")),
        "{stderr}"
    );
    assert!(!stderr.contains("127.0.0.1:0"), "{stderr}");
}

#[test]
fn help_says_what_the_command_does_and_names_the_environment() {
    let output = wshub(&["--help"], &[]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.starts_with("Runs the wshub WebSocket hub"), "{help}");
    assert!(
        help.contains("WSHUB_") && help.contains("[env: WSHUB_LISTEN]"),
        "{help}"
    );
}

#[test]
fn an_admin_listener_off_loopback_needs_an_api_key() {
    let stderr = refused(&wshub(
        &["print-config", "--admin-listen", "0.0.0.0:8081"],
        &[],
    ));
    assert!(stderr.contains("--admin-listen: 0.0.0.0:8081 is not a loopback address, so api.key (WSHUB_API__KEY) must be set"), "{stderr}");
    let output = wshub(
        &["print-config", "--admin-listen", "0.0.0.0:8081"],
        &[("WSHUB_API__KEY", "secret-api-key")],
    );
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        !printed.contains("secret-api-key"),
        "the key is never printed"
    );
    let off = wshub(&["print-config", "--admin-listen", "off"], &[]);
    assert!(String::from_utf8_lossy(&off.stdout).contains("listen = \"off\""));
}

#[test]
fn config_default_is_accepted_back_and_config_check_reports_every_problem() {
    let output = wshub(&["config", "default"], &[]);
    assert!(output.status.success());
    let defaults = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        defaults.contains("# Bytes of room messages queued per connection"),
        "{defaults}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write_toml(dir.path(), &defaults);
    let ok = wshub(&["config", "check", "--config", &file], &[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The defaults file and the built-in defaults are the same config.
    let from_file = wshub(&["print-config", "--config", &file], &[]);
    let builtin = wshub(&["print-config"], &[]);
    assert_eq!(from_file.stdout, builtin.stdout);

    let bad = write_toml(
        dir.path(),
        "listen = \"x\"\n[hub]\nslow_consumer = \"fast\"\n",
    );
    let checked = wshub(
        &["config", "check", "--config", &bad],
        &[("WSHUB_HUB__DATA_QUEUE_BYTES", "x"), ("WSHUB_LISTN", "1")],
    );
    assert_eq!(checked.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(stderr.contains("3 problems"), "{stderr}");
    for key in [
        "listen (in",
        "hub.slow_consumer (in",
        "WSHUB_HUB__DATA_QUEUE_BYTES",
    ] {
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
}

/// A typo in a variable fails `config check` (which a person asked for),
/// while Kubernetes' service variables for a Service named `wshub` pass.
#[test]
fn config_check_fails_on_an_ignored_variable_but_not_on_service_links() {
    let typo = wshub(&["config", "check"], &[("WSHUB_HUB__SLOW_CONSUMR", "x")]);
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert_eq!(typo.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did you mean WSHUB_HUB__SLOW_CONSUMER"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&typo.stdout).contains("ok"));

    let links = wshub(
        &["config", "check"],
        &[
            ("WSHUB_SERVICE_HOST", "10.0.0.7"),
            ("WSHUB_PORT", "tcp://10.0.0.7:8080"),
            ("WSHUB_PORT_8080_TCP_ADDR", "10.0.0.7"),
        ],
    );
    assert!(
        links.status.success(),
        "{}",
        String::from_utf8_lossy(&links.stderr)
    );
    assert!(links.stderr.is_empty(), "not even a warning");
}

/// A namespace that only turns on history takes the unlisted namespaces'
/// rules: open without auth, closed with it.
#[test]
fn a_namespace_without_rules_inherits_the_default_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_toml(
        dir.path(),
        "[permissions.namespaces.chat]\nhistory_size = 50\n",
    );
    let checked = wshub(&["config", "check", "--config", &file], &[]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let printed = wshub(&["print-config", "--config", &file], &[]);
    let text = String::from_utf8_lossy(&printed.stdout);
    let chat = text.split("[permissions.namespaces.chat]").nth(1).unwrap();
    assert!(chat.contains("history_size = 50"), "{text}");
    assert!(
        !chat.contains("join ="),
        "not written, so not printed: {text}"
    );
}

#[test]
fn room_features_are_configured_per_namespace_on_either_broker() {
    let dir = tempfile::tempdir().unwrap();
    // With Redis they live in Redis: accepted; a presence TTL too short to
    // refresh is refused, by its key.
    let file = write_toml(
        dir.path(),
        "[broker]\nkind = \"redis\"\n\n[broker.redis]\npresence_ttl = \"100ms\"\n\n[permissions.namespaces.chat]\njoin = \"anyone\"\npublish = \"anyone\"\nhistory_size = 100\nhistory_ttl = \"10m\"\npresence = true\n",
    );
    let stderr = refused(&wshub(&["--config", &file, "--listen", "127.0.0.1:0"], &[]));
    assert!(stderr.contains("broker.redis.presence_ttl"), "{stderr}");
    assert!(!stderr.contains("problems"), "only that one: {stderr}");

    // With the memory broker they are accepted and printed back.
    let file = write_toml(
        dir.path(),
        "[permissions.namespaces.chat]\njoin = \"anyone\"\npublish = \"anyone\"\nhistory_size = 100\nhistory_ttl = \"10m\"\njoin_leave = true\n",
    );
    let printed = wshub(&["--config", &file, "print-config"], &[]);
    assert!(printed.status.success());
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(
        text.contains("history_size = 100") && text.contains("join_leave = true"),
        "{text}"
    );
    let stderr = refused(&wshub(
        &["--config", &file, "--listen", "127.0.0.1:0"],
        &[("WSHUB_PERMISSIONS__NAMESPACES__CHAT__HISTORY_SIZE", "lots")],
    ));
    assert!(
        stderr.contains("WSHUB_PERMISSIONS__NAMESPACES__CHAT__HISTORY_SIZE"),
        "{stderr}"
    );
}

#[test]
fn a_bad_redis_url_stops_start_up_naming_the_key_without_the_password() {
    let stderr = refused(&wshub(
        &["--listen", "127.0.0.1:0"],
        &[
            ("WSHUB_BROKER__KIND", "redis"),
            ("WSHUB_BROKER__REDIS__URL", "http://user:s3cret@cache:6379"),
        ],
    ));
    assert!(stderr.contains("WSHUB_BROKER__REDIS__URL"), "{stderr}");
    assert!(
        stderr.contains("redis://"),
        "says what a good one looks like: {stderr}"
    );
    assert!(
        !stderr.contains("s3cret"),
        "the password is not echoed: {stderr}"
    );
    let stderr = refused(&wshub(
        &["--listen", "127.0.0.1:0"],
        &[
            ("WSHUB_BROKER__KIND", "redis"),
            ("WSHUB_BROKER__REDIS__URL", "redis://a:1,redis://b:2"),
        ],
    ));
    assert!(stderr.contains("cluster = true"), "{stderr}");
}

#[test]
fn retired_buffer_keys_are_refused_with_what_replaced_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_toml(dir.path(), "[transport]\nread_buffer_bytes = 1024\n");
    let stderr = refused(&wshub(&["--config", &file, "--listen", "127.0.0.1:0"], &[]));
    assert!(
        stderr.contains("transport.read_buffer_bytes") && stderr.contains("no longer exists"),
        "{stderr}"
    );
    let stderr = refused(&wshub(
        &["--listen", "127.0.0.1:0"],
        &[("WSHUB_TRANSPORT__WRITE_BUFFER_BYTES", "16384")],
    ));
    assert!(stderr.contains("no longer exists"), "{stderr}");
}

#[test]
fn a_queue_over_4_gib_is_refused_naming_the_key() {
    let stderr = refused(&wshub(
        &["--listen", "127.0.0.1:0"],
        &[("WSHUB_HUB__DATA_QUEUE_BYTES", "5000000000")],
    ));
    assert!(
        stderr.contains("WSHUB_HUB__DATA_QUEUE_BYTES") && stderr.contains("4 GiB"),
        "{stderr}"
    );
}
