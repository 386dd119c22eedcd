//! `cargo xtask doctor`: are this machine's kernel and limits ready for N
//! WebSocket connections? Prints current vs recommended values with a
//! verdict and the exact fix; exits non-zero on a blocker.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};

/// How bad a mismatch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    /// Works, but will hurt under load (dropped SYNs, memory, port reuse).
    Warn,
    /// The target connection count cannot be reached.
    Blocker,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Blocker => "BLOCKER",
        }
    }
}

/// The values the doctor reads; `None` where the machine did not tell.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    pub nofile_soft: Option<u64>,
    pub nofile_hard: Option<u64>,
    pub file_max: Option<u64>,
    pub nr_open: Option<u64>,
    pub somaxconn: Option<u64>,
    pub tcp_max_syn_backlog: Option<u64>,
    pub ip_local_port_range: Option<(u64, u64)>,
    pub tcp_tw_reuse: Option<u64>,
    pub tcp_rmem: Option<[u64; 3]>,
    pub tcp_wmem: Option<[u64; 3]>,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub current: String,
    pub recommended: String,
    pub verdict: Verdict,
    pub why: &'static str,
    /// A `key = value` line for the sysctl.d file, when it is a sysctl.
    pub sysctl: Option<String>,
}

/// Descriptors beyond the connections themselves: listener, logs, epoll, slack.
const FD_SLACK: u64 = 1024;
/// Buffer sizes that keep many mostly idle sockets cheap yet let a busy one grow.
const SOCKET_BUFFERS: [u64; 3] = [4096, 16384, 16 << 20];

fn shown(value: Option<u64>) -> String {
    value.map_or_else(|| "unknown".into(), |v| v.to_string())
}

fn triple(value: Option<[u64; 3]>) -> String {
    value.map_or_else(|| "unknown".into(), |[a, b, c]| format!("{a} {b} {c}"))
}

