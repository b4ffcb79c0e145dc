//! The actuator: carries out a move (prepare the target, flip, announce,
//! clean the old port) with rtnetlink, the BPF
//! instance table and AF_PACKET announcements; every step checks the kernel's
//! state first, so it can be repeated (and a crash mid-move repaired).
use crate::daemon::netlink::batch::{Batch, Request};
use crate::daemon::netlink::dump;
use crate::daemon::netlink::requests::{
    address_message, address_request, route_requests, up_request,
};
use crate::daemon::wire::announce;
use crate::dataplane::{InstanceTable, key_for};
use anyhow::{Context as _, Result};
use baton_common::InstanceEntry;
use baton_config::model::{Instance, Route};
use futures_util::StreamExt as _;
use ipnet::IpNet;
use rtnetlink::packet_route::link::MacVlanMode;
use rtnetlink::packet_route::neighbour::{NeighbourAttribute, NeighbourState};
use rtnetlink::{Handle, LinkMacVlan, LinkUnspec};
use std::net::IpAddr;
use std::time::Instant;
use tracing::{debug, info, warn};

/// How long a move waits for its IPv6 address to become local.
const LOCAL_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_millis(100);

/// A step of a relocation (not a first placement) after which
/// `BATON_FAILPOINT=STEP` aborts the daemon: the crash-repair tests.
fn failpoint(step: &str, relocation: bool) {
    if relocation && std::env::var("BATON_FAILPOINT").is_ok_and(|v| v == step) {
        eprintln!("baton: failpoint {step}: aborting");
        std::process::abort();
    }
}

pub struct Actuator {
    handle: Handle,
    /// A move's requests in one datagram (and the other address, route
    /// and link-up requests, one builder each).
    batch: std::sync::Mutex<Batch>,
    pub table: InstanceTable,
    /// One AF_PACKET socket per port for announcements.
    sockets: std::collections::BTreeMap<u32, announce::PortSocket>,
    /// The accounting program every instance macvlan carries.
    macvlan_tc: crate::dataplane::macvlan::MacvlanTc,
}

