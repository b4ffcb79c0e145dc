//! TOML text -> [`Config`], walking toml's spanned document tree so that every
//! shape error (unknown key, wrong type, bad value) is reported, each with its
//! position, instead of stopping at the first as serde would.
use crate::diagnostic::{Diagnostic, line_col};
use crate::duration;
use crate::model::*;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

type Value<'i> = Spanned<DeValue<'i>>;

/// Byte span of every field path that was read, for later diagnostics.
#[derive(Default)]
pub struct Spans(BTreeMap<String, Range<usize>>);

impl Spans {
    /// Position of `path`, else of its nearest recorded parent.
    pub fn locate(&self, text: &str, path: &str) -> Option<(usize, usize)> {
        let mut p = path.to_string();
        loop {
            if let Some(span) = self.0.get(&p) {
                return Some(line_col(text, span.start));
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }
}

/// Largest address or MAC cap a port may have.
const MAX_CAP: u32 = 100_000;

// The keys each table accepts: one list, shared with baton.toml(5).
use crate::schema::{Table, names};

struct Reader<'t> {
    file: &'t str,
    text: &'t str,
    errors: Vec<Diagnostic>,
    spans: Spans,
}

/// Reads the whole file. The config is `None` only when the TOML itself is
/// unreadable; otherwise missing or bad fields have their errors recorded and
/// take defaults, so that validation can still report everything else.
pub fn read(file: &str, text: &str) -> (Option<Config>, Spans, Vec<Diagnostic>) {
    let mut r = Reader {
        file,
        text,
        errors: Vec::new(),
        spans: Spans::default(),
    };
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let pos = e.span().map(|s| line_col(text, s.start));
            let msg = e.message().trim().to_string();
            let hint = if msg.contains("duplicate key") {
                " (every port, network and instance needs a name of its own)"
            } else {
                ""
            };
            r.errors.push(Diagnostic::new(
                file,
                pos,
                "",
                format!("invalid TOML: {msg}{hint}"),
            ));
        }
        return (None, r.spans, r.errors);
    }
    let doc = doc.get_ref();
    r.keys(doc, "", &names(Table::Top));

    let mut config = Config {
        ports: BTreeMap::new(),
        networks: BTreeMap::new(),
        instances: BTreeMap::new(),
        timers: Timers::default(),
        limits: Limits::default(),
        cluster: None,
        metrics: Metrics::default(),
        daemon: DaemonSettings::default(),
    };
    for (name, t) in r.named_tables(doc, "ports") {
        let port = r.port(t, &format!("ports.{name}"));
        config.ports.insert(name, port);
    }
    for (name, t) in r.named_tables(doc, "networks") {
        let net = r.network(t, &format!("networks.{name}"));
        config.networks.insert(name, net);
    }
    for (name, t) in r.named_tables(doc, "instances") {
        if let Some(inst) = r.instance(t, &format!("instances.{name}")) {
            config.instances.insert(name, inst);
        }
    }
    if let Some(t) = r.table_at(doc, "", "timers") {
        config.timers = r.timers(t);
    }
    if let Some(t) = r.table_at(doc, "", "limits") {
        r.keys(t, "limits", &names(Table::Limits));
        let d = Limits::default();
        config.limits = Limits {
            addresses_per_port: r
                .u32(t, "limits", "addresses_per_port", 1, MAX_CAP)
                .unwrap_or(d.addresses_per_port),
            macs_per_port: r
                .u32(t, "limits", "macs_per_port", 1, MAX_CAP)
                .unwrap_or(d.macs_per_port),
        };
    }
    if let Some(t) = r.table_at(doc, "", "daemon") {
        r.keys(t, "daemon", &names(Table::Daemon));
        if let Some(p) = r.u32(t, "daemon", "realtime_priority", 0, 99) {
            config.daemon.realtime_priority = p;
        }
        if let Some(b) = r.boolean(t, "daemon", "lock_memory") {
            config.daemon.lock_memory = b;
        }
        if let Some(d) = r.duration(t, "daemon", "resync_interval") {
            config.daemon.resync_interval = d;
        }
        match r.string(t, "daemon", "ingress").as_deref() {
            None | Some("xdp") => {}
            Some("tcx") => config.daemon.ingress = IngressHook::Tcx,
            Some(other) => r.error(
                "daemon.ingress",
                None,
                format!("{other:?} is not an ingress hook; use \"xdp\" or \"tcx\""),
            ),
        }
    }
    if let Some(t) = r.table_at(doc, "", "metrics") {
        r.keys(t, "metrics", &names(Table::Metrics));
        let listen = r.value(t, "metrics", "listen").and_then(|v| {
            r.parsed::<std::net::SocketAddr>(
                "metrics.listen",
                v,
                "an address and port (\"127.0.0.1:9750\")",
            )
        });
        let enabled = r.boolean(t, "metrics", "enabled").unwrap_or(true);
        config.metrics.listen = if enabled {
            listen.or(config.metrics.listen)
        } else {
            None
        };
    }
    if let Some(t) = r.table_at(doc, "", "cluster") {
        config.cluster = r.cluster(t);
    }
    (Some(config), r.spans, r.errors)
}

