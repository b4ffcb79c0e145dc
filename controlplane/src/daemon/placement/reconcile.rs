//! Desired vs actual, repaired. For each instance the desired state is its
//! placement: the owner port, the device its address lives on (the port, or
//! the instance's macvlan on it: up, its MAC, that lower port), the address
//! there and nowhere else baton manages, standby macvlans down and bare, the
//! static routes through the owner, the dataplane entry. Whatever differs is
//! put right and reported (`repaired INSTANCE WHAT`); nothing is written when
//! nothing differs, so a repair never triggers itself.
//!
//! An instance with no placement yet (start, restart, reload) adopts where
//! the kernel has its address, so a restart moves nothing. Errors stay with
//! their instance: recorded, retried with backoff, never stopping the others.
use super::Stage;
use super::actuator::Actuator;
use super::on_port::{OnPort, macvlan_owner_id};
use crate::daemon::netlink::decode::LinkEvent;
use crate::daemon::netlink::observed::Observed;
use crate::dataplane::{self, key_for};
use crate::decide::Link;
use crate::netdev;
use crate::protocol::Repair;
use anyhow::{Context as _, Result};
use baton_common::InstanceEntry;
use baton_config::{InstanceName, PortName};
use std::collections::BTreeSet;
use tracing::{info, warn};

