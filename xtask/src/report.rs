//! Turning benchmark results into report.md, latency.svg and comparisons.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

/// What the report says about the machine it ran on.
pub fn machine() -> Value {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": cpu_model,
        "kernel": read("/proc/sys/kernel/osrelease"),
    })
}

fn number(value: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(value, |v, key| v.get(key))?
        .as_f64()
}

/// Figures that mean the run lost something or failed part of its job.
pub fn problems(name: &str, report: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(lost) = number(report, "lost").filter(|lost| *lost > 0.0) {
        found.push(format!("{name}: {lost} deliveries lost"));
    }
    if let Some(dups) = number(report, "duplicates").filter(|d| *d > 0.0) {
        found.push(format!("{name}: {dups} duplicate deliveries"));
    }
    if let Some(failed) = report
        .get("failed")
        .and_then(Value::as_object)
        .filter(|f| !f.is_empty())
    {
        found.push(format!(
            "{name}: failures {}",
            Value::Object(failed.clone())
        ));
    }
    let counts = (number(report, "connections"), number(report, "connected"));
    if let (Some(wanted), Some(got)) = counts
        && got < wanted
    {
        found.push(format!("{name}: only {got} of {wanted} connected"));
    }
    if number(report, "dropped_during_hold").is_some_and(|d| d > 0.0) {
        found.push(format!("{name}: connections dropped while idle"));
    }
    if report.get("returned_to_zero") == Some(&Value::Bool(false)) {
        found.push(format!(
            "{name}: connections or rooms did not return to zero"
        ));
    }
    found
}

fn scenario<'a>(document: &'a Value, name_prefix: &str) -> Option<&'a Value> {
    document["scenarios"]
        .as_array()?
        .iter()
        .find(|s| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(name_prefix))
        })
        .map(|s| &s["report"])
}

/// The headline figures, against the goals in shared/PERFORMANCE-NOTES.md.
const GOALS: &[(&str, &str, &str, &str, f64, bool)] = &[
    // (label, scenario prefix, figure, unit, goal, higher is better)
    // Judged at 19k connections only: at 2k (the quick run) the process's
    // fixed memory dominates the quotient.
    (
        "RSS per idle connection",
        "connect-19k",
        "server_rss_per_connection_bytes",
        "B",
        1024.0,
        false,
    ),
    (
        "Idle again after a 200 × 1 KB burst, vs idle",
        "memory",
        "after_burst_vs_idle",
        "×",
        1.5,
        false,
    ),
    (
        "Idle again after a 60 KB message in, vs idle",
        "memory",
        "after_inbound_vs_idle",
        "×",
        1.5,
        false,
    ),
    (
        "Idle again after a 64 KiB message out, vs idle",
        "memory",
        "after_outbound_vs_idle",
        "×",
        1.5,
        false,
    ),
    (
        "Idle again 30 s after 2,000 half messages at once, vs idle",
        "memory",
        "released_vs_idle",
        "×",
        1.5,
        false,
    ),
    (
        "RSS with every connection gone, vs before any",
        "memory",
        "after_close_vs_before",
        "×",
        1.1,
        false,
    ),
    (
        "Upgrades per second",
        "connect",
        "connects_per_second",
        "/s",
        20_000.0,
        true,
    ),
    (
        "Fan-out p99, 1k subscribers, 100 msg/s",
        "fanout-1k",
        "latency.p99_ms",
        "ms",
        3.0,
        false,
    ),
    (
        "Fan-out p99, 10k subscribers, 10 msg/s",
        "fanout-10k",
        "latency.p99_ms",
        "ms",
        25.0,
        false,
    ),
    (
        "Server CPU per delivery (1k fan-out)",
        "fanout-1k",
        "server_cpu_us_per_delivery",
        "µs",
        2.0,
        false,
    ),
    (
        "Burst 1k × 2,000: deliveries per second",
        "burst",
        "deliveries_per_second",
        "/s",
        3_000_000.0,
        true,
    ),
];

/// Goals that compare two scenarios of one run: (label, scenario, the
/// scenario it is compared with, figure, highest ratio).
const RATIO_GOALS: &[(&str, &str, &str, &str, f64)] = &[
    (
        "RSS per idle connection, compression negotiated vs not (19k)",
        "deflate-connect-19k",
        "connect-19k",
        "server_rss_per_connection_bytes",
        1.05,
    ),
    (
        "Server CPU per delivery, compressed vs not (1k fan-out, 1 KB JSON)",
        "deflate-fanout-1k",
        "json-fanout-1k",
        "server_cpu_us_per_delivery",
        1.3,
    ),
    (
        "Bytes on the wire per delivery, compressed vs not (1 KB JSON)",
        "deflate-fanout-1k",
        "json-fanout-1k",
        "wire_bytes_per_delivery",
        1.0,
    ),
];

