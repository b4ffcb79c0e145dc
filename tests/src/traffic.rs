//! Traffic the lab sends with real tools, and what the senders say they sent.
use crate::{CLIENT_ADDR, Lab};
use anyhow::{Context as _, Result, bail};
use std::net::Ipv4Addr;

/// `count` broadcast ARP requests from the client for `target` (arping -b
/// keeps broadcasting, so every port on the bridge sees every request).
pub fn arping(lab: &Lab, target: Ipv4Addr, count: u32) -> Result<()> {
    let out = lab.client.run(&[
        "arping",
        "-b",
        "-c",
        &count.to_string(),
        "-w",
        "5",
        "-I",
        "eth0",
        &target.to_string(),
    ]);
    // arping exits 1 when no reply came back; the requests were still sent.
    if let Err(e) = out
        && !format!("{e:#}").contains("exit status: 1")
    {
        return Err(e);
    }
    Ok(())
}

/// Pins neighbour entries both ways so a window of IP traffic has no ARP in it.
pub fn static_neighbours(lab: &Lab, gw: usize, port: usize) -> Result<()> {
    let g = lab.gw(gw);
    let p = &g.ports[port];
    let gw_mac = g.ns.mac(&p.name)?;
    let client_mac = lab.client.mac("eth0")?;
    lab.client.ip(&[
        "neigh",
        "replace",
        &p.addr.to_string(),
        "lladdr",
        &gw_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])?;
    g.ns.ip(&[
        "neigh",
        "replace",
        &CLIENT_ADDR.to_string(),
        "lladdr",
        &client_mac,
        "dev",
        &p.name,
        "nud",
        "permanent",
    ])?;
    Ok(())
}

