//! What a pinned link runs and where, and swapping its program in place.
//!
//! A daemon of a newer baton started on the pins of an older one (a package
//! upgrade, then `systemctl restart baton`) finds its links attached: they
//! must run its programs on its maps, not the old ones, which read maps it
//! no longer writes. BPF_LINK_UPDATE swaps the program of a live link in
//! one step, so the port never runs without one.
//!
//! A link is this baton's when it runs a program of this baton's code (the
//! tag, from the link's fdinfo) and its mark says it was made by this BPF
//! object on the maps pinned now (a program's maps and constants cannot be
//! read without CAP_SYS_ADMIN, which the unit does not grant; the mark
//! stands in for them). aya exposes neither a link's ifindex nor a
//! program's tag, so these are the bpf(2) calls themselves.
use super::{OBJECT, PinDir, pinned_maps};
use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::{HashMap, MapData};
use sha2::{Digest as _, Sha256};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::path::Path;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// bpf(2) with `attr` of its own size; the result or errno.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: every caller passes the attr layout its command reads, with
    // no padding (the kernel refuses nonzero bytes past the fields it
    // knows); buffers it points to outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A descriptor the kernel just returned.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: a new descriptor from bpf(2) that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// BPF_OBJ_GET: the object pinned at `pin`.
fn object(pin: &Path) -> Result<OwnedFd> {
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes())
        .context("pin path contains a NUL byte")?;
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        /// Named so that it is zero (padding is left as it was).
        _pad: u32,
    }
    let mut attr = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    let fd =
        bpf(BPF_OBJ_GET, &mut attr).with_context(|| format!("BPF_OBJ_GET {}", pin.display()))?;
    Ok(owned(fd))
}

/// BPF_OBJ_GET_INFO_BY_FD into `info` (a link's or a program's info struct).
fn info_of(fd: BorrowedFd<'_>, info: &mut [u8]) -> Result<()> {
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("BPF_OBJ_GET_INFO_BY_FD")?;
    Ok(())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A program's tag: the kernel's hash of its instructions, map references
/// left out; `struct bpf_prog_info` has it at offset 8.
pub type Tag = [u8; 8];

/// The tag of a program this process loaded.
pub fn program_tag(program: BorrowedFd<'_>) -> Result<Tag> {
    let mut info = [0u8; 96];
    info_of(program, &mut info)?;
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&info[8..16]);
    Ok(tag)
}

/// A pinned XDP or TCX link.
pub struct PinnedLink {
    fd: OwnedFd,
    /// The link's id: the same link keeps it when its program is swapped.
    pub id: u32,
    /// The device it is on; 0 once the device is gone.
    pub ifindex: u32,
    /// The program it runs now.
    pub prog_id: u32,
    tag: Tag,
}

impl PinnedLink {
    /// `struct bpf_link_info`: the link's id at offset 4, the program's at
    /// 8; the xdp and the tcx members both start with the ifindex, at 16.
    /// The program's tag is in the link's fdinfo.
    pub fn open(pin: &Path) -> Result<PinnedLink> {
        let fd = object(pin)?;
        let mut info = [0u8; 128];
        info_of(fd.as_fd(), &mut info)?;
        let fdinfo = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
        let text = std::fs::read_to_string(&fdinfo).with_context(|| format!("reading {fdinfo}"))?;
        let hex = text
            .lines()
            .find_map(|l| l.strip_prefix("prog_tag:"))
            .map(str::trim)
            .ok_or_else(|| anyhow!("{fdinfo} has no prog_tag"))?;
        let mut tag = [0u8; 8];
        for (i, byte) in tag.iter_mut().enumerate() {
            *byte = hex
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| anyhow!("{fdinfo}: prog_tag {hex:?} is not 8 hex bytes"))?;
        }
        Ok(PinnedLink {
            id: u32_at(&info, 4),
            prog_id: u32_at(&info, 8),
            ifindex: u32_at(&info, 16),
            tag,
            fd,
        })
    }

    /// The name of the program it runs (BPF_PROG_GET_FD_BY_ID: needs
    /// CAP_SYS_ADMIN, so for tests and diagnostics only).
    pub fn program_name(&self) -> Result<String> {
        let mut attr = [self.prog_id, 0, 0];
        let fd = owned(
            bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)
                .with_context(|| format!("BPF_PROG_GET_FD_BY_ID {}", self.prog_id))?,
        );
        let mut info = [0u8; 96];
        info_of(fd.as_fd(), &mut info)?;
        // `struct bpf_prog_info`: name (16 bytes, NUL-padded) at 64.
        let name = &info[64..80];
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        Ok(String::from_utf8_lossy(&name[..end]).into_owned())
    }

    /// Makes the link run `program` (a program of this baton's, loaded on
    /// the maps pinned now) unless `marks` say this baton made it so; true
    /// if it was swapped.
    pub fn adopt(&self, program: BorrowedFd<'_>, marks: &mut LinkMarks) -> Result<bool> {
        if self.tag == program_tag(program)? && marks.made_here(self.id) {
            return Ok(false);
        }
        self.swap(program)?;
        marks.mark(self.id)?;
        Ok(true)
    }

    /// BPF_LINK_UPDATE: the link runs `program` from now on.
    pub fn swap(&self, program: BorrowedFd<'_>) -> Result<()> {
        #[repr(C)]
        struct LinkUpdate {
            link_fd: u32,
            new_prog_fd: u32,
            flags: u32,
            old_prog_fd: u32,
        }
        let mut update = LinkUpdate {
            link_fd: self.fd.as_raw_fd() as u32,
            new_prog_fd: program.as_raw_fd() as u32,
            flags: 0,
            old_prog_fd: 0,
        };
        bpf(BPF_LINK_UPDATE, &mut update).context("BPF_LINK_UPDATE")?;
        Ok(())
    }
}

