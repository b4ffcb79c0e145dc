//! CPU steering on real traffic: an instance with `cpus = [1]` gets its
//! TCP stream redirected into the cpumap queue of CPU 1, where the kernel
//! stack runs it (softnet "processed" on CPU 1 grows by at least as much),
//! and the stream arrives intact (no checksum errors, data delivered).
use baton_lab::dataplane::{baton_ok, place};
use baton_lab::{Lab, LabSpec};

const INSTANCE: &str = "192.0.2.100";

/// Packets the network stack processed on `cpu` (first column of softnet_stat, hex).
fn softnet_processed(cpu: usize) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/net/softnet_stat")?;
    let line = stat
        .lines()
        .nth(cpu)
        .ok_or_else(|| anyhow::anyhow!("no CPU {cpu} in softnet_stat"))?;
    let first = line.split_whitespace().next().unwrap_or("0");
    Ok(u64::from_str_radix(first, 16)?)
}

/// A counter from the namespace's /proc/net/snmp (e.g. Tcp InCsumErrors).
fn snmp(ns: &baton_lab::Netns, proto: &str, field: &str) -> anyhow::Result<u64> {
    let text = ns.run(&["cat", "/proc/net/snmp"])?;
    let mut rows = text.lines().filter(|l| l.starts_with(&format!("{proto}:")));
    let (names, values) = (rows.next(), rows.next());
    let (Some(names), Some(values)) = (names, values) else {
        anyhow::bail!("no {proto} rows in /proc/net/snmp");
    };
    let i = names
        .split_whitespace()
        .position(|n| n == field)
        .ok_or_else(|| anyhow::anyhow!("no {field}"))?;
    Ok(values.split_whitespace().nth(i).unwrap_or("0").parse()?)
}

#[test]
fn an_instances_stream_runs_on_its_cpu() -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism()?.get();
    assert!(
        cpus >= 2,
        "steering needs two CPUs; this machine has {cpus}"
    );
    let lab = Lab::build(&LabSpec::default())?;
    let gw = lab.gw(0);
    // A cpumap redirect drops CHECKSUM_PARTIAL: the sender computes checksums.
    lab.client.run(&["ethtool", "-K", "eth0", "tx", "off"])?;
    place(gw, INSTANCE, "ge0", &["--cpu", "1"])?;

    let before = softnet_processed(1)?;
    let bps = baton_lab::traffic::iperf(&lab, 0, INSTANCE.parse()?, 2)?;
    let processed = softnet_processed(1)? - before;

    let steered: std::collections::BTreeMap<String, u64> =
        serde_json::from_str(&baton_ok(gw, &["dataplane", "steered", "--json"])?)?;
    println!(
        "iperf3 {:.2} Gbit/s, steered {steered:?}, CPU 1 processed {processed}",
        bps / 1e9
    );
    let to_cpu1 = steered.get("1").copied().unwrap_or(0);
    assert!(to_cpu1 > 1000, "the stream was not steered: {steered:?}");
    assert_eq!(steered.len(), 1, "steered outside the set: {steered:?}");
    assert!(
        processed >= to_cpu1,
        "CPU 1 processed {processed} packets, fewer than the {to_cpu1} steered to it"
    );
    assert_eq!(snmp(&gw.ns, "Tcp", "InCsumErrors")?, 0, "checksum errors");
    Ok(())
}
