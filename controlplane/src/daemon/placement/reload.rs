//! `baton reload` / SIGHUP: the new file is validated whole, settings that
//! need a restart are refused with the reason, and the difference is
//! applied: instances that are gone or changed identity leave, the rest is
//! reconciled (copies on ports an instance no longer lists are cleaned).
use super::state::PlacementState;
use anyhow::{Result, bail};
use baton_config::Config;
use baton_config::InstanceName;

/// What a running daemon cannot take without a restart, said as the reason.
pub fn needs_restart(old: &Config, new: &Config) -> Option<&'static str> {
    if new.ports.keys().ne(old.ports.keys()) {
        return Some("the set of ports changed");
    }
    if new.daemon.ingress != old.daemon.ingress {
        return Some("[daemon] ingress changed (the programs are attached at start)");
    }
    if new.daemon.realtime_priority != old.daemon.realtime_priority {
        return Some("[daemon] realtime_priority changed");
    }
    if new.daemon.lock_memory != old.daemon.lock_memory {
        return Some("[daemon] lock_memory changed");
    }
    if new.metrics.listen != old.metrics.listen {
        return Some("[metrics] changed (the endpoint is bound at start)");
    }
    if new.health != old.health {
        return Some("[health] changed (the watched links are read at start)");
    }
    if new.cluster != old.cluster {
        return Some("[cluster] changed (the lease and the etcd clients are set up at start)");
    }
    // The other members compare these digests before a takeover, and the
    // agent publishes them once: a changed set or definition is a restart.
    let digests = |c: &Config| -> Vec<(InstanceName, String)> {
        c.instances
            .iter()
            .map(|(n, i)| (n.clone(), crate::cluster::rules::digest(i)))
            .collect()
    };
    if old.cluster.is_some() && digests(old) != digests(new) {
        return Some(
            "in a cluster, instances were added, removed or redefined (the members compare definitions); restart this member",
        );
    }
    None
}

/// Instances that are gone or changed identity (address, VLAN, MAC): they
/// leave, and the sweep of the next reconcile removes what they had,
/// recognised by their dataplane entries and macvlan names.
pub fn leaving(old: &Config, new: &Config) -> Vec<InstanceName> {
    old.instances
        .iter()
        .filter(|(name, old)| {
            !new.instances
                .get(*name)
                .is_some_and(|n| n.address == old.address && n.vlan == old.vlan && n.mac == old.mac)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Reads the file again and takes it, validated whole: refused with the
/// reason (and nothing changed) when it is invalid or needs a restart;
/// otherwise the instances that left are forgotten and every instance is
/// due for a reconcile. Returns what to tell the operator.
pub fn apply(
    path: &std::path::Path,
    config: &mut Config,
    state: &mut PlacementState,
) -> Result<String> {
    let new = baton_config::load(path)
        .map_err(|d| anyhow::anyhow!("{d}reload refused: nothing changed"))?;
    if let Some(why) = needs_restart(config, &new) {
        bail!("reload refused: {why}; restart baton for that (nothing changed)");
    }
    let leaving = leaving(config, &new);
    for name in &leaving {
        state.forget(name);
    }
    *config = new;
    state.dirty.all = true;
    Ok(format!(
        "reloaded {}: {} instances ({} left or changed)",
        path.display(),
        config.instances.len(),
        leaving.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::needs_restart;

    fn config(cluster: &str, services: &str) -> baton_config::Config {
        let text = format!(
            "[networks.n]\nsubnets = [\"192.0.2.0/24\"]\n[ports.ge0]\nnetworks = [\"n\"]\n\
             [instances.a]\naddress = \"192.0.2.100/24\"\nports = [\"ge0\"]\nservices = [{services}]\n{}\n{cluster}",
            if cluster.is_empty() {
                ""
            } else {
                "members = [\"gw1\"]"
            }
        );
        baton_config::parse("t.toml", &text, &baton_config::Host::with_cpus(2))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const CLUSTER: &str = "[cluster]\nmember_id = \"gw1\"\nha_port = \"ha0\"\nendpoints = [\"http://198.51.100.3:2379\"]";

    #[test]
    fn cluster_settings_and_definitions_need_a_restart_in_a_cluster_only() {
        let base = config(CLUSTER, "3260");
        assert_eq!(needs_restart(&base, &config(CLUSTER, "3260")), None);
        assert!(needs_restart(&base, &config(CLUSTER, "3260, 860")).is_some());
        let other = CLUSTER.replace("198.51.100.3", "198.51.100.4");
        assert!(needs_restart(&base, &config(&other, "3260")).is_some());
        // A single host reloads a changed definition.
        assert_eq!(
            needs_restart(&config("", "3260"), &config("", "3260, 860")),
            None
        );
    }

    #[test]
    fn how_the_process_runs_needs_a_restart() {
        let base = config("", "3260");
        let mut other = base.clone();
        other.daemon.lock_memory = false;
        assert_eq!(
            needs_restart(&base, &other),
            Some("[daemon] lock_memory changed")
        );
        let mut other = base.clone();
        other.daemon.realtime_priority = 20;
        assert_eq!(
            needs_restart(&base, &other),
            Some("[daemon] realtime_priority changed")
        );
    }
}