impl Actuator {
    pub fn new(
        table: InstanceTable,
        macvlan_tc: crate::dataplane::macvlan::MacvlanTc,
    ) -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        tokio::spawn(conn);
        Ok(Actuator {
            handle,
            batch: std::sync::Mutex::new(Batch::new()?),
            table,
            sockets: Default::default(),
            macvlan_tc,
        })
    }

    /// The accounting program on an instance's macvlan (one a restart
    /// adopted, or one someone detached it from).
    pub fn ensure_macvlan_program(&self, name: &str, ifindex: u32) -> Result<()> {
        self.macvlan_tc.ensure(name, ifindex)
    }

    /// Adds the instance address to a port (replace: idempotent).
    pub fn add_address(&self, ifindex: u32, net: IpNet) -> Result<()> {
        self.run(vec![address_request(ifindex, net)])
    }

    /// `requests` in one datagram, in order ([`Batch`]).
    fn run(&self, requests: Vec<Request>) -> Result<()> {
        self.batch
            .lock()
            .map_err(|_| anyhow::anyhow!("rtnetlink batch lock poisoned"))?
            .run(requests)
    }

    /// Waits until the kernel has the local route of `addr` on `dev`. An
    /// IPv6 address, even NODAD, gets it from addrconf's DAD work after
    /// RTM_NEWADDR has been answered (the work needs the RTNL our next
    /// requests hold). Until then only the old port's local route makes the
    /// address local, and once the old port is cleaned nothing does: the
    /// client's answers (its NA to our solicitation, its retransmissions)
    /// are dropped and the stream waits a second for the next
    /// solicitation. A route lookup cannot tell whose local route answers,
    /// so this reads the IPv6 routes (the local table's entries name their
    /// device). IPv4 local routes are in place when the request returns.
    pub async fn wait_local(&self, addr: IpAddr, dev: u32) -> Result<()> {
        let IpAddr::V6(v6) = addr else {
            return Ok(());
        };
        let began = std::time::Instant::now();
        while began.elapsed() < LOCAL_WAIT_LIMIT {
            let found = dump::routes(libc::AF_INET6)
                .await
                .context("reading the IPv6 routes")?
                .iter()
                .any(|r| r.local && r.prefix == 128 && r.dst == addr && r.oif == Some(dev));
            if found {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
        warn!(addr = %v6, dev, "no local route after {LOCAL_WAIT_LIMIT:?}: announcing anyway");
        Ok(())
    }

    /// Removes the address from a device if it is there: one RTM_DELADDR,
    /// no dump (with a thousand addresses a dump per move would be quadratic).
    pub async fn del_address(&self, ifindex: u32, net: IpNet) -> Result<bool> {
        match self
            .handle
            .address()
            .del(address_message(ifindex, net))
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e))
                if [-libc::EADDRNOTAVAIL, -libc::ENOENT, -libc::ENODEV].contains(&e.raw_code()) =>
            {
                Ok(false)
            }
            Err(e) => Err(e).with_context(|| format!("removing {net} from ifindex {ifindex}")),
        }
    }

    /// Points the instance's static routes at `ifindex`.
    pub fn replace_routes(&self, routes: &[Route], ifindex: u32) -> Result<()> {
        self.run(route_requests(routes, ifindex)?)
    }

    /// The macvlan carrying an instance's own MAC on a port (keepalived's
    /// use_vmac), created if missing; brought up when `up`. Returns its ifindex.
    /// A standby (down) macvlan holds no place in the port's unicast filter:
    /// the MAC is not on that port until it comes up.
    pub async fn ensure_macvlan(
        &self,
        name: &str,
        lower: u32,
        mac: [u8; 6],
        up: bool,
    ) -> Result<u32> {
        let existing = match crate::netdev::index_of(name) {
            // Someone else's device under our name, or a wrong MAC: made anew.
            Some(ifindex) if crate::netdev::mac_of(name).ok() == Some(mac) => Some(ifindex),
            Some(_) => {
                self.del_link(name).await?;
                None
            }
            None => None,
        };
        let ifindex = match existing {
            Some(ifindex) => ifindex,
            None => {
                // Created down: its program goes on before it carries anything.
                let msg = LinkMacVlan::new(name, lower, MacVlanMode::Bridge)
                    .address(mac.to_vec())
                    .down()
                    .build();
                self.handle
                    .link()
                    .add(msg)
                    .execute()
                    .await
                    .with_context(|| format!("creating macvlan {name}"))?;
                crate::netdev::index_of(name)
                    .with_context(|| format!("macvlan {name} vanished after creation"))?
            }
        };
        self.macvlan_tc.ensure(name, ifindex)?;
        if up {
            self.set_up(name, ifindex)?;
        }
        Ok(ifindex)
    }

    fn set_up(&self, name: &str, ifindex: u32) -> Result<()> {
        self.run(vec![up_request(name, ifindex)])
    }

    /// Turns a macvlan into a standby: address removed, down.
    pub async fn standby_macvlan(&self, name: &str, net: IpNet) -> Result<()> {
        let Some(ifindex) = crate::netdev::index_of(name) else {
            return Ok(());
        };
        self.del_address(ifindex, net).await?;
        let msg = LinkUnspec::new_with_index(ifindex).down().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .with_context(|| format!("taking {name} down"))?;
        Ok(())
    }

    /// Deletes a link (an instance's macvlan, with its address) if it exists.
    pub async fn del_link(&self, name: &str) -> Result<bool> {
        self.macvlan_tc.forget(name)?;
        let Some(ifindex) = crate::netdev::index_of(name) else {
            return Ok(false);
        };
        self.handle
            .link()
            .del(ifindex)
            .execute()
            .await
            .with_context(|| format!("deleting {name}"))?;
        Ok(true)
    }

    /// Forgets what a failed port learned (non-permanent
    /// neighbour entries). Only for a failed port: a live one's cache is right.
    pub async fn flush_neighbours(&self, ifindex: u32) -> Result<usize> {
        let mut dump = self.handle.neighbours().get().execute();
        let mut stale = Vec::new();
        while let Some(msg) = dump.next().await {
            let msg = msg.context("dumping neighbours")?;
            let permanent = msg.header.state == NeighbourState::Permanent
                || msg.header.state == NeighbourState::Noarp;
            let has_dst = msg
                .attributes
                .iter()
                .any(|a| matches!(a, NeighbourAttribute::Destination(_)));
            if msg.header.ifindex == ifindex && !permanent && has_dst {
                stale.push(msg);
            }
        }
        let n = stale.len();
        for msg in stale {
            // Gone already is fine.
            let _ = self.handle.neighbours().del(msg).execute().await;
        }
        Ok(n)
    }

    /// Opens a port's announcement socket ahead of its first move: the
    /// socket(2) and bind(2) took ~80 µs of the first failover's path.
    pub fn prepare_port(&mut self, ifindex: u32) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.sockets.entry(ifindex) {
            match announce::PortSocket::for_sending(ifindex) {
                Ok(sock) => {
                    e.insert(sock);
                }
                // The move opens it then (and says so if it cannot).
                Err(err) => {
                    debug!(ifindex, error = %format!("{err:#}"), "announcement socket not opened ahead")
                }
            }
        }
    }

    /// One round of announcements from a port, on its cached socket.
    pub fn announce_now(
        &mut self,
        ifindex: u32,
        mac: [u8; 6],
        addr: IpAddr,
        vlan: Option<u16>,
    ) -> Result<()> {
        let sock = match self.sockets.entry(ifindex) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(announce::PortSocket::for_sending(ifindex)?)
            }
        };
        for frame in crate::daemon::wire::frames::announcements(mac, addr, vlan) {
            if let Err(e) = sock.send(&frame) {
                // The port may have been re-created: a fresh socket next time.
                self.sockets.remove(&ifindex);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Carries out one move, make-before-break: prepare the target, flip the
    /// map, announce once, clean the old port. Returns when each step ended.
    pub async fn move_instance(&mut self, m: &MoveSpec<'_>) -> Result<MoveSteps> {
        let inst = m.instance;
        let key = key_for(inst.vlan, inst.address.addr());
        // 1. Prepare the target: its own MAC first, then the address and routes.
        let began = Instant::now();
        let (to_dev, macvlan) = match (&m.to_macvlan, inst.mac) {
            (Some(name), Some(mac)) => (
                self.ensure_macvlan(name, m.to_ifindex, mac, false).await?,
                Some(name),
            ),
            _ => (m.to_ifindex, None),
        };
        // Macvlan up, address, routes: one datagram, carried out in order.
        // Should one fail, the move fails before the flip: the old port is
        // as it was, and the reconcile tidies the target.
        let mut requests = Vec::with_capacity(2 + inst.routes.len());
        if let Some(name) = macvlan {
            requests.push(up_request(name, to_dev));
        }
        requests.push(address_request(to_dev, inst.address));
        requests.extend(route_requests(&inst.routes, to_dev)?);
        self.run(requests)?;
        let prepared = Instant::now();
        self.wait_local(inst.address.addr(), to_dev).await?;
        let local = Instant::now();
        debug!(instance = m.name, "prepared");
        failpoint("prepared", m.from_ifindex.is_some());
        // 2. One atomic update: the dataplane now answers and steers on the target.
        self.table.set(&key, &m.entry)?;
        let flipped = Instant::now();
        failpoint("flipped", m.from_ifindex.is_some());
        // 3. First announcement at once; the rest follow in the background.
        self.announce_now(m.to_ifindex, m.entry.mac, inst.address.addr(), inst.vlan)?;
        let announced = Instant::now();
        debug!(instance = m.name, "flipped and announced");
        // 4. Clean the old port; the neighbour and route-cache flushes are
        // per port, once per plan: see `after_plan`.
        if let Some(from) = m.from_ifindex {
            match &m.from_macvlan {
                // A macvlan going down takes its MAC and address off the old port
                // and stays as the standby for a move back.
                Some(name) => {
                    self.standby_macvlan(name, inst.address).await?;
                }
                None => {
                    self.del_address(from, inst.address).await?;
                }
            }
        }
        failpoint("cleaned", m.from_ifindex.is_some());
        info!(instance = m.name, to = m.to_ifindex, "moved");
        Ok(MoveSteps {
            began,
            prepared,
            local,
            flipped,
            announced,
            cleaned: Instant::now(),
        })
    }
}

/// When each step of a move ended: the daemon's part of a failover's trace
/// (`move steps` in the debug log, on CLOCK_MONOTONIC like the kernel's).
#[derive(Clone, Copy, Debug)]
pub struct MoveSteps {
    pub began: Instant,
    /// The target is up with the instance's MAC (its macvlan), address and
    /// routes: one datagram.
    pub prepared: Instant,
    /// The address is local (IPv6: after addrconf's work).
    pub local: Instant,
    /// The instance table names the target.
    pub flipped: Instant,
    /// The first announcement was sent.
    pub announced: Instant,
    /// The old port no longer has the address.
    pub cleaned: Instant,
}

pub struct MoveSpec<'a> {
    pub name: &'a str,
    pub instance: &'a Instance,
    /// The target port.
    pub to_ifindex: u32,
    /// The macvlan to carry the instance's MAC there (when it has one).
    pub to_macvlan: Option<String>,
    pub from_ifindex: Option<u32>,
    pub from_macvlan: Option<String>,
    pub entry: InstanceEntry,
}

/// After a plan, for the ports it moved instances off: the failed ones
/// forget their neighbours, and the route caches are flushed.
pub async fn after_plan(
    actuator: &Actuator,
    failed_sources: &[u32],
    families: (bool, bool),
) -> Result<()> {
    for ifindex in failed_sources {
        let n = actuator.flush_neighbours(*ifindex).await?;
        debug!(ifindex, flushed = n, "neighbours of a failed port flushed");
    }
    if families.0 {
        flush_route_cache(false);
    }
    if families.1 {
        flush_route_cache(true);
    }
    Ok(())
}

/// The route-cache flush: IPv4 has no route cache since 3.6, but next-hop exceptions
/// (PMTU, redirects) remain; IPv6 has cached clones. Flushing is a /proc write.
pub fn flush_route_cache(ipv6: bool) {
    let path = if !ipv6 {
        "/proc/sys/net/ipv4/route/flush"
    } else {
        "/proc/sys/net/ipv6/route/flush"
    };
    if let Err(e) = std::fs::write(path, "1") {
        debug!(%path, error = %e, "route cache flush failed");
    }
}
