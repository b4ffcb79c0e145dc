//! The names baton keys everything by, each a type of its own: an
//! instance's name passed where a port's is wanted does not compile.
//! Each reads, prints, hashes and serializes as the bare string it wraps
//! (`Debug` too: the config digest's canonical text does not change).
use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(name: impl Into<String>) -> Self {
                Self(name.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
        impl Borrow<String> for $name {
            fn borrow(&self) -> &String {
                &self.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
        impl From<&$name> for $name {
            fn from(s: &$name) -> Self {
                s.clone()
            }
        }
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_type!(
    /// An instance: a service with one address (`[instances.NAME]`).
    InstanceName
);
name_type!(
    /// A data port: a network interface baton places addresses on (`[ports.NAME]`).
    PortName
);
name_type!(
    /// A member of a cluster (`cluster.member_id`).
    MemberId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_reads_and_prints_as_its_string() {
        let n = InstanceName::from("iscsi-a");
        assert_eq!(n.to_string(), "iscsi-a");
        assert_eq!(format!("{n:?}"), format!("{:?}", "iscsi-a"));
        assert_eq!(serde_json::to_string(&n).ok(), Some("\"iscsi-a\"".into()));
        let m: std::collections::BTreeMap<InstanceName, u8> = [(n.clone(), 1)].into();
        assert_eq!(m.get("iscsi-a"), Some(&1));
    }
}
