//! Pinned maps an earlier baton left that this object defines otherwise.
//!
//! aya reuses a map pinned under the name it wants without looking at it,
//! so after an upgrade that changed a map (a longer value, more entries) the
//! new programs would be verified against the old map: refused, or worse,
//! reading its values at the new offsets. Such a pin is removed before the
//! load, which then creates the map afresh; programs still attached keep
//! the old map until their links are given the new programs (links.rs).
//! What the old map held starts anew: the daemon rewrites every instance
//! entry and the fence from its own state; counters start at zero.
use super::{OBJECT, PinDir};
use anyhow::{Context as _, Result};
use aya::maps::MapData;
use aya_obj::generated::bpf_map_type;
use aya_obj::maps::PinningType;
use tracing::warn;

/// A map's shape as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {} key {} value {} entries {} flags {:#x}",
            self.map_type, self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

/// The maps of the object that are pinned by name, as the loader creates
/// them. Parsed once: the object is part of the binary, and every load
/// checks its pins against it.
pub fn wanted() -> Result<&'static [(String, Shape)]> {
    static WANTED: std::sync::OnceLock<Result<Vec<(String, Shape)>, String>> =
        std::sync::OnceLock::new();
    WANTED
        .get_or_init(|| {
            let object = aya_obj::Object::parse(OBJECT)
                .map_err(|e| format!("parsing baton's BPF object: {e}"))?;
            let mut maps: Vec<(String, Shape)> = object
                .maps
                .iter()
                .filter(|(_, m)| m.pinning() == PinningType::ByName)
                .map(|(name, m)| {
                    let shape = Shape {
                        map_type: m.map_type(),
                        key_size: m.key_size(),
                        value_size: m.value_size(),
                        max_entries: m.max_entries(),
                        flags: m.map_flags(),
                    };
                    (name.clone(), shape)
                })
                .collect();
            maps.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(maps)
        })
        .as_deref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Creates a map of `shape` named `name` and pins it at `path`.
pub fn create_pinned(path: &std::path::Path, name: &str, shape: &Shape) -> Result<MapData> {
    let def = aya_obj::Map::new_from_params(
        shape.map_type,
        shape.key_size,
        shape.value_size,
        shape.max_entries,
        shape.flags,
    );
    let data = MapData::create(def, name, None).with_context(|| format!("creating {name}"))?;
    data.pin(path)
        .with_context(|| format!("pinning {}", path.display()))?;
    Ok(data)
}

/// Whether a pinned map of `shape` serves where `wanted` is wanted. A
/// cpumap's value size is the loader's choice (4 or 8, by kernel feature),
/// not the object's.
fn fits(shape: &Shape, wanted: &Shape) -> bool {
    let value_fits = wanted.map_type == bpf_map_type::BPF_MAP_TYPE_CPUMAP as u32
        || shape.value_size == wanted.value_size;
    value_fits
        && shape.map_type == wanted.map_type
        && shape.key_size == wanted.key_size
        && shape.max_entries == wanted.max_entries
        && shape.flags == wanted.flags
}

/// The shape of the map pinned at `path`.
pub fn pinned_shape(path: &std::path::Path) -> Result<Shape> {
    let info = aya::maps::MapInfo::from_pin(path)
        .with_context(|| format!("{} is not a pinned map", path.display()))?;
    Ok(Shape {
        map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        flags: info.map_flags(),
    })
}

/// Removes the pins of maps whose shape is not this object's; returns their
/// names. Each is logged with both shapes.
pub fn remove_misfits(pins: &PinDir) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for (name, wanted) in wanted()? {
        let path = pins.map(name);
        if !path.exists() {
            continue;
        }
        let found = pinned_shape(&path)?;
        if fits(&found, wanted) {
            continue;
        }
        warn!(map = %name, was = %found, now = %wanted, "a pinned map of another shape (an earlier baton's?): replaced, its contents start anew");
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        removed.push(name.clone());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_pins_its_tables_by_name() {
        let maps = wanted().expect("object parses");
        let names: Vec<&str> = maps.iter().map(|(n, _)| n.as_str()).collect();
        for name in [
            baton_common::names::PORT_STATS_MAP,
            baton_common::names::INSTANCE_INDEX_MAP,
        ] {
            assert!(names.contains(&name), "{name} not among {names:?}");
        }
    }

    #[test]
    fn a_map_fits_only_in_the_shape_wanted() {
        let wanted = Shape {
            map_type: bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY as u32,
            key_size: 4,
            value_size: 64,
            max_entries: 1024,
            flags: 0,
        };
        assert!(fits(&wanted, &wanted));
        for other in [
            Shape {
                value_size: 56,
                ..wanted
            },
            Shape {
                max_entries: 512,
                ..wanted
            },
            Shape {
                map_type: bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
                ..wanted
            },
            Shape {
                key_size: 8,
                ..wanted
            },
            Shape { flags: 1, ..wanted },
        ] {
            assert!(!fits(&other, &wanted), "{other} fits {wanted}");
        }
        let cpumap = Shape {
            map_type: bpf_map_type::BPF_MAP_TYPE_CPUMAP as u32,
            value_size: 4,
            ..wanted
        };
        assert!(fits(
            &Shape {
                value_size: 8,
                ..cpumap
            },
            &cpumap
        ));
    }
}
