//! Every key of baton.toml, once: the reader accepts exactly these (its
//! unknown-key check reads this list) and `baton.toml(5)` is generated from
//! it, with defaults taken from the model's own `Default`s, so the manual
//! cannot drift from the code.

/// A duration as the file writes it.
fn ms(d: std::time::Duration) -> String {
    crate::duration::display(d)
}

/// One key of [`KEYS`].
macro_rules! key {
    ($t:ident, $n:literal, $k:literal, $d:expr, $l:literal, $doc:literal) => {
        Key {
            table: Table::$t,
            name: $n,
            kind: $k,
            default: $d,
            limits: $l,
            doc: $doc,
        }
    };
}

mod keys;
pub use keys::KEYS;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Top,
    Port,
    Network,
    Instance,
    Route,
    Timers,
    Limits,
    Cluster,
    Health,
    Metrics,
    Daemon,
}

impl Table {
    pub const ALL: [Table; 11] = [
        Table::Top,
        Table::Port,
        Table::Network,
        Table::Instance,
        Table::Route,
        Table::Timers,
        Table::Limits,
        Table::Cluster,
        Table::Health,
        Table::Metrics,
        Table::Daemon,
    ];

    /// How the table is written in the file.
    pub fn heading(self) -> &'static str {
        match self {
            Table::Top => "(top level)",
            Table::Port => "[ports.NAME]",
            Table::Network => "[networks.NAME]",
            Table::Instance => "[instances.NAME]",
            Table::Route => "routes = [{ ... }] (in an instance)",
            Table::Timers => "[timers]",
            Table::Limits => "[limits]",
            Table::Cluster => "[cluster]",
            Table::Health => "[health.NAME]",
            Table::Metrics => "[metrics]",
            Table::Daemon => "[daemon]",
        }
    }
}

pub struct Key {
    pub table: Table,
    pub name: &'static str,
    /// The value's form.
    pub kind: &'static str,
    /// The value when the file is silent (None: required, or no default).
    pub default: Option<fn() -> String>,
    /// What values are accepted, beyond the form.
    pub limits: &'static str,
    pub doc: &'static str,
}

/// The key names a table accepts.
pub fn names(table: Table) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|k| k.table == table)
        .map(|k| k.name)
        .collect()
}
