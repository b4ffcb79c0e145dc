//! baton_xdp on both ports of a lab gateway, with real ARP, ping and TCP.
use baton_lab::dataplane::{attach, counters, delta};
use baton_lab::{Lab, LabSpec, traffic};

#[test]
fn counters_match_real_traffic() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let gw = lab.gw(0);
    attach(gw)?;
    let target = gw.ports[0].addr;

    // ARP: broadcast, so both ports see every request, exactly.
    let before = counters(gw)?;
    traffic::arping(&lab, target, 3)?;
    let after = counters(gw)?;
    assert_eq!(
        delta(&after, &before, "ge0", "arp"),
        3,
        "ge0 ARP: {after:?}"
    );
    assert_eq!(
        delta(&after, &before, "ge1", "arp"),
        3,
        "ge1 ARP: {after:?}"
    );

    // Ping with pinned neighbours: exactly the echo requests, on ge0 only
    // (the bridge learned ge0's MAC from its ARP replies).
    traffic::static_neighbours(&lab, 0, 0)?;
    let before = counters(gw)?;
    let answered = traffic::ping(&lab, target, 10)?;
    let after = counters(gw)?;
    assert_eq!(answered, 10);
    assert_eq!(delta(&after, &before, "ge0", "ipv4"), 10, "{after:?}");
    assert_eq!(delta(&after, &before, "ge0", "arp"), 0);
    assert_eq!(delta(&after, &before, "ge1", "ipv4"), 0);
    assert_eq!(delta(&after, &before, "ge0", "malformed"), 0);

    // TCP: at least every segment the client's kernel says it sent.
    let before = counters(gw)?;
    let sent_before = traffic::tcp_out_segs(&lab)?;
    let bps = traffic::iperf(&lab, 0, target, 1)?;
    let sent = traffic::tcp_out_segs(&lab)? - sent_before;
    let after = counters(gw)?;
    let seen = delta(&after, &before, "ge0", "tcp");
    assert!(bps > 0.0);
    assert!(sent > 1000, "iperf3 sent only {sent} segments");
    assert!(
        seen >= sent,
        "ge0 counted {seen} TCP packets, the client sent {sent}"
    );
    assert_eq!(delta(&after, &before, "ge0", "malformed"), 0);
    Ok(())
}
