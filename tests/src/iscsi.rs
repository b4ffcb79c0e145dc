//! A real iSCSI target (tgtd) in a lab gateway, and the numbers that prove a
//! session survived: its I_T nexus ids (a re-login gets a new one).
use crate::{Netns, Peer, run_checked};
use anyhow::{Context as _, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

pub const IQN: &str = "iqn.2026-11.lab.baton:lun";
static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Target {
    /// tgtd's control port (-C): its socket file is shared by all namespaces.
    ctl: String,
    peer: Option<Peer>,
    lun: PathBuf,
    portal: std::net::IpAddr,
}

impl Target {
    /// Starts tgtd on `portal`:3260 in `ns` with a file-backed LUN of `mib` MiB.
    /// The portal address must exist in `ns`.
    pub fn start(ns: &Netns, portal: std::net::IpAddr, mib: u64) -> Result<Target> {
        // tgtd takes -C up to 32767.
        let ctl =
            (1000 + (std::process::id() % 300) * 100 + SEQ.fetch_add(1, Ordering::Relaxed) % 100)
                .to_string();
        let lun = std::env::temp_dir().join(format!("baton-lun-{ctl}.img"));
        let f = std::fs::File::create(&lun)?;
        f.set_len(mib << 20)?;
        let peer = ns.spawn(&[
            "tgtd",
            "-f",
            "-C",
            &ctl,
            "--iscsi",
            &format!("portal={portal}:3260"),
        ])?;
        let mut t = Target {
            ctl,
            peer: Some(peer),
            lun,
            portal,
        };
        ns.wait_listening(3260)
            .context("tgtd did not start listening")?;
        t.adm(&[
            "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "1", "-T", IQN,
        ])?;
        let path = t.lun.to_string_lossy().into_owned();
        t.adm(&[
            "--lld",
            "iscsi",
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            "1",
            "--lun",
            "1",
            "-b",
            &path,
        ])?;
        t.adm(&[
            "--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
        ])?;
        t.peer.as_mut().context("tgtd")?;
        Ok(t)
    }

    fn adm(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-C", self.ctl.as_str()];
        full.extend_from_slice(args);
        run_checked("tgtadm", &full)
    }

    pub fn url(&self) -> String {
        format!("iscsi://{}/{IQN}/1", self.portal)
    }

    /// The I_T nexus ids (one per session) the target holds now.
    pub fn nexus(&self) -> Result<Vec<u64>> {
        let out = self.adm(&["--lld", "iscsi", "--mode", "target", "--op", "show"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("I_T nexus:")?.trim().parse().ok())
            .collect())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.adm(&[
            "--lld", "iscsi", "--op", "delete", "--force", "--mode", "target", "--tid", "1",
        ]);
        let _ = self.adm(&["--op", "delete", "--mode", "system"]);
        drop(self.peer.take());
        let _ = std::fs::remove_file(&self.lun);
    }
}
