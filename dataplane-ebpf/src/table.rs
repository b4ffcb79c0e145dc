//! The instance table's lookup: the index (open addressing, a bounded
//! probe) into the entries, each compared whole with the key.
use crate::{INSTANCE_ENTRIES, INSTANCE_INDEX};
use baton_common::{INDEX_DELETED, INDEX_SLOTS, InstanceEntry, InstanceKey, MAX_PROBES};

#[inline(always)]
pub(crate) fn instance(key: &InstanceKey) -> Option<&'static InstanceEntry> {
    let home = key.index_slot();
    for probe in 0..MAX_PROBES {
        let at = INSTANCE_INDEX.get((home + probe) & (INDEX_SLOTS - 1))?;
        // One load: the index is switched by a single 4-byte store.
        // SAFETY: a u32 element of a global array, valid while we run.
        let element = unsafe { core::ptr::read_volatile(at) };
        if element == 0 {
            return None;
        }
        if element == INDEX_DELETED {
            continue;
        }
        let keyed = INSTANCE_ENTRIES.get(element - 1)?;
        if same_key(&keyed.key, key) {
            return Some(&keyed.entry);
        }
    }
    None
}

/// Two keys compared as five words (the derived compare goes field by
/// field, a u16 and two u8 loads among them).
#[inline(always)]
fn same_key(a: &InstanceKey, b: &InstanceKey) -> bool {
    const _: () = assert!(core::mem::size_of::<InstanceKey>() == 20);
    // SAFETY: InstanceKey is #[repr(C)], 20 bytes, 4-byte aligned, no padding
    // bytes left undefined (`_pad` is a field).
    let (a, b) = unsafe {
        (
            &*(a as *const InstanceKey).cast::<[u32; 5]>(),
            &*(b as *const InstanceKey).cast::<[u32; 5]>(),
        )
    };
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) == 0
}
