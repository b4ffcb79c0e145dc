//! The lab demo (v0): a client, a switch and a gateway with two ports; baton's
//! dataplane on both ports; real ARP, ping and TCP; counters checked against
//! what the senders sent.
use anyhow::{Result, bail};
use baton_lab::dataplane::{attach, counters, delta};
use baton_lab::{Lab, LabSpec, traffic};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use std::path::Path;
use std::time::Instant;

pub fn run(bin: &Path) -> Result<()> {
    let started = Instant::now();
    baton_lab::use_baton_bin(bin.to_path_buf());
    let _ = baton_lab::sweep_stale();
    println!("[demo] building the lab: client -- switch (bridge) -- gateway ge0/ge1");
    let lab = Lab::build(&LabSpec::default())?;
    let gw = lab.gw(0);
    attach(gw)?;
    println!(
        "[demo] baton_xdp attached to ge0 and ge1 (pins in {})",
        gw.pin_dir.display()
    );
    let target = gw.ports[0].addr;

    let mut checks: Vec<(String, String, u64, u64, bool)> = Vec::new();
    let before = counters(gw)?;
    println!("[demo] client: 5 broadcast ARP requests for {target}");
    traffic::arping(&lab, target, 5)?;
    let after = counters(gw)?;
    for port in ["ge0", "ge1"] {
        let seen = delta(&after, &before, port, "arp");
        checks.push((
            "ARP requests (broadcast)".into(),
            port.into(),
            5,
            seen,
            seen == 5,
        ));
    }

    traffic::static_neighbours(&lab, 0, 0)?;
    let before = counters(gw)?;
    println!("[demo] client: 100 pings to {target}");
    let answered = traffic::ping(&lab, target, 100)?;
    let after = counters(gw)?;
    let seen = delta(&after, &before, "ge0", "ipv4");
    checks.push((
        "ICMP echo requests".into(),
        "ge0".into(),
        100,
        seen,
        seen == 100 && answered == 100,
    ));

    let before = counters(gw)?;
    let sent_before = traffic::tcp_out_segs(&lab)?;
    println!("[demo] client: iperf3 TCP to {target} for 2 s");
    let bps = traffic::iperf(&lab, 0, target, 2)?;
    let sent = traffic::tcp_out_segs(&lab)? - sent_before;
    let after = counters(gw)?;
    let seen = delta(&after, &before, "ge0", "tcp");
    checks.push((
        "TCP segments (>= sent)".into(),
        "ge0".into(),
        sent,
        seen,
        seen >= sent,
    ));

    println!("\n[demo] baton dataplane stats (in the gateway):");
    let out = baton_lab::dataplane::baton(gw, &["dataplane", "stats"])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));

    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(["traffic", "port", "sent", "counted", "ok"]);
    for (what, port, sent, seen, ok) in &checks {
        table.add_row([
            what.clone(),
            port.clone(),
            sent.to_string(),
            seen.to_string(),
            if *ok { "yes" } else { "NO" }.into(),
        ]);
    }
    println!("\n{table}");
    println!(
        "iperf3 through baton_xdp: {:.2} Gbit/s; demo took {:.1} s",
        bps / 1e9,
        started.elapsed().as_secs_f64()
    );
    if checks.iter().any(|c| !c.4) {
        bail!("counters do not match the traffic sent");
    }
    println!("[demo] counters match the traffic sent");
    Ok(())
}
