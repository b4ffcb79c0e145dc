//! Driving the `baton` binary's dataplane commands inside a lab gateway.
use crate::{Gateway, baton_bin};
use anyhow::{Context as _, Result, bail};
use std::collections::BTreeMap;

/// Per-port, per-class packet counters as `baton dataplane stats --json` gives them.
pub type Counters = BTreeMap<String, BTreeMap<String, u64>>;

/// Runs `baton ARGS --pin-dir GW_PIN_DIR` in the gateway's namespace.
pub fn baton(gw: &Gateway, args: &[&str]) -> Result<std::process::Output> {
    let pin = gw.pin_dir.to_string_lossy().into_owned();
    gw.ns
        .command(baton_bin()?)
        .args(args)
        .args(["--pin-dir", &pin])
        .output()
        .context("running baton")
}

pub fn attach(gw: &Gateway) -> Result<()> {
    attach_programs(gw, "baton")
}

/// Attaches a program set (`baton`, `tc-ingress`, `empty`) to every port.
pub fn attach_programs(gw: &Gateway, programs: &str) -> Result<()> {
    let mut args = vec!["dataplane", "attach", "--programs", programs];
    for p in &gw.ports {
        args.extend(["--port", p.name.as_str()]);
    }
    let out = baton(gw, &args)?;
    if !out.status.success() {
        bail!(
            "baton dataplane attach failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub fn counters(gw: &Gateway) -> Result<Counters> {
    let out = baton(gw, &["dataplane", "stats", "--json"])?;
    if !out.status.success() {
        bail!(
            "baton dataplane stats failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing stats --json")?;
    let mut result = Counters::new();
    for port in v.as_array().context("stats --json is not an array")? {
        let name = port["port"].as_str().unwrap_or("?").to_string();
        let classes = port["classes"].as_object().context("no classes")?;
        let row = classes
            .iter()
            .map(|(k, c)| (k.clone(), c["packets"].as_u64().unwrap_or(0)))
            .collect();
        result.insert(name, row);
    }
    Ok(result)
}

/// `after - before` for one port and class (0 when absent).
pub fn delta(after: &Counters, before: &Counters, port: &str, class: &str) -> u64 {
    let get = |c: &Counters| c.get(port).and_then(|r| r.get(class)).copied().unwrap_or(0);
    get(after) - get(before)
}

/// Runs `baton ARGS` in the gateway; its stdout, or an error with its stderr.
pub fn baton_ok(gw: &Gateway, args: &[&str]) -> Result<String> {
    let out = baton(gw, args)?;
    if !out.status.success() {
        bail!(
            "baton {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `baton dataplane instances --json`, parsed.
pub fn instances(gw: &Gateway) -> Result<serde_json::Value> {
    serde_json::from_str(&baton_ok(gw, &["dataplane", "instances", "--json"])?)
        .context("parsing instances --json")
}

/// The scene most dataplane lab tests start from: `addr`/24 on `port`,
/// baton attached to every port, the address owned by `port` as instance 1
/// (`extra`: more `dataplane own` options).
pub fn place(gw: &Gateway, addr: &str, port: &str, extra: &[&str]) -> Result<()> {
    gw.ns
        .ip(&["addr", "add", &format!("{addr}/24"), "dev", port])?;
    attach(gw)?;
    let mut args = vec!["dataplane", "own", addr, "--port", port, "--id", "1"];
    args.extend_from_slice(extra);
    baton_ok(gw, &args)?;
    Ok(())
}
