//! keepalived as the cluster bench runs it: its configuration (VRRP with
//! adverts unicast over the HA link; the storage link and the target
//! tracked, as baton's `[health]` checks do), its start and its stop.
use anyhow::Result;
use baton_lab::cluster::HA_NET;
use std::path::Path;
use std::time::Duration;

use crate::cluster_site::A;

/// Writes gateway `g`'s configuration in `dir`; the shell command that
/// runs keepalived in the foreground, logging next to it.
pub fn prepare(dir: &Path, g: usize, tuned: bool, tgtd_pidfile: &Path) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    let conf = dir.join("keepalived.conf");
    std::fs::write(&conf, config(g, tuned, tgtd_pidfile))?;
    let (pid, vrrp_pid) = (dir.join("k.pid"), dir.join("v.pid"));
    // A killed keepalived left its pid files (its pid may even be a zombie
    // still): a rebooted unit has none.
    let _ = std::fs::remove_file(&pid);
    let _ = std::fs::remove_file(&vrrp_pid);
    Ok(format!(
        "exec keepalived -n -l -D -G -P -f {} -p {} -r {} >> {} 2>&1",
        conf.display(),
        pid.display(),
        vrrp_pid.display(),
        dir.join("log").display()
    ))
}

/// Kills keepalived and its VRRP child (SIGKILL), or stops it (SIGTERM:
/// it says priority 0 and leaves).
pub fn stop(dir: &Path, kill: bool) {
    let signal = if kill { "-KILL" } else { "-TERM" };
    for f in ["k.pid", "v.pid"] {
        if let Ok(pid) = std::fs::read_to_string(dir.join(f)) {
            let _ = std::process::Command::new("kill")
                .args([signal, pid.trim()])
                .status();
        }
    }
    std::thread::sleep(Duration::from_millis(if kill { 50 } else { 300 }));
}

/// Gateway `g`: A on ge0, adverts unicast over the HA link; the storage
/// link san0 by `track_interface` (down: FAULT). The target by a
/// `vrrp_script` reading its pidfile every second: keepalived's
/// `track_process` cannot run in a network namespace other than the
/// first (the kernel's process-event connector answers it "Connection
/// refused"; it then holds the instance in FAULT for good).
fn config(g: usize, tuned: bool, tgtd_pidfile: &Path) -> String {
    let (me, peer) = (format!("{HA_NET}.{}", g + 1), format!("{HA_NET}.{}", 2 - g));
    let (version, advert) = if tuned { (3, "0.1") } else { (2, "1") };
    format!(
        "global_defs {{\n  router_id gw{g}\n  vrrp_version {version}\n  vrrp_garp_master_delay 0\n  \
         script_user root\n}}\n\
         vrrp_script target {{\n  script \"/bin/sh -c 'kill -0 $(cat {pidfile})'\"\n  interval 1\n  \
         fall 1\n  rise 1\n}}\n\
         vrrp_instance VI_A {{\n  state BACKUP\n  nopreempt\n  interface ha0\n  virtual_router_id 51\n  \
         priority {}\n  advert_int {advert}\n  unicast_src_ip {me}\n  unicast_peer {{\n    {peer}\n  }}\n  \
         virtual_ipaddress {{\n    {A}/24 dev ge0\n  }}\n  track_interface {{\n    san0\n  }}\n  \
         track_script {{\n    target\n  }}\n}}\n",
        150 - 50 * g,
        pidfile = tgtd_pidfile.display(),
    )
}