fn format_figure(value: f64) -> String {
    if value.abs() >= 1000.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

/// report.md.
pub fn markdown(document: &Value) -> String {
    let mut out = String::from("# wshub benchmark\n\n");
    let machine = &document["machine"];
    let _ = writeln!(
        out,
        "Machine: {} CPUs ({}), Linux {}. Server: {} build, `wshub{}` (default configuration otherwise), \
         one fresh server per scenario, load generator on the same machine (so it competes with the server \
         for the same cores).\n",
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
        document["profile"].as_str().unwrap_or("release"),
        document["server_args"]
            .as_str()
            .filter(|a| !a.is_empty())
            .map(|a| format!(" {a}"))
            .unwrap_or_default()
    );
    out.push_str("## Against the goals\n\n| figure | measured | goal | |\n|---|---|---|---|\n");
    for (label, prefix, figure, unit, goal, higher_is_better) in GOALS {
        let Some(value) = scenario(document, prefix).and_then(|r| number(r, figure)) else {
            continue;
        };
        let met = if *higher_is_better {
            value >= *goal
        } else {
            value <= *goal
        };
        let relation = if *higher_is_better { "≥" } else { "≤" };
        let _ = writeln!(
            out,
            "| {label} | {} {unit} | {relation} {} {unit} | {} |",
            format_figure(value),
            format_figure(*goal),
            if met { "met" } else { "not met" }
        );
    }
    for (label, ours, theirs, figure, goal) in RATIO_GOALS {
        let pick = |prefix: &str| scenario(document, prefix).and_then(|r| number(r, figure));
        let (Some(ours), Some(theirs)) = (pick(ours), pick(theirs)) else {
            continue;
        };
        if theirs <= 0.0 {
            continue;
        }
        let ratio = ours / theirs;
        let _ = writeln!(
            out,
            "| {label} | {} × ({} / {}) | ≤ {} × | {} |",
            format_figure(ratio),
            format_figure(ours),
            format_figure(theirs),
            format_figure(*goal),
            if ratio <= *goal { "met" } else { "not met" }
        );
    }
    out.push_str("\n## Scenarios\n");
    for entry in document["scenarios"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "\n### {}\n\n`wshub-loadtest {}`\n",
            entry["name"].as_str().unwrap_or("?"),
            entry["command"].as_str().unwrap_or("")
        );
        if let Some(error) = entry.get("error") {
            let _ = writeln!(out, "**failed:** {}", error.as_str().unwrap_or(""));
            continue;
        }
        out.push_str("| figure | value |\n|---|---|\n");
        let mut rows = Vec::new();
        flatten("", &entry["report"], &mut rows);
        for (key, value) in rows {
            let _ = writeln!(out, "| {key} | {value} |");
        }
    }
    out
}

fn flatten(prefix: &str, value: &Value, rows: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, value, rows);
            }
        }
        Value::Number(n) if n.is_f64() => {
            rows.push((prefix.to_owned(), format_figure(n.as_f64().unwrap_or(0.0))))
        }
        other => rows.push((prefix.to_owned(), other.to_string())),
    }
}

/// Every numeric figure of `new` next to the same one in `old`.
pub fn compare(old: &Value, new: &Value) -> String {
    let figures = |document: &Value| {
        let mut rows = Vec::new();
        for entry in document["scenarios"].as_array().into_iter().flatten() {
            let mut scenario_rows = Vec::new();
            flatten("", &entry["report"], &mut scenario_rows);
            let name = entry["name"].as_str().unwrap_or("?").to_owned();
            rows.extend(scenario_rows.into_iter().filter_map(|(key, value)| {
                Some((format!("{name}.{key}"), value.parse::<f64>().ok()?))
            }));
        }
        rows
    };
    let old_figures: std::collections::HashMap<String, f64> = figures(old).into_iter().collect();
    let mut out = String::from("| figure | before | after | after / before |\n|---|---|---|---|\n");
    for (key, after) in figures(new) {
        let Some(before) = old_figures.get(&key) else {
            continue;
        };
        let ratio = if *before == 0.0 {
            "—".to_owned()
        } else {
            format!("{:.2}", after / before)
        };
        let _ = writeln!(
            out,
            "| {key} | {} | {} | {ratio} |",
            format_figure(*before),
            format_figure(after)
        );
    }
    out
}