impl<'t> Reader<'t> {
    fn error(&mut self, path: &str, span: Option<Range<usize>>, msg: impl Into<String>) {
        let pos = span
            .map(|s| line_col(self.text, s.start))
            .or_else(|| self.spans.locate(self.text, path));
        self.errors.push(Diagnostic::new(self.file, pos, path, msg));
    }

    fn join(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    }

    /// Reports keys of `t` not in `allowed`, with the closest allowed key.
    fn keys(&mut self, t: &DeTable, path: &str, allowed: &[&str]) {
        for (key, _) in t.iter() {
            let k = key.get_ref().as_ref();
            if allowed.contains(&k) {
                continue;
            }
            let best = allowed
                .iter()
                .map(|a| (strsim::levenshtein(k, a), *a))
                .min()
                .filter(|(d, _)| *d <= 3);
            let hint = match best {
                Some((_, a)) => format!("did you mean \"{a}\"?"),
                None => format!("known keys here: {}", allowed.join(", ")),
            };
            self.error(
                &Self::join(path, k),
                Some(key.span()),
                format!("unknown key \"{k}\"; {hint}"),
            );
        }
    }

    fn value<'x, 'i>(
        &mut self,
        t: &'x DeTable<'i>,
        path: &str,
        key: &str,
    ) -> Option<&'x Value<'i>> {
        let v = t.get(key)?;
        self.spans.0.insert(Self::join(path, key), v.span());
        Some(v)
    }

    /// `[KEY.NAME]` tables under the top-level key `key`, with their names.
    fn named_tables<'x, 'i>(
        &mut self,
        doc: &'x DeTable<'i>,
        key: &str,
    ) -> Vec<(String, &'x DeTable<'i>)> {
        let Some(t) = self.table_at(doc, "", key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, v) in t.iter() {
            let name = name.get_ref().to_string();
            let path = format!("{key}.{name}");
            self.spans.0.insert(path.clone(), v.span());
            match v.get_ref() {
                DeValue::Table(inner) => out.push((name, inner)),
                _ => self.error(
                    &path,
                    Some(v.span()),
                    format!("must be a table: write [{key}.{name}] with its fields below"),
                ),
            }
        }
        out
    }

    fn table_at<'x, 'i>(
        &mut self,
        t: &'x DeTable<'i>,
        path: &str,
        key: &str,
    ) -> Option<&'x DeTable<'i>> {
        let v = self.value(t, path, key)?;
        match v.get_ref() {
            DeValue::Table(inner) => Some(inner),
            _ => {
                let span = v.span();
                self.error(
                    &Self::join(path, key),
                    Some(span),
                    format!("must be a table ([{}])", Self::join(path, key)),
                );
                None
            }
        }
    }

