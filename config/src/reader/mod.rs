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

mod tables;

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
        health: BTreeMap::new(),
        metrics: Metrics::default(),
        daemon: DaemonSettings::default(),
    };
    for (name, t) in r.named_tables(doc, "ports") {
        let port = r.port(t, &format!("ports.{name}"));
        config.ports.insert(name.into(), port);
    }
    for (name, t) in r.named_tables(doc, "networks") {
        let net = r.network(t, &format!("networks.{name}"));
        config.networks.insert(name, net);
    }
    for (name, t) in r.named_tables(doc, "instances") {
        if let Some(inst) = r.instance(t, &format!("instances.{name}")) {
            config.instances.insert(name.into(), inst);
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
    for (name, t) in r.named_tables(doc, "health") {
        if let Some(check) = r.check(t, &format!("health.{name}")) {
            config.health.insert(name, check);
        }
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
}
