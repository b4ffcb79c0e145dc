//! The Grafana dashboard (contrib/grafana/baton.json) against the real
//! thing: every metric it queries is in a scrape of the lab daemon, and
//! every query, run by a real Prometheus that scraped the daemon through a
//! failover (with a refusal, a repair, a conflict and iSCSI I/O), returns data.
use baton_lab::daemon::{Daemon, lab_config};
use baton_lab::iscsi::Target;
use baton_lab::{Lab, LabSpec};
use std::time::{Duration, Instant};

fn dashboard_queries() -> anyhow::Result<Vec<String>> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/grafana/baton.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    Ok(dash["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect())
}

/// The baton_* metric names in a PromQL expression, without the suffixes
/// a histogram adds.
fn metrics_in(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("baton_"))
        .map(str::to_string)
        .collect()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() -> anyhow::Result<()> {
    let queries = dashboard_queries()?;
    assert!(queries.len() >= 10, "{queries:?}");
    let lab = Lab::build(&LabSpec::default())?;
    let timers = "hold_down = \"0\"\nhold_up = \"0\"\nannounce_count = 1";
    // A [health] check for the checks' panel (the loopback: always up).
    let extra = "mac = \"02:ba:70:00:00:01\"\n\n[health.storage]\nlinks = [\"lo\"]";
    let daemon = Daemon::start(&lab, 0, &lab_config(timers, extra))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let gw = &lab.gw(0).ns;

    // Prometheus in the gateway (the endpoint is on its loopback), 1 s scrapes.
    let dir = std::env::temp_dir().join(format!("{}-gw0-daemon", lab.prefix));
    let conf = dir.join("prometheus.yml");
    std::fs::write(
        &conf,
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: baton\n    static_configs:\n      - targets: ['127.0.0.1:9750']\n",
    )?;
    let data = dir.join("tsdb");
    lab.spawn(
        gw,
        &[
            "prometheus",
            &format!("--config.file={}", conf.display()),
            &format!("--storage.tsdb.path={}", data.display()),
            "--web.listen-address=127.0.0.1:9090",
        ],
    )?;
    gw.wait_listening(9090)?;

    // Every metric queried exists in a scrape.
    let scrape = gw.http_get("127.0.0.1:9750".parse()?, "/metrics")?;
    std::thread::sleep(Duration::from_secs(2));
    // What the panels show, made to happen: iSCSI I/O, a failover, a refusal
    // (both cables out), a repair, a conflict.
    let target = Target::start(gw, "192.0.2.100".parse()?, 8)?;
    // Three inquiries through the target (PDUs both ways).
    let inquire = || -> anyhow::Result<()> {
        for _ in 0..3 {
            let out = lab
                .client
                .command("iscsi-inq")
                .args(["-i", "iqn.2026-11.lab.baton:client", &target.url()])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    inquire()?;
    lab.pull_cable(0, 0)?;
    daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(3))?;
    lab.pull_cable(0, 1)?;
    std::thread::sleep(Duration::from_millis(500));
    lab.plug_cable(0, 0)?;
    lab.plug_cable(0, 1)?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let owner_dev = gw
        .ip(&["-br", "-4", "addr", "show"])?
        .lines()
        .find(|l| l.contains("192.0.2.100/"))
        .and_then(|l| {
            l.split_whitespace()
                .next()?
                .split('@')
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default();
    gw.ip(&["addr", "del", "192.0.2.100/24", "dev", &owner_dev])?;
    let claim = baton_lab::frames::gratuitous_arp([0x02, 0xee, 0, 0, 0, 0x66], [192, 0, 2, 100]);
    baton_lab::traffic::send_raw(&lab.client, "eth0", &claim)?;
    inquire()?;
    let scrape_after = gw.http_get("127.0.0.1:9750".parse()?, "/metrics")?;
    for q in &queries {
        for m in metrics_in(q) {
            let base = m
                .trim_end_matches("_bucket")
                .trim_end_matches("_total")
                .to_string();
            assert!(
                scrape.contains(&format!("\n{m}"))
                    || scrape_after.contains(&format!("\n{m}"))
                    || scrape_after.contains(&format!("# TYPE {base} ")),
                "{m} (in {q}) is not in a scrape:\n{scrape_after}"
            );
        }
    }
    // Every query returns data (Prometheus needs a few scrapes after the events).
    let started = Instant::now();
    let mut empty = queries.clone();
    while !empty.is_empty() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_secs(1));
        let mut still = Vec::new();
        for q in &empty {
            let path = format!("/api/v1/query?query={}", url_encode(q));
            let answer = gw.http_get("127.0.0.1:9090".parse()?, &path)?;
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
            let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            assert_ne!(v["status"], "error", "{q}: {body}");
            if v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
                still.push(q.clone());
            }
        }
        empty = still;
    }
    assert!(empty.is_empty(), "queries with no data: {empty:#?}");
    Ok(())
}