    fn string(&mut self, t: &DeTable, path: &str, key: &str) -> Option<String> {
        let v = self.value(t, path, key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                let span = v.span();
                self.error(
                    &Self::join(path, key),
                    Some(span),
                    "must be a string (in double quotes)",
                );
                None
            }
        }
    }

    fn int_in(&mut self, v: &Value, path: &str, min: i64, max: i64) -> Option<i64> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.error(
                    path,
                    Some(v.span()),
                    format!("{n} is out of range; use {min}..={max}"),
                );
                None
            }
            None => {
                self.error(
                    path,
                    Some(v.span()),
                    format!("must be a whole number in {min}..={max}"),
                );
                None
            }
        }
    }

    fn u32(&mut self, t: &DeTable, path: &str, key: &str, min: u32, max: u32) -> Option<u32> {
        let v = self.value(t, path, key)?;
        self.int_in(v, &Self::join(path, key), min.into(), max.into())
            .map(|n| n as u32)
    }

    /// `key` as true or false (None when absent; an error when not a boolean).
    fn boolean(&mut self, t: &DeTable, path: &str, key: &str) -> Option<bool> {
        let v = self.value(t, path, key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                let span = v.span();
                self.error(&Self::join(path, key), Some(span), "must be true or false");
                None
            }
        }
    }

    fn duration(&mut self, t: &DeTable, path: &str, key: &str) -> Option<std::time::Duration> {
        let s = self.string(t, path, key)?;
        match duration::parse(&s) {
            Ok(d) => Some(d),
            Err(msg) => {
                let p = Self::join(path, key);
                self.error(&p, None, msg);
                None
            }
        }
    }

    /// An array whose elements are read by `each` (element path, value).
    fn list<T>(
        &mut self,
        t: &DeTable,
        path: &str,
        key: &str,
        mut each: impl FnMut(&mut Self, &str, &Value) -> Option<T>,
    ) -> Vec<T> {
        let Some(v) = self.value(t, path, key) else {
            return Vec::new();
        };
        let p = Self::join(path, key);
        let DeValue::Array(items) = v.get_ref() else {
            let span = v.span();
            self.error(&p, Some(span), "must be a list: [ ... ]");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            self.spans.0.insert(ip.clone(), item.span());
            if let Some(x) = each(self, &ip, item) {
                out.push(x);
            }
        }
        out
    }

    fn parsed<T: std::str::FromStr>(&mut self, path: &str, v: &Value, what: &str) -> Option<T> {
        let DeValue::String(s) = v.get_ref() else {
            self.error(path, Some(v.span()), format!("must be a string: {what}"));
            return None;
        };
        match s.parse() {
            Ok(x) => Some(x),
            Err(_) => {
                self.error(path, Some(v.span()), format!("{s:?} is not {what}"));
                None
            }
        }
    }

    fn strings(&mut self, t: &DeTable, path: &str, key: &str) -> Vec<String> {
        self.list(t, path, key, |r, p, v| {
            r.parsed::<String>(p, v, "a name in double quotes")
        })
    }

    fn subnets(&mut self, t: &DeTable, path: &str, key: &str) -> Vec<IpNet> {
        self.list(t, path, key, |r, p, v| r.net(p, v))
    }

    fn net(&mut self, path: &str, v: &Value) -> Option<IpNet> {
        if let DeValue::String(s) = v.get_ref()
            && let Some((addr, len)) = s.split_once('/')
            && let (Ok(addr), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u8>())
        {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if len > max {
                let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
                self.error(
                    path,
                    Some(v.span()),
                    format!("prefix length /{len} is too long for {family}; use 0..={max}"),
                );
                return None;
            }
        }
        self.parsed(
            path,
            v,
            "an address with prefix length (\"192.0.2.0/24\", \"2001:db8::/64\")",
        )
    }

    fn vlans(&mut self, t: &DeTable, path: &str, key: &str) -> Vec<u16> {
        self.list(t, path, key, |r, p, v| {
            r.int_in(v, p, 1, 4094).map(|n| n as u16)
        })
    }

    fn port(&mut self, t: &DeTable, path: &str) -> Port {
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

    fn network(&mut self, t: &DeTable, path: &str) -> Network {
        self.keys(t, path, &names(Table::Network));
        Network {
            subnets: self.subnets(t, path, "subnets"),
            vlans: self.vlans(t, path, "vlans"),
        }
    }

    fn instance(&mut self, t: &DeTable, path: &str) -> Option<Instance> {
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
            ports,
            vlan,
            mac,
            routes,
            services,
            iscsi_ports,
            iscsi_digests,
            cpus,
            failback,
            revert_backoff: self.boolean(t, path, "revert_backoff"),
            members: self.strings(t, path, "members"),
        })
    }

    fn timers(&mut self, t: &DeTable) -> Timers {
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

    fn cluster(&mut self, t: &DeTable) -> Option<Cluster> {
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
            member_id: member_id?,
            ha_port: ha_port?,
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
}