/// The verdicts for `connections` connections on a machine with `readings`.
pub fn assess(readings: &Readings, connections: u64) -> Vec<Check> {
    let fds_needed = connections + FD_SLACK;
    let file_max_wanted = (2 * connections + 65_536).max(2_097_152);
    let nr_open_wanted = fds_needed.max(1_048_576);
    let backlog_wanted = 8192;
    // The sysctl line for a minimum keeps a current value that is already
    // higher: the file only ever raises a limit.
    let raise = |current: Option<u64>, wanted: u64| current.unwrap_or(0).max(wanted);
    let at_least = |value: Option<u64>, wanted: u64, short: Verdict| match value {
        Some(v) if v >= wanted => Verdict::Ok,
        Some(_) => short,
        None => Verdict::Warn,
    };
    let mut checks = Vec::new();

    checks.push(Check {
        name: "open files (hard limit)",
        current: shown(readings.nofile_hard),
        recommended: format!(">= {fds_needed}"),
        verdict: at_least(readings.nofile_hard, fds_needed, Verdict::Blocker),
        why: "each connection is a descriptor; only root can raise the hard limit",
        sysctl: None,
    });
    checks.push(Check {
        name: "open files (soft limit)",
        current: shown(readings.nofile_soft),
        recommended: format!(">= {fds_needed}"),
        // wshub raises its soft limit to the hard one at start.
        verdict: at_least(readings.nofile_soft, fds_needed, Verdict::Warn),
        why: "wshub raises it to the hard limit itself; other tools (load generators) may not",
        sysctl: None,
    });
    checks.push(Check {
        name: "fs.file-max",
        current: shown(readings.file_max),
        recommended: format!(">= {file_max_wanted}"),
        verdict: at_least(readings.file_max, fds_needed, Verdict::Blocker).max(at_least(
            readings.file_max,
            file_max_wanted,
            Verdict::Warn,
        )),
        why: "system-wide descriptor ceiling, shared with every other process",
        sysctl: Some(format!(
            "fs.file-max = {}",
            raise(readings.file_max, file_max_wanted)
        )),
    });
    checks.push(Check {
        name: "fs.nr_open",
        current: shown(readings.nr_open),
        recommended: format!(">= {nr_open_wanted}"),
        verdict: at_least(readings.nr_open, fds_needed, Verdict::Blocker),
        why: "caps any process's open-file hard limit",
        sysctl: Some(format!(
            "fs.nr_open = {}",
            raise(readings.nr_open, nr_open_wanted)
        )),
    });
    checks.push(Check {
        name: "net.core.somaxconn",
        current: shown(readings.somaxconn),
        recommended: format!(">= {backlog_wanted}"),
        verdict: at_least(readings.somaxconn, backlog_wanted, Verdict::Warn),
        why: "caps the accept backlog; a reconnect storm overflows it and each dropped SYN waits 1 s",
        sysctl: Some(format!(
            "net.core.somaxconn = {}",
            raise(readings.somaxconn, backlog_wanted)
        )),
    });
    checks.push(Check {
        name: "net.ipv4.tcp_max_syn_backlog",
        current: shown(readings.tcp_max_syn_backlog),
        recommended: format!(">= {backlog_wanted}"),
        verdict: at_least(readings.tcp_max_syn_backlog, backlog_wanted, Verdict::Warn),
        why: "half-open connections queued during a connect burst",
        sysctl: Some(format!(
            "net.ipv4.tcp_max_syn_backlog = {}",
            raise(readings.tcp_max_syn_backlog, backlog_wanted)
        )),
    });
    let port_range_size = readings
        .ip_local_port_range
        .map(|(low, high)| high.saturating_sub(low) + 1);
    checks.push(Check {
        name: "net.ipv4.ip_local_port_range",
        current: readings
            .ip_local_port_range
            .map_or_else(|| "unknown".into(), |(low, high)| format!("{low} {high}")),
        recommended: "1024 65535".into(),
        verdict: at_least(port_range_size, 60_000, Verdict::Warn),
        why: "client ports per source address: limits a proxy or load generator in front of wshub",
        sysctl: Some({
            let (low, high) = readings.ip_local_port_range.unwrap_or((1024, 65535));
            format!(
                "net.ipv4.ip_local_port_range = {} {}",
                low.min(1024),
                high.max(65535)
            )
        }),
    });
    checks.push(Check {
        name: "net.ipv4.tcp_tw_reuse",
        current: shown(readings.tcp_tw_reuse),
        recommended: "1".into(),
        verdict: match readings.tcp_tw_reuse {
            Some(1) => Verdict::Ok,
            _ => Verdict::Warn,
        },
        why: "lets outgoing connections reuse TIME_WAIT ports (proxies, load generators reconnecting)",
        sysctl: Some("net.ipv4.tcp_tw_reuse = 1".into()),
    });
    for (name, value, why) in [
        (
            "net.ipv4.tcp_rmem",
            readings.tcp_rmem,
            "default receive buffer per socket: small for many idle sockets, max for busy ones",
        ),
        (
            "net.ipv4.tcp_wmem",
            readings.tcp_wmem,
            "default send buffer: a smaller default means a stalled reader is detected sooner",
        ),
    ] {
        let [min, default, max] = SOCKET_BUFFERS;
        checks.push(Check {
            name,
            current: triple(value),
            recommended: format!("{min} {default} {max}"),
            verdict: match value {
                Some([_, current_default, _]) if current_default <= 65_536 => Verdict::Ok,
                _ => Verdict::Warn,
            },
            why,
            // The default is deliberately small (idle sockets); the
            // maximum is only ever raised.
            sysctl: Some(format!(
                "{name} = {min} {default} {}",
                value.map_or(max, |[_, _, current_max]| current_max.max(max))
            )),
        });
    }
    checks
}