/// What made each pinned link: link id -> a hash of this BPF object and
/// the ids of the maps pinned when the link was made or swapped, in a map
/// of its own beside the others (no program reads it). A link whose mark
/// is missing or other is swapped once more: the marks are a record, and
/// losing them costs one swap per link.
pub struct LinkMarks {
    map: HashMap<MapData, u32, [u8; 32]>,
    /// The mark of links made now.
    now: [u8; 32],
}

/// The marks map: a hash of up to 4,096 links.
const MARKS_SHAPE: pinned_maps::Shape = pinned_maps::Shape {
    map_type: 1, // BPF_MAP_TYPE_HASH
    key_size: 4,
    value_size: 32,
    max_entries: 4096,
    flags: 0,
};

impl LinkMarks {
    /// Opens the pinned marks map, made anew if it is missing or of
    /// another shape.
    pub fn open(pins: &PinDir) -> Result<LinkMarks> {
        let path = pins.map(baton_common::names::LINK_MARKS_MAP);
        let data = match pinned_maps::pinned_shape(&path) {
            Ok(shape) if shape == MARKS_SHAPE => {
                MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?
            }
            found => {
                if found.is_ok() {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                }
                pinned_maps::create_pinned(
                    &path,
                    baton_common::names::LINK_MARKS_MAP,
                    &MARKS_SHAPE,
                )?
            }
        };
        let map = HashMap::try_from(aya::maps::Map::HashMap(data))
            .context("the link marks map is not a hash of link ids")?;
        Ok(LinkMarks {
            map,
            now: mark_of(pins)?,
        })
    }

    /// Whether link `id` was made by this object on the maps pinned now.
    pub fn made_here(&self, id: u32) -> bool {
        self.map.get(&id, 0).ok() == Some(self.now)
    }

    /// Records link `id` as made here. A full map is emptied first (its
    /// entries are mostly links long gone: each costs at most one swap).
    pub fn mark(&mut self, id: u32) -> Result<()> {
        if self.map.insert(id, self.now, 0).is_ok() {
            return Ok(());
        }
        let keys: Vec<u32> = self.map.keys().filter_map(Result::ok).collect();
        for key in keys {
            let _ = self.map.remove(&key);
        }
        self.map
            .insert(id, self.now, 0)
            .with_context(|| format!("marking link {id}"))
    }

    /// Marks the link pinned at `pin` (just made by this process).
    pub fn mark_pin(&mut self, pin: &Path) -> Result<()> {
        let id = PinnedLink::open(pin)?.id;
        self.mark(id)
    }
}

/// SHA-256 of this BPF object, hashed once.
fn object_digest() -> &'static [u8; 32] {
    static DIGEST: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    DIGEST.get_or_init(|| Sha256::digest(OBJECT).into())
}

/// This object's mark on the maps pinned in `pins` now: SHA-256 of the
/// object's digest and of each pinned map's name and id.
fn mark_of(pins: &PinDir) -> Result<[u8; 32]> {
    let mut hash = Sha256::new();
    hash.update(object_digest());
    for (name, _) in pinned_maps::wanted()? {
        let path = pins.map(name);
        let id = match aya::maps::MapInfo::from_pin(&path) {
            Ok(info) => info.id(),
            Err(e) if !path.exists() => {
                bail!("{name} is not pinned at {} ({e})", path.display())
            }
            Err(e) => return Err(anyhow!(e).context(format!("reading {}", path.display()))),
        };
        hash.update(name.as_bytes());
        hash.update(id.to_ne_bytes());
    }
    Ok(hash.finalize().into())
}
