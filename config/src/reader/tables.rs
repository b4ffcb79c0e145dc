//! Each table of the file into its part of the model, on the primitive
//! readers of [`super::Reader`].
use super::{MAX_CAP, Reader};
use crate::model::*;
use crate::schema::{Table, names};
use std::net::IpAddr;
use toml::de::{DeTable, DeValue};

impl Reader<'_> {
    pub(super) fn port(&mut self, t: &DeTable, path: &str) -> Port {
        self.keys(t, path, &names(Table::Port));
        let networks = self.strings(t, path, "networks");
        if t.get("networks").is_none() {
            self.error(&format!("{path}.networks"), None, "is missing; name the networks this port is plugged into, e.g. networks = [\"storage\"]");
        }
        Port {
            networks,
            subnets: self.subnets(t, path, "subnets"),
            vlans: self.vlans(t, path, "vlans"),
            max_addresses: self.u32(t, path, "max_addresses", 1, MAX_CAP),
            max_macs: self.u32(t, path, "max_macs", 1, MAX_CAP),
        }
    }

    pub(super) fn network(&mut self, t: &DeTable, path: &str) -> Network {
        self.keys(t, path, &names(Table::Network));
        Network {
            subnets: self.subnets(t, path, "subnets"),
            vlans: self.vlans(t, path, "vlans"),
        }
    }

    pub(super) fn instance(&mut self, t: &DeTable, path: &str) -> Option<Instance> {
        self.keys(t, path, &names(Table::Instance));
        let address = match t.get("address") {
            None => {
                self.error(
                    &format!("{path}.address"),
                    None,
                    "is missing; add e.g. address = \"192.0.2.100/24\"",
                );
                None
            }
            Some(_) => {
                let v = self.value(t, path, "address")?;
                self.net(&format!("{path}.address"), v)
            }
        };
        let ports = self.strings(t, path, "ports");
        let vlan = self
            .value(t, path, "vlan")
            .and_then(|v| self.int_in(v, &format!("{path}.vlan"), 1, 4094))
            .map(|n| n as u16);
        let mac = self
            .string(t, path, "mac")
            .and_then(|s| match parse_mac(&s) {
                Some(m) => Some(m),
                None => {
                    self.error(
                        &format!("{path}.mac"),
                        None,
                        format!(
                            "{s:?} is not a MAC address; write six hex bytes: \"02:ba:70:00:00:01\""
                        ),
                    );
                    None
                }
            });
        let routes = self.list(t, path, "routes", |r, p, v| {
            let DeValue::Table(rt) = v.get_ref() else {
                r.error(
                    p,
                    Some(v.span()),
                    "must be a table: { to = \"198.51.100.0/24\", via = \"192.0.2.254\" }",
                );
                return None;
            };
            r.keys(rt, p, &names(Table::Route));
            let to = r
                .value(rt, p, "to")
                .and_then(|v| r.net(&format!("{p}.to"), v));
            let via = r
                .value(rt, p, "via")
                .and_then(|v| r.parsed::<IpAddr>(&format!("{p}.via"), v, "an IP address"));
            if rt.get("to").is_none() || rt.get("via").is_none() {
                r.error(p, Some(v.span()), "a route needs both `to` and `via`");
            }
            let replaces_default = match rt.get("replaces_default").map(|v| v.get_ref()) {
                None => false,
                Some(DeValue::Boolean(b)) => *b,
                Some(_) => {
                    r.error(
                        &format!("{p}.replaces_default"),
                        None,
                        "must be true or false",
                    );
                    false
                }
            };
            Some(Route {
                to: to?,
                via: via?,
                replaces_default,
            })
        });
        let services = self.list(t, path, "services", |r, p, v| {
            r.int_in(v, p, 1, 65535).map(|n| n as u16)
        });
        // Default: the services on the IANA iSCSI port.
        let iscsi_ports = if t.get("iscsi_ports").is_some() {
            self.list(t, path, "iscsi_ports", |r, p, v| {
                r.int_in(v, p, 1, 65535).map(|n| n as u16)
            })
        } else {
            services
                .iter()
                .copied()
                .filter(|p| *p == ISCSI_PORT)
                .collect()
        };
        let iscsi_digests = match self.string(t, path, "iscsi_digests").as_deref() {
            None | Some("none") => Digests::default(),
            Some("header") => Digests {
                header: true,
                data: false,
            },
            Some("data") => Digests {
                header: false,
                data: true,
            },
            Some("both") => Digests {
                header: true,
                data: true,
            },
            Some(other) => {
                self.error(
                    &format!("{path}.iscsi_digests"),
                    None,
                    format!(
                        "{other:?} is not a digest setting; use \"none\", \"header\", \"data\" or \"both\" (what the iSCSI login negotiates)"
                    ),
                );
                Digests::default()
            }
        };
        let cpus = self.list(t, path, "cpus", |r, p, v| {
            r.int_in(v, p, 0, u32::MAX as i64).map(|n| n as u32)
        });
        let failback = match self.string(t, path, "failback").as_deref() {
            None | Some("never") => Failback::Never,
            Some("auto") => Failback::Auto,
            Some(other) => {
                self.error(
                    &format!("{path}.failback"),
                    None,
                    format!("{other:?} is not a failback policy; use \"never\" or \"auto\""),
                );
                Failback::Never
            }
        };
        Some(Instance {
            address: address?,
            ports: ports.into_iter().map(PortName::from).collect(),
            vlan,
            mac,
            routes,
            services,
            iscsi_ports,
            iscsi_digests,
            cpus,
            failback,
            revert_backoff: self.boolean(t, path, "revert_backoff"),
            checks: t
                .get("checks")
                .is_some()
                .then(|| self.strings(t, path, "checks")),
            members: self
                .strings(t, path, "members")
                .into_iter()
                .map(MemberId::from)
                .collect(),
        })
    }

    pub(super) fn timers(&mut self, t: &DeTable) -> Timers {
        self.keys(t, "timers", &names(Table::Timers));
        let d = Timers::default();
        Timers {
            hold_down: self
                .duration(t, "timers", "hold_down")
                .unwrap_or(d.hold_down),
            hold_up: self.duration(t, "timers", "hold_up").unwrap_or(d.hold_up),
            failback_delay: self
                .duration(t, "timers", "failback_delay")
                .unwrap_or(d.failback_delay),
            announce_count: self
                .u32(t, "timers", "announce_count", 1, 100)
                .unwrap_or(d.announce_count),
            announce_interval: self
                .duration(t, "timers", "announce_interval")
                .unwrap_or(d.announce_interval),
            probe_time: self
                .duration(t, "timers", "probe_time")
                .unwrap_or(d.probe_time),
            revert_backoff: self
                .boolean(t, "timers", "revert_backoff")
                .unwrap_or(d.revert_backoff),
        }
    }

    pub(super) fn cluster(&mut self, t: &DeTable) -> Option<Cluster> {
        let p = "cluster";
        self.keys(t, p, &names(Table::Cluster));
        let missing: Vec<&str> = ["member_id", "ha_port", "endpoints"]
            .into_iter()
            .filter(|k| t.get(*k).is_none())
            .collect();
        if !missing.is_empty() {
            self.error(p, None, format!(
                "is half configured: {} missing; a cluster needs member_id, ha_port and endpoints (or remove [cluster])",
                missing.join(", ")
            ));
        }
        let member_id = self.string(t, p, "member_id");
        let ha_port = self.string(t, p, "ha_port");
        let endpoints = self.strings(t, p, "endpoints");
        let path = |r: &mut Self, key: &str| r.string(t, p, key).map(std::path::PathBuf::from);
        let ca_file = path(self, "ca_file");
        let cert_file = path(self, "cert_file");
        let key_file = path(self, "key_file");
        let tls = match (ca_file, &cert_file, &key_file) {
            (Some(ca_file), _, _) => Some(Tls {
                ca_file,
                cert_file,
                key_file,
            }),
            (None, None, None) => None,
            (None, _, _) => {
                self.error(
                    &format!("{p}.ca_file"),
                    None,
                    "is missing: a client certificate is only used over TLS, which needs the CA that signed etcd's certificate",
                );
                None
            }
        };
        let d = |r: &mut Self, key: &str, default: std::time::Duration| {
            r.duration(t, p, key).unwrap_or(default)
        };
        let lease_ttl = d(self, "lease_ttl", Cluster::DEFAULT_LEASE_TTL);
        let fence_margin = d(self, "fence_margin", Cluster::DEFAULT_FENCE_MARGIN);
        let heartbeat = d(self, "heartbeat", Cluster::DEFAULT_HEARTBEAT);
        let dead_after = d(self, "dead_after", Cluster::DEFAULT_DEAD_AFTER);
        let owner_deadline = d(self, "owner_deadline", Cluster::DEFAULT_OWNER_DEADLINE);
        let tickle = self.boolean(t, p, "tickle").unwrap_or(true);
        let prefix = self
            .string(t, p, "prefix")
            .unwrap_or_else(|| Cluster::DEFAULT_PREFIX.into());
        Some(Cluster {
            member_id: member_id?.into(),
            ha_port: ha_port?.into(),
            endpoints,
            prefix,
            tls,
            lease_ttl,
            fence_margin,
            heartbeat,
            dead_after,
            owner_deadline,
            tickle,
        })
    }

    pub(super) fn check(&mut self, t: &DeTable, path: &str) -> Option<Check> {
        self.keys(t, path, &names(Table::Health));
        let kinds: Vec<&str> = ["links", "pidfile", "process", "tcp", "exec"]
            .into_iter()
            .filter(|k| t.contains_key(*k))
            .collect();
        let probe = match kinds[..] {
            ["links"] => Probe::Links {
                links: self.strings(t, path, "links"),
                fail_when: self.fail_when(t, path),
            },
            ["pidfile"] => Probe::Process(ProcessMatch::Pidfile(
                self.string(t, path, "pidfile")?.into(),
            )),
            ["process"] => Probe::Process(ProcessMatch::Name(self.string(t, path, "process")?)),
            ["tcp"] => {
                let v = self.value(t, path, "tcp")?;
                Probe::Tcp(self.parsed(
                    &Self::join(path, "tcp"),
                    v,
                    "an address and port (\"127.0.0.1:3260\", \"[::1]:3260\")",
                )?)
            }
            ["exec"] => Probe::Exec(self.strings(t, path, "exec")),
            [] => {
                self.error(
                    path,
                    None,
                    "says nothing to check: give one of links, pidfile, process, tcp or exec",
                );
                return None;
            }
            _ => {
                self.error(
                    path,
                    None,
                    format!(
                        "checks {} at once: one check watches one thing; make a check of each",
                        kinds.join(" and ")
                    ),
                );
                return None;
            }
        };
        if let Some(v) = t
            .get("fail_when")
            .filter(|_| !matches!(probe, Probe::Links { .. }))
        {
            self.error(
                &Self::join(path, "fail_when"),
                Some(v.span()),
                "is for links only: a process, tcp or exec check fails by its fall count",
            );
        }
        let interval = self
            .duration(t, path, "interval")
            .unwrap_or(Check::DEFAULT_INTERVAL);
        Some(Check {
            rise: self
                .u32(t, path, "rise", 1, 100)
                .unwrap_or(Check::DEFAULT_RISE),
            fall: self
                .u32(t, path, "fall", 1, 100)
                .unwrap_or_else(|| Check::default_fall(&probe)),
            interval,
            timeout: self
                .duration(t, path, "timeout")
                .unwrap_or(Check::DEFAULT_TIMEOUT.min(interval)),
            withdraw: self.boolean(t, path, "withdraw").unwrap_or(false),
            probe,
        })
    }

    fn fail_when(&mut self, t: &DeTable, path: &str) -> FailWhen {
        match self.string(t, path, "fail_when").as_deref() {
            None | Some("any") => FailWhen::Any,
            Some("all") => FailWhen::All,
            Some(other) => {
                self.error(
                    &format!("{path}.fail_when"),
                    None,
                    format!("{other:?} is not a rule; use \"any\" or \"all\""),
                );
                FailWhen::Any
            }
        }
    }
}
