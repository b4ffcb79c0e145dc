#![allow(dead_code)] // each test uses part of the harness
//! baton's programs loaded (not attached) in a private pin directory, run
//! with BPF_PROG_TEST_RUN: the table-driven fixtures' harness.
use aya::maps::{MapData, PerCpuHashMap};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use baton::dataplane::{InstanceTable, PinDir, load, load_program};
use baton_common::{
    InstanceCounters, InstanceEntry, InstanceKey, InstancePortKey, PduCounters, names,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_REDIRECT: u32 = 7;
/// Frames run on the loopback device of the test's namespace (ifindex 1).
pub const HERE: u32 = 1;
/// An owner that is not where the frame arrives.
pub const ELSEWHERE: u32 = 4242;

pub struct TestDataplane {
    pub ebpf: aya::Ebpf,
    pins: PinDir,
}

impl Drop for TestDataplane {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.pins.path());
    }
}

impl TestDataplane {
    /// A fresh object (fresh maps) with the XDP and both TC programs verified.
    pub fn new() -> TestDataplane {
        baton_lab::ensure_bpffs().expect("bpffs");
        let pins = PinDir::new(format!("/sys/fs/bpf/{}-run", baton_lab::unique_prefix()));
        let mut ebpf = load(&pins).expect("object loads");
        for prog in [
            names::XDP_PROGRAM,
            names::TC_EGRESS_PROGRAM,
            names::TC_INGRESS_PROGRAM,
        ] {
            load_program(&mut ebpf, prog).expect("verifies");
        }
        TestDataplane { ebpf, pins }
    }

    pub fn pins(&self) -> &PinDir {
        &self.pins
    }

    /// Places an instance through the control plane's table (which gives
    /// it a counter slot); counted on [`HERE`] and [`ELSEWHERE`] unless the
    /// entry names its ports.
    pub fn own(&mut self, key: InstanceKey, mut entry: InstanceEntry) {
        if entry.ports == [0; 4] {
            entry.ports = [HERE, ELSEWHERE, 0, 0];
        }
        let mut table = InstanceTable::open(&self.pins).expect("instance table");
        table.set(&key, &entry).expect("insert");
    }

    /// Removes an instance through the control plane's table.
    pub fn disown(&mut self, key: InstanceKey) {
        let mut table = InstanceTable::open(&self.pins).expect("instance table");
        table.remove(&key).expect("remove");
    }

    pub fn counters(&self, id: u32, ifindex: u32) -> InstanceCounters {
        let table = InstanceTable::open(&self.pins).expect("instance table");
        table
            .counters()
            .expect("counters")
            .into_iter()
            .find(|(k, _)| *k == InstancePortKey { id, ifindex })
            .map(|(_, c)| c)
            .unwrap_or_default()
    }

    pub fn pdus(&self, id: u32, ifindex: u32) -> PduCounters {
        let map: PerCpuHashMap<&MapData, InstancePortKey, PduCounters> =
            PerCpuHashMap::try_from(self.ebpf.map(names::PDU_STATS_MAP).expect("map"))
                .expect("per-cpu");
        let mut sum = PduCounters::default();
        if let Ok(per_cpu) = map.get(&InstancePortKey { id, ifindex }, 0) {
            for c in per_cpu.iter() {
                sum.add(c);
            }
        }
        sum
    }

    /// Runs XDP as if the frame arrived on [`HERE`]; the action and the frame after it.
    pub fn xdp(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog: &Xdp = self
            .ebpf
            .program(names::XDP_PROGRAM)
            .expect("prog")
            .try_into()
            .expect("xdp");
        let mut md = [0u8; 24];
        md[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes()); // data_end
        md[12..16].copy_from_slice(&HERE.to_ne_bytes()); // ingress_ifindex
        let mut out = vec![0u8; frame.len() + 64];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&md),
                ..Default::default()
            })
            .expect("test run");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// Runs TC egress (skb->dev is the namespace's loopback, [`HERE`]).
    pub fn tc_egress(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.tc(names::TC_EGRESS_PROGRAM, frame)
    }

    /// Runs the TCX ingress program on [`HERE`].
    pub fn tc_ingress(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.tc(names::TC_INGRESS_PROGRAM, frame)
    }

    fn tc(&self, name: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog: &SchedClassifier = self
            .ebpf
            .program(name)
            .expect("prog")
            .try_into()
            .expect("tc");
        let mut out = vec![0u8; frame.len() + 64];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .expect("test run");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }
}

impl Default for TestDataplane {
    fn default() -> Self {
        Self::new()
    }
}
