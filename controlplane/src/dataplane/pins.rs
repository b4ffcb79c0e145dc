//! The bpffs directory a baton host keeps its maps and links in.
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/baton";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Clone, Debug)]
pub struct PinDir(PathBuf);

impl PinDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        PinDir(path.into())
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn maps(&self) -> PathBuf {
        self.0.clone()
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn xdp_link(&self, port: &str) -> PathBuf {
        self.0.join("links").join(format!("xdp-{port}"))
    }
    pub fn tc_ingress_link(&self, port: &str) -> PathBuf {
        self.0.join("links").join(format!("tc-ingress-{port}"))
    }
    pub fn tc_link(&self, port: &str) -> PathBuf {
        self.0.join("links").join(format!("tc-egress-{port}"))
    }
    /// An instance macvlan's egress link (not a port: `attached_ports` skips it).
    pub fn macvlan_link(&self, macvlan: &str) -> PathBuf {
        self.0.join("links").join(format!("tc-macvlan-{macvlan}"))
    }

    /// The ports that have one of baton's links pinned here, sorted.
    pub fn attached_ports(&self) -> Vec<String> {
        let mut ports: Vec<String> = std::fs::read_dir(self.0.join("links"))
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                ["xdp-", "tc-ingress-", "tc-egress-"]
                    .iter()
                    .find_map(|p| name.strip_prefix(p).map(str::to_string))
            })
            .collect();
        ports.sort();
        ports.dedup();
        ports
    }

    /// Checks the directory is on a bpffs (creating it and `links/`).
    pub fn ensure(&self) -> Result<()> {
        let parent = self.0.parent().context("pin directory has no parent")?;
        if !is_bpffs(parent) {
            bail!(
                "{} is not on a bpffs mount, so baton cannot pin its programs and maps; \
                 mount one with: mount -t bpf bpf {}",
                self.0.display(),
                parent.display()
            );
        }
        std::fs::create_dir_all(self.0.join("links"))
            .with_context(|| format!("creating {}", self.0.join("links").display()))
    }
}

pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; zeroed is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}