/// The sysctl.d file that applies every recommendation for `connections`
/// on a machine with `readings`: every limit is a minimum, and a current
/// value that is already higher is kept (the file only ever raises a limit).
pub fn sysctl_file(connections: u64, readings: &Readings) -> String {
    let mut out = format!(
        "# wshub: kernel settings for {connections} WebSocket connections per node.\n\
         # Generated by `cargo xtask doctor --connections {connections} --write-sysctl`.\n\
         # Every limit here is a minimum. Run the doctor on the target machine to get\n\
         # a file that keeps any current value that is already higher; do not install\n\
         # this generic one over higher values (compare with `sysctl -a` first).\n\
         # Install as /etc/sysctl.d/99-wshub.conf, then `sysctl --system`.\n\
         # Also raise the service's descriptor limit: systemd `LimitNOFILE={}`,\n\
         # Kubernetes/Docker `--ulimit nofile={}:{}`.\n",
        connections + FD_SLACK,
        connections + FD_SLACK,
        connections + FD_SLACK,
    );
    for check in assess(readings, connections) {
        if let Some(line) = check.sysctl {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_numbers(path: &str) -> Option<Vec<u64>> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .map(|n| n.parse().ok())
        .collect()
}

fn read_triple(path: &str) -> Option<[u64; 3]> {
    read_numbers(path)?.try_into().ok()
}

/// "Max open files  1024  524288  files" from /proc/self/limits.
fn open_file_limits() -> (Option<u64>, Option<u64>) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let Some(line) = limits.lines().find(|l| l.starts_with("Max open files")) else {
        return (None, None);
    };
    let mut fields = line["Max open files".len()..].split_whitespace();
    let parse = |v: Option<&str>| {
        v.and_then(|v| {
            if v == "unlimited" {
                Some(u64::MAX)
            } else {
                v.parse().ok()
            }
        })
    };
    (parse(fields.next()), parse(fields.next()))
}

/// Reads this machine's values.
pub fn read_machine() -> Readings {
    let (nofile_soft, nofile_hard) = open_file_limits();
    Readings {
        nofile_soft,
        nofile_hard,
        file_max: read_number("/proc/sys/fs/file-max"),
        nr_open: read_number("/proc/sys/fs/nr_open"),
        somaxconn: read_number("/proc/sys/net/core/somaxconn"),
        tcp_max_syn_backlog: read_number("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
        ip_local_port_range: read_numbers("/proc/sys/net/ipv4/ip_local_port_range")
            .and_then(|v| Some((*v.first()?, *v.get(1)?))),
        tcp_tw_reuse: read_number("/proc/sys/net/ipv4/tcp_tw_reuse"),
        tcp_rmem: read_triple("/proc/sys/net/ipv4/tcp_rmem"),
        tcp_wmem: read_triple("/proc/sys/net/ipv4/tcp_wmem"),
    }
}

/// The report table.
pub fn render(checks: &[Check], connections: u64) -> String {
    let mut out = format!("wshub doctor: ready for {connections} connections?\n\n");
    let width = |f: fn(&Check) -> usize, title: &str| {
        checks.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let (w1, w2, w3) = (
        width(|c| c.name.len(), "setting"),
        width(|c| c.current.len(), "current"),
        width(|c| c.recommended.len(), "recommended"),
    );
    let _ = writeln!(
        out,
        "{:w1$}  {:w2$}  {:w3$}  verdict",
        "setting", "current", "recommended"
    );
    for check in checks {
        let _ = writeln!(
            out,
            "{:w1$}  {:w2$}  {:w3$}  {:7}  {}",
            check.name,
            check.current,
            check.recommended,
            check.verdict.label(),
            check.why
        );
    }
    out
}

pub fn run(args: &[String], sysctl_path: &Path) -> anyhow::Result<()> {
    let mut connections = 50_000u64;
    let mut write_sysctl = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--connections" => {
                let value = iter.next().context("--connections needs a number")?;
                connections = value
                    .replace('_', "")
                    .parse()
                    .with_context(|| format!("--connections: {value:?} is not a number"))?;
            }
            "--write-sysctl" => write_sysctl = true,
            other => {
                bail!("doctor: unknown argument {other:?} (use --connections N, --write-sysctl)")
            }
        }
    }
    let readings = read_machine();
    let checks = assess(&readings, connections);
    print!("{}", render(&checks, connections));
    let worst = checks
        .iter()
        .map(|c| c.verdict)
        .max()
        .unwrap_or(Verdict::Ok);
    println!("\nFix: install this as /etc/sysctl.d/99-wshub.conf and run `sysctl --system`:\n");
    print!("{}", sysctl_file(connections, &readings));
    println!(
        "\nand give the service enough descriptors, e.g. in its systemd unit:\n\n[Service]\nLimitNOFILE={}",
        connections + FD_SLACK
    );
    if write_sysctl {
        // The shipped file is the generic one (no machine's values in it).
        std::fs::write(sysctl_path, sysctl_file(connections, &Readings::default()))
            .with_context(|| format!("cannot write {}", sysctl_path.display()))?;
        println!("\nwrote {}", sysctl_path.display());
    }
    if worst == Verdict::Blocker {
        bail!("at least one BLOCKER: {connections} connections cannot be reached on this machine");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuned() -> Readings {
        Readings {
            nofile_soft: Some(1_048_576),
            nofile_hard: Some(1_048_576),
            file_max: Some(4_000_000),
            nr_open: Some(1_048_576),
            somaxconn: Some(8192),
            tcp_max_syn_backlog: Some(8192),
            ip_local_port_range: Some((1024, 65535)),
            tcp_tw_reuse: Some(1),
            tcp_rmem: Some([4096, 16384, 16 << 20]),
            tcp_wmem: Some([4096, 16384, 16 << 20]),
        }
    }

    fn verdict_of(readings: &Readings, connections: u64, name: &str) -> Verdict {
        assess(readings, connections)
            .into_iter()
            .find(|c| c.name == name)
            .map(|c| c.verdict)
            .unwrap_or_else(|| panic!("no check named {name}"))
    }

    #[test]
    fn a_tuned_machine_passes_every_check() {
        let checks = assess(&tuned(), 50_000);
        assert!(
            checks.iter().all(|c| c.verdict == Verdict::Ok),
            "{checks:#?}"
        );
    }

    #[test]
    fn a_low_hard_limit_is_a_blocker_a_low_soft_limit_only_a_warning() {
        let mut readings = tuned();
        readings.nofile_hard = Some(20_000);
        readings.nofile_soft = Some(1024);
        assert_eq!(
            verdict_of(&readings, 50_000, "open files (hard limit)"),
            Verdict::Blocker
        );
        assert_eq!(
            verdict_of(&readings, 50_000, "open files (soft limit)"),
            Verdict::Warn
        );
        // 18,000 connections fit under a hard limit of 20,000.
        assert_eq!(
            verdict_of(&readings, 18_000, "open files (hard limit)"),
            Verdict::Ok
        );
    }

    #[test]
    fn kernel_ceilings_below_the_target_block() {
        let mut readings = tuned();
        readings.nr_open = Some(40_000);
        readings.file_max = Some(30_000);
        assert_eq!(
            verdict_of(&readings, 50_000, "fs.nr_open"),
            Verdict::Blocker
        );
        assert_eq!(
            verdict_of(&readings, 50_000, "fs.file-max"),
            Verdict::Blocker
        );
        readings.file_max = Some(100_000);
        assert_eq!(verdict_of(&readings, 50_000, "fs.file-max"), Verdict::Warn);
    }

    #[test]
    fn small_backlogs_large_default_buffers_and_no_tw_reuse_warn() {
        let mut readings = tuned();
        readings.somaxconn = Some(128);
        readings.tcp_tw_reuse = Some(2);
        readings.tcp_rmem = Some([4096, 131_072, 33_554_432]);
        readings.ip_local_port_range = Some((32768, 60999));
        for name in [
            "net.core.somaxconn",
            "net.ipv4.tcp_tw_reuse",
            "net.ipv4.tcp_rmem",
            "net.ipv4.ip_local_port_range",
        ] {
            assert_eq!(verdict_of(&readings, 50_000, name), Verdict::Warn, "{name}");
        }
    }

    #[test]
    fn unreadable_values_warn_rather_than_pass() {
        let checks = assess(&Readings::default(), 50_000);
        assert!(
            checks.iter().all(|c| c.verdict == Verdict::Warn),
            "{checks:#?}"
        );
    }

    #[test]
    fn the_shipped_sysctl_file_matches_the_doctors_recommendation() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sysctl/99-wshub.conf");
        let shipped =
            std::fs::read_to_string(&shipped).expect("deploy/sysctl/99-wshub.conf exists");
        assert_eq!(
            shipped,
            sysctl_file(50_000, &Readings::default()),
            "regenerate with `cargo xtask doctor --write-sysctl`"
        );
    }

    #[test]
    fn the_file_for_a_machine_never_lowers_a_limit() {
        let mut readings = tuned();
        readings.file_max = Some(9_223_372_036_854_775_807);
        readings.somaxconn = Some(65_535);
        readings.ip_local_port_range = Some((2000, 64000));
        let file = sysctl_file(50_000, &readings);
        assert!(file.contains("fs.file-max = 9223372036854775807"), "{file}");
        assert!(file.contains("net.core.somaxconn = 65535"), "{file}");
        assert!(
            file.contains("net.ipv4.ip_local_port_range = 1024 65535"),
            "{file}"
        );
        readings.file_max = Some(1000);
        assert!(sysctl_file(50_000, &readings).contains("fs.file-max = 2097152"));
    }

    #[test]
    fn proc_limits_are_parsed() {
        let (soft, hard) = open_file_limits();
        assert!(soft.is_some() && hard.is_some());
        assert!(soft <= hard);
    }
}