/// latency.svg: the latency percentiles of every fan-out scenario.
pub fn latency_svg(document: &Value, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    const POINTS: [(&str, &str); 5] = [
        ("p50", "p50_ms"),
        ("p90", "p90_ms"),
        ("p99", "p99_ms"),
        ("p99.9", "p999_ms"),
        ("max", "max_ms"),
    ];
    let series: Vec<(String, Vec<f64>)> = document["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["report"]["scenario"] == "fanout")
        .map(|entry| {
            let values = POINTS
                .iter()
                .map(|(_, key)| number(&entry["report"]["latency"], key).unwrap_or(0.0))
                .collect();
            (entry["name"].as_str().unwrap_or("?").to_owned(), values)
        })
        .collect();
    let top = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1.0_f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("wshub fan-out latency (end to end, ms)", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0usize..POINTS.len() - 1, 0.0..top)?;
    chart
        .configure_mesh()
        .x_labels(POINTS.len())
        .x_label_formatter(&|i| {
            POINTS
                .get(*i)
                .map_or(String::new(), |(label, _)| (*label).to_owned())
        })
        .y_desc("milliseconds")
        .draw()?;
    for (index, (name, values)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(
                values.iter().copied().enumerate(),
                color.stroke_width(2),
            ))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart.draw_series(
            values
                .iter()
                .copied()
                .enumerate()
                .map(|point| Circle::new(point, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        json!({
            "machine": {"cpus": 2, "cpu_model": "test", "kernel": "6"},
            "server_args": "--log-level warn",
            "scenarios": [
                {"name": "fanout-1k", "command": "fanout", "report": {
                    "scenario": "fanout", "lost": 0, "duplicates": 0, "server_cpu_us_per_delivery": 1.5,
                    "latency": {"p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 2.5, "p999_ms": 4.0, "max_ms": 9.0}}},
                {"name": "connect-19k", "command": "connect", "report": {
                    "scenario": "connect", "connections": 100, "connected": 100, "failed": {},
                    "server_rss_per_connection_bytes": 5000.0, "connects_per_second": 25000.0}}
            ]
        })
    }

    #[test]
    fn markdown_states_each_goal_as_met_or_not() {
        let text = markdown(&document());
        assert!(
            text.contains(
                "| Fan-out p99, 1k subscribers, 100 msg/s | 2.500 ms | ≤ 3.000 ms | met |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| RSS per idle connection | 5000 B | ≤ 1024 B | not met |"),
            "{text}"
        );
        assert!(
            text.contains("| Upgrades per second | 25000 /s | ≥ 20000 /s | met |"),
            "{text}"
        );
        assert!(text.contains("| latency.p99_ms | 2.500 |"), "{text}");
    }

    #[test]
    fn a_goal_between_two_rows_of_one_run_is_their_ratio() {
        let mut document = document();
        let scenarios = document["scenarios"].as_array_mut().unwrap();
        scenarios.push(
            json!({"name": "json-fanout-1k", "command": "fanout", "report": {
            "server_cpu_us_per_delivery": 2.0, "wire_bytes_per_delivery": 1000.0}}),
        );
        scenarios.push(
            json!({"name": "deflate-fanout-1k", "command": "fanout --deflate", "report": {
            "server_cpu_us_per_delivery": 3.0, "wire_bytes_per_delivery": 400.0}}),
        );
        let text = markdown(&document);
        assert!(
            text.contains("| Server CPU per delivery, compressed vs not (1k fan-out, 1 KB JSON) | 1.500 × (3.000 / 2.000) | ≤ 1.300 × | not met |"),
            "{text}"
        );
        assert!(
            text.contains("| Bytes on the wire per delivery, compressed vs not (1 KB JSON) | 0.400 × (400.000 / 1000) | ≤ 1.000 × | met |"),
            "{text}"
        );
        // A pair with a row missing states nothing.
        assert!(!text.contains("compression negotiated vs not"), "{text}");
    }

    #[test]
    fn loss_failures_and_leaks_are_problems() {
        assert!(
            problems(
                "x",
                &json!({"lost": 0, "failed": {}, "returned_to_zero": true})
            )
            .is_empty()
        );
        assert_eq!(problems("x", &json!({"lost": 3})).len(), 1);
        assert_eq!(
            problems("x", &json!({"failed": {"tcp connect": 2}})).len(),
            1
        );
        assert_eq!(
            problems("x", &json!({"connections": 10, "connected": 9})).len(),
            1
        );
        assert_eq!(problems("x", &json!({"returned_to_zero": false})).len(), 1);
    }

    #[test]
    fn compare_prints_ratios_of_shared_figures() {
        let old = document();
        let mut new = document();
        new["scenarios"][0]["report"]["latency"]["p99_ms"] = json!(5.0);
        let text = compare(&old, &new);
        assert!(
            text.contains("| fanout-1k.latency.p99_ms | 2.500 | 5.000 | 2.00 |"),
            "{text}"
        );
    }

    #[test]
    fn the_latency_plot_is_an_svg_with_every_fanout_series() {
        let dir = std::env::temp_dir().join(format!("wshub-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("latency.svg");
        latency_svg(&document(), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(100)]);
        assert!(svg.contains("fanout-1k"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
