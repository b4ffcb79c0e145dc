//! baton's program on the egress of instance macvlans: the PDUs an instance
//! with its own MAC sends are counted there (see `baton_tc_macvlan`). One
//! TCX link per macvlan, pinned so that it outlives a restart, attached
//! before the macvlan comes up and unpinned (so detached) when baton
//! deletes it.
use super::links::{LinkMarks, PinnedLink};
use super::{PinDir, load, load_program, program_fd, unpin};
use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, links::FdLink},
};
use baton_common::names;
use std::collections::BTreeMap;
use std::sync::Mutex;

pub struct MacvlanTc {
    pins: PinDir,
    inner: Mutex<Inner>,
}

struct Inner {
    ebpf: Ebpf,
    marks: LinkMarks,
    /// Macvlans this process found or made attached: name -> ifindex.
    attached: BTreeMap<String, u32>,
}

impl MacvlanTc {
    pub fn load(pins: &PinDir) -> Result<Self> {
        let mut ebpf = load(pins)?;
        load_program(&mut ebpf, names::TC_MACVLAN_PROGRAM)?;
        Ok(MacvlanTc {
            pins: pins.clone(),
            inner: Mutex::new(Inner {
                ebpf,
                marks: LinkMarks::open(pins)?,
                attached: BTreeMap::new(),
            }),
        })
    }

    /// The program on macvlan `name` (ifindex `ifindex`), attached if it is
    /// not: a pin on another ifindex (a device of the same name deleted by
    /// someone else) is replaced.
    pub fn ensure(&self, name: &str, ifindex: u32) -> Result<()> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| anyhow!("macvlan TC lock poisoned"))?;
        if inner.attached.get(name) == Some(&ifindex) {
            return Ok(());
        }
        let pin = self.pins.macvlan_link(name);
        if pin.exists() {
            if let Some(link) = PinnedLink::open(&pin).ok().filter(|l| l.ifindex == ifindex) {
                // Attached, maybe by an earlier baton (see links.rs).
                let Inner { ebpf, marks, .. } = &mut *inner;
                let program = program_fd(ebpf, names::TC_MACVLAN_PROGRAM)?;
                if link
                    .adopt(program, marks)
                    .with_context(|| format!("giving {} this baton's program", pin.display()))?
                {
                    tracing::warn!(pin = %pin.display(), "the macvlan's link was not this baton's (an earlier baton's program, or other maps): its program swapped in place");
                }
                inner.attached.insert(name.to_string(), ifindex);
                return Ok(());
            }
            unpin(&pin)?;
        }
        let prog: &mut SchedClassifier = inner
            .ebpf
            .program_mut(names::TC_MACVLAN_PROGRAM)
            .ok_or_else(|| anyhow!("program vanished"))?
            .try_into()?;
        let id = prog
            .attach(name, TcAttachType::Egress)
            .with_context(|| format!("attaching {} to {name}", names::TC_MACVLAN_PROGRAM))?;
        let link: FdLink = prog
            .take_link(id)?
            .try_into()
            .map_err(|e| anyhow!("TC egress on {name} is not a bpf_link ({e})"))?;
        link.pin(&pin)
            .with_context(|| format!("pinning {}", pin.display()))?;
        inner.marks.mark_pin(&pin)?;
        inner.attached.insert(name.to_string(), ifindex);
        Ok(())
    }

    /// Detaches from macvlan `name` (before or after it is deleted).
    pub fn forget(&self, name: &str) -> Result<()> {
        if let Ok(mut inner) = self.inner.lock() {
            inner.attached.remove(name);
        }
        let pin = self.pins.macvlan_link(name);
        if pin.exists() {
            unpin(&pin)?;
        }
        Ok(())
    }
}