impl Stage<'_> {
    /// Reconciles the instances `names` (and, with `sweep`, removes what
    /// removed instances left). True when it changed the placement, so the
    /// engine must decide again.
    pub async fn reconcile(
        &mut self,
        names: BTreeSet<InstanceName>,
        sweep: bool,
        observed: &Observed,
    ) -> bool {
        if sweep {
            self.sweep_leftovers(observed).await;
        }
        let mut changed = false;
        for name in names {
            if !self.ctx.config.instances.contains_key(&name) {
                continue;
            }
            let before = self.state.placement.get(&name).cloned();
            match self.reconcile_instance(&name, observed).await {
                Ok(repairs) => {
                    if self.state.trouble.remove(&name).is_some() {
                        info!(instance = %name, "reconciled again after errors");
                    }
                    // Taking an instance the cluster (or a failed `withdraw`
                    // check) withholds off this host is the withdrawal (its
                    // own event), not drift repaired.
                    let withdrawing = !self.ctx.may_hold(&name);
                    for (what, detail) in repairs {
                        if withdrawing {
                            info!(instance = %name, what = ?what, %detail, "withdrawn from this host");
                        } else {
                            self.state.note_repair(self.ctx.report, &name, what, detail);
                        }
                    }
                }
                Err(e) => self
                    .state
                    .note_trouble(&name, format!("{e:#}"), self.ctx.report),
            }
            changed |= before != self.state.placement.get(&name).cloned();
        }
        changed
    }

    /// One instance made to agree with its placement; returns the repairs.
    async fn reconcile_instance(
        &mut self,
        name: &InstanceName,
        observed: &Observed,
    ) -> Result<Vec<(Repair, String)>> {
        let config = self.ctx.config;
        let ports = self.ctx.ports;
        let inst = config
            .instances
            .get(name)
            .with_context(|| format!("no instance {name}"))?;
        let id = baton_config::instance_id(name);
        let macvlan = |port: &PortName| OnPort { name, inst, port }.macvlan();
        let addr = inst.address.addr();
        let key = key_for(inst.vlan, addr);
        let mut repairs = Vec::new();

        // A placement on a port the instance no longer lists (a reload
        // narrowed it) stays until the engine moves it, make-before-break;
        // on a port that is gone it stays too: the engine moves it.
        if !self.state.placement.contains_key(name)
            && self.ctx.may_hold(name)
            && let Some(p) = self.adopt(name, observed)
        {
            self.state.placement.insert(name.clone(), p);
        }
        let owner = self.state.placement.get(name).cloned();
        let owner_port = owner.as_ref().filter(|p| ports.ifindex(p).is_some());

        // The owner's device: the port, or the instance's macvlan on it.
        let mut dev = None;
        if let Some(port) = owner_port {
            let lower = ports.ifindex(port).context("owner vanished")?;
            dev = Some(match (macvlan(port), inst.mac) {
                (Some(mv), Some(mac)) => {
                    let seen = observed.link(&mv);
                    let right = seen.is_some_and(|l| l.mac == Some(mac) && l.lower == Some(lower));
                    if !right || !seen.is_some_and(|l| l.admin_up) {
                        let what = match seen {
                            None => "macvlan missing",
                            Some(_) if !right => "macvlan had another MAC or lower port",
                            Some(_) => "macvlan was down",
                        };
                        if seen.is_some() && !right {
                            self.actuator.del_link(&mv).await?;
                        }
                        repairs.push((Repair::Device, format!("{mv} on {port}: {what}")));
                    }
                    match seen {
                        Some(l) if right && l.admin_up => {
                            self.actuator.ensure_macvlan_program(&mv, l.ifindex)?;
                            l.ifindex
                        }
                        _ => {
                            let ifindex =
                                self.actuator.ensure_macvlan(&mv, lower, mac, true).await?;
                            // Re-created or brought up: its address may be gone.
                            self.actuator.add_address(ifindex, inst.address)?;
                            ifindex
                        }
                    }
                }
                _ => lower,
            });
        }
        if let Some(d) = dev
            && !observed.holders(addr).any(|h| h == d)
            && repairs.is_empty()
        {
            self.actuator.add_address(d, inst.address)?;
            repairs.push((
                Repair::Address,
                format!(
                    "{} was missing from {}",
                    inst.address,
                    owner.as_deref().unwrap_or("?")
                ),
            ));
        }

        // Copies: the address on any device baton manages but the owner's,
        // an up standby, a macvlan for a port the instance does not list.
        let managed: BTreeSet<u32> = ports
            .ifindexes()
            .chain(
                observed
                    .links
                    .iter()
                    .filter(|l| macvlan_owner_id(&l.name) == Some(id))
                    .map(|l| l.ifindex),
            )
            .collect();
        for holder in observed
            .holders(addr)
            .filter(|h| managed.contains(h) && Some(*h) != dev)
        {
            self.actuator.del_address(holder, inst.address).await?;
            let on = netdev::name_of(holder).unwrap_or_else(|| holder.to_string());
            repairs.push((Repair::Copy, format!("{} removed from {on}", inst.address)));
        }
        // The macvlans it should have: on its ports, and on its owner port
        // while a reload's narrowing has yet to move it off.
        let expected: Vec<(String, PortName)> = inst
            .ports
            .iter()
            .chain(owner.iter().filter(|o| !inst.ports.contains(o)))
            .filter_map(|p| Some((macvlan(p)?, p.clone())))
            .collect();
        for l in observed
            .links
            .iter()
            .filter(|l| macvlan_owner_id(&l.name) == Some(id))
        {
            match expected.iter().find(|(mv, _)| *mv == l.name) {
                None => {
                    self.actuator.del_link(&l.name).await?;
                    repairs.push((Repair::Leftover, format!("{} deleted", l.name)));
                }
                Some((_, port)) if Some(port) != owner.as_ref() && l.admin_up => {
                    self.actuator.standby_macvlan(&l.name, inst.address).await?;
                    repairs.push((Repair::Copy, format!("standby {} was up", l.name)));
                }
                _ => {}
            }
        }
        // Standbys wait, down, on the instance's other ports.
        if let Some(mac) = inst.mac {
            for (mv, port) in expected.iter().filter(|(_, p)| Some(p) != owner.as_ref()) {
                if let Some(lower) = ports.ifindex(port) {
                    let seen = observed.link(mv);
                    let wrong = |l: &&LinkEvent| l.lower != Some(lower) || l.mac != Some(mac);
                    if seen.is_some_and(|l| wrong(&l)) {
                        self.actuator.del_link(mv).await?;
                    }
                    match seen {
                        Some(l) if !wrong(&l) => {
                            // Its program must be there (and this baton's)
                            // before a failover brings it up.
                            self.actuator.ensure_macvlan_program(mv, l.ifindex)?;
                        }
                        _ => {
                            self.actuator.ensure_macvlan(mv, lower, mac, false).await?;
                        }
                    }
                }
            }
        }

        // The dataplane entry and the routes.
        let Some(port) = owner_port else {
            if owner.is_none() {
                // Not placed: the dataplane must not claim it either, nor
                // the rest of its last move's announcements (a withdrawal
                // or a handover right after a move sent them for the
                // taker's address).
                self.state.stop_announcing(name);
                self.actuator.table.remove(&key)?;
            }
            return Ok(repairs);
        };
        let entry = OnPort { name, inst, port }.entry(ports)?;
        if self.actuator.table.get(&key) != Some(entry) {
            self.actuator.table.set(&key, &entry)?;
            repairs.push((Repair::MapEntry, format!("entry set to owner {port}")));
        }
        let dev = dev.context("owner device vanished")?;
        for r in &inst.routes {
            if !observed.has_route(r.to, r.via, dev) {
                self.actuator.replace_routes(std::slice::from_ref(r), dev)?;
                repairs.push((Repair::Route, format!("{} via {}", r.to, r.via)));
            }
        }
        if repairs.iter().any(|(w, _)| {
            matches!(
                w,
                Repair::Address | Repair::Device | Repair::Copy | Repair::MapEntry
            )
        }) {
            // Clients may point elsewhere (a repair, an interrupted move).
            let ifindex = entry.owner_ifindex;
            if let Err(e) = self
                .actuator
                .announce_now(ifindex, entry.mac, addr, inst.vlan)
            {
                warn!(instance = %name, error = %format!("{e:#}"), "announcement");
            }
            self.spawn_announcements(name, ifindex, entry.mac);
        }
        Ok(repairs)
    }

    /// Where the kernel has an instance's address among its ports (a
    /// restart, a reload): one holder is kept; with several (a crash
    /// mid-move) the one the map names if healthy, else the first healthy
    /// in the instance's order. The other copies are cleaned by the caller.
    fn adopt(&self, name: &InstanceName, observed: &Observed) -> Option<PortName> {
        let ports = self.ctx.ports;
        let inst = self.ctx.config.instances.get(name)?;
        let addr = inst.address.addr();
        let holders: Vec<&PortName> = inst
            .ports
            .iter()
            .filter(|port| {
                OnPort { name, inst, port }
                    .device(ports, observed)
                    .is_some_and(|d| observed.holders(addr).any(|h| h == d))
            })
            .collect();
        let healthy = |p: &&PortName| ports.get(p).is_some_and(|p| p.state.link == Link::Up);
        let map_owner = self
            .actuator
            .table
            .get(&key_for(inst.vlan, addr))
            .and_then(|e| ports.name_of(e.owner_ifindex).cloned());
        if holders.len() > 1 {
            warn!(instance = %name, "address on two ports (interrupted move): keeping one");
        }
        map_owner
            .filter(|o| holders.contains(&o) && healthy(&o))
            .or_else(|| holders.iter().find(|p| healthy(p)).map(|p| (*p).clone()))
            .or_else(|| holders.first().map(|p| (*p).clone()))
    }

    /// What baton made for instances that no longer exist (removed from
    /// the config, also while baton was stopped): their dataplane entries
    /// (which name the owner and the id), their addresses on our ports and
    /// their macvlans. Recognised by the pinned map and by macvlan names,
    /// never by config order.
    async fn sweep_leftovers(&mut self, observed: &Observed) {
        let config = self.ctx.config;
        let wanted: BTreeSet<_> = config
            .instances
            .values()
            .flat_map(|i| {
                let key = key_for(i.vlan, i.address.addr());
                [Some(key), dataplane::untagged(&key)]
            })
            .flatten()
            .collect();
        let ids: BTreeSet<u32> = config
            .instances
            .iter()
            .filter(|(_, i)| i.mac.is_some())
            .map(|(n, _)| baton_config::instance_id(n))
            .collect();
        let ports: BTreeSet<u32> = self.ctx.ports.ifindexes().collect();
        for (key, entry) in self.actuator.table.entries() {
            if wanted.contains(&key) {
                continue;
            }
            let addr = dataplane::addr_of(&key);
            let what = format!(
                "{addr} (instance id {:#010x}) is in no instance now",
                entry.id
            );
            if let Err(e) =
                remove_leftover(self.actuator, &key, &entry, observed, &ports, &ids).await
            {
                warn!(%addr, error = %format!("{e:#}"), "removing a leftover instance");
                continue;
            }
            self.state.note_repair(
                self.ctx.report,
                &addr.to_string().into(),
                Repair::Leftover,
                what,
            );
        }
        for l in &observed.links {
            let Some(id) = macvlan_owner_id(&l.name) else {
                continue;
            };
            // Only macvlans on our ports: a "bt..." device elsewhere is not ours.
            if ids.contains(&id) || !l.lower.is_some_and(|x| ports.contains(&x)) {
                continue;
            }
            match self.actuator.del_link(&l.name).await {
                Ok(_) => self.state.note_repair(
                    self.ctx.report,
                    &l.name.as_str().into(),
                    Repair::Leftover,
                    format!("{} deleted", l.name),
                ),
                Err(e) => {
                    warn!(dev = %l.name, error = %format!("{e:#}"), "deleting a leftover macvlan")
                }
            }
        }
    }
}

/// Removes one leftover instance: its address from our ports and its
/// macvlans first, the entry last (so a crash in between finds it again).
async fn remove_leftover(
    actuator: &mut Actuator,
    key: &baton_common::InstanceKey,
    entry: &InstanceEntry,
    observed: &Observed,
    ports: &BTreeSet<u32>,
    live_ids: &BTreeSet<u32>,
) -> Result<()> {
    let addr = dataplane::addr_of(key);
    let macvlans: Vec<&LinkEvent> = observed
        .links
        .iter()
        .filter(|l| macvlan_owner_id(&l.name) == Some(entry.id))
        .collect();
    for c in observed.addresses.iter().filter(|c| {
        c.addr == addr
            && (ports.contains(&c.ifindex) || macvlans.iter().any(|l| l.ifindex == c.ifindex))
    }) {
        let net = ipnet::IpNet::new(addr, c.prefix).context("prefix")?;
        actuator.del_address(c.ifindex, net).await?;
    }
    // The id may still be a live instance's (its address changed): its
    // macvlans are then its own, not leftovers.
    if !live_ids.contains(&entry.id) {
        for l in macvlans {
            actuator.del_link(&l.name).await?;
        }
    }
    actuator.table.remove(key)
}