/// `count` ICMP echo requests from the client; returns how many were answered.
pub fn ping(lab: &Lab, target: Ipv4Addr, count: u32) -> Result<u32> {
    let out = lab.client.run(&[
        "ping",
        "-q",
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        "0.01",
        "-W",
        "1",
        &target.to_string(),
    ])?;
    let line = out
        .lines()
        .find(|l| l.contains("received"))
        .context("no summary from ping")?;
    let received = line
        .split(',')
        .find(|f| f.contains("received"))
        .and_then(|f| f.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("unparsable ping summary")?;
    Ok(received)
}

/// The client's TCP segments sent, from its kernel counters (nstat TcpOutSegs).
pub fn tcp_out_segs(lab: &Lab) -> Result<u64> {
    let out = lab.client.run(&["nstat", "-asz", "TcpOutSegs"])?;
    out.lines()
        .find(|l| l.starts_with("TcpOutSegs"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .context("no TcpOutSegs in nstat output")
}

/// A TCP stream client -> `target` (an iperf3 server bound to it in gateway
/// `gw`) for `secs` at `rate` (iperf3 -b), in the background; its JSON at the end.
pub fn stream_in_background(
    lab: &Lab,
    gw: usize,
    target: &str,
    secs: u32,
    rate: &str,
) -> Result<std::thread::JoinHandle<Result<serde_json::Value>>> {
    lab.spawn(&lab.gw(gw).ns, &["iperf3", "-s", "-1", "-B", target])?;
    lab.gw(gw).ns.wait_listening(5201)?;
    let mut cmd = lab.client.command("iperf3");
    cmd.args(["-c", target, "-t", &secs.to_string(), "-J", "-b", rate]);
    Ok(std::thread::spawn(move || {
        Ok(serde_json::from_slice(&cmd.output()?.stdout)?)
    }))
}

/// The client's TCP counters: (resets and aborts, retransmitted segments).
pub fn tcp_counters(lab: &Lab) -> Result<(u64, u64)> {
    let out = lab.client.run(&[
        "nstat",
        "-asz",
        "TcpEstabResets",
        "TcpExtTCPAbortOnData",
        "TcpExtTCPAbortOnTimeout",
        "TcpOutRsts",
        "TcpRetransSegs",
    ])?;
    let (mut resets, mut retrans) = (0, 0);
    for l in out.lines() {
        let mut f = l.split_whitespace();
        let (Some(name), Some(v)) = (f.next(), f.next().and_then(|v| v.parse::<u64>().ok())) else {
            continue;
        };
        if name == "TcpRetransSegs" {
            retrans = v;
        } else {
            resets += v;
        }
    }
    Ok((resets, retrans))
}

/// Checks an iperf3 -J result: no error, at least `seconds` intervals, and
/// data in the last one (the stream resumed after whatever happened).
pub fn stream_survived(result: &serde_json::Value, seconds: usize) -> Result<()> {
    if let Some(e) = result["error"].as_str() {
        bail!("iperf3 failed: {e}");
    }
    let intervals = result["intervals"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let last = intervals
        .last()
        .and_then(|i| i["sum"]["bytes"].as_u64())
        .unwrap_or(0);
    if intervals.len() < seconds || last == 0 {
        bail!(
            "the stream did not resume: {} intervals, {last} bytes in the last: {result}",
            intervals.len()
        );
    }
    Ok(())
}

/// iperf3 from the client to `target` for `seconds`; returns bits per second.
pub fn iperf(lab: &Lab, gw: usize, target: Ipv4Addr, seconds: u32) -> Result<f64> {
    iperf_with(lab, gw, target, seconds, &[])
}

/// [`iperf`] with more client arguments (`-A 0,1`: the client on CPU 0,
/// the server on CPU 1).
pub fn iperf_with(
    lab: &Lab,
    gw: usize,
    target: Ipv4Addr,
    seconds: u32,
    extra: &[&str],
) -> Result<f64> {
    let server = lab.spawn(
        &lab.gw(gw).ns,
        &["iperf3", "-s", "-1", "-B", &target.to_string()],
    )?;
    lab.gw(gw).ns.wait_listening(5201)?;
    let (target_s, seconds_s) = (target.to_string(), seconds.to_string());
    let mut args = vec!["iperf3", "-c", &target_s, "-t", &seconds_s, "-J"];
    args.extend(extra);
    let out = lab.client.run(&args);
    let _ = lab.kill(server);
    let out = out?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing iperf3 -J output")?;
    if let Some(err) = v["error"].as_str() {
        bail!("iperf3: {err}");
    }
    let bps = v["end"]["sum_sent"]["bits_per_second"]
        .as_f64()
        .context("no sum_sent in iperf3 output")?;
    if bps <= 0.0 {
        bail!("iperf3 sent nothing");
    }
    Ok(bps)
}

/// Sends one raw Ethernet frame out of `dev` in `ns` (an AF_PACKET socket
/// in a thread that entered the namespace): frames no tool here builds,
/// such as an 802.1Q-tagged ARP request (the kernel has no VLAN devices).
pub fn send_raw(ns: &crate::Netns, dev: &str, frame: &[u8]) -> Result<()> {
    let path = ns.path();
    let dev = std::ffi::CString::new(dev)?;
    let frame = frame.to_vec();
    std::thread::spawn(move || -> Result<()> {
        crate::probe::enter(&path)?;
        // SAFETY: plain socket calls on a socket this thread owns; the
        // address structure is zeroed and filled as packet(7) documents.
        unsafe {
            let ifindex = libc::if_nametoindex(dev.as_ptr());
            if ifindex == 0 {
                bail!("no device {dev:?} in the namespace");
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            let sent = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if sent != frame.len() as isize {
                return Err(err).context("sending a raw frame");
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("raw sender panicked"))?
}

/// An idle TCP connection from the client, and when and how it ended.
pub struct HeldConnection {
    ended: std::sync::mpsc::Receiver<(std::time::Instant, String)>,
}

impl HeldConnection {
    /// Connects from the client to `addr`:`port` and waits on it in a thread
    /// of its own (in the client's namespace).
    pub fn open(lab: &Lab, addr: std::net::IpAddr, port: u16) -> Result<HeldConnection> {
        let path = lab.client.path();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (ended_tx, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let stream = crate::probe::enter(&path).and_then(|()| {
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::new(addr, port),
                    std::time::Duration::from_secs(3),
                )
                .context("connecting")
            });
            let mut stream = match stream {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 512];
            let how = loop {
                match std::io::Read::read(&mut stream, &mut buf) {
                    Ok(0) => break "closed".to_string(),
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        break "reset".to_string();
                    }
                    Err(e) => break format!("{e}"),
                }
            };
            let _ = ended_tx.send((std::time::Instant::now(), how));
        });
        ready
            .recv_timeout(std::time::Duration::from_secs(5))
            .context("the connecting thread did not answer")??;
        Ok(HeldConnection { ended })
    }

    /// When and how the connection ended ("reset", "closed", an error), if
    /// it did within `timeout`.
    pub fn ended_within(
        &self,
        timeout: std::time::Duration,
    ) -> Option<(std::time::Instant, String)> {
        self.ended.recv_timeout(timeout).ok()
    }
}
