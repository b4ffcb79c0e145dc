//! The cluster bench's partition: gw0 cut off the HA network, both
//! gateways alive and their links up; what the two-owner checker saw.
use crate::cluster_site::{A, B, Site};
use anyhow::Result;
use baton_lab::cluster::{TwoOwnerChecker, now_of_day};
use std::time::Duration;

impl Site {
    /// gw0 cut off the HA network for 5 s, its links up and both alive:
    /// the two-owner windows.
    pub fn partition(&mut self) -> Result<usize> {
        let checker = TwoOwnerChecker::start(&self.c.lab, &[A, B])?;
        std::thread::sleep(Duration::from_millis(300));
        self.c.partition_ha(0, true)?;
        println!("[bench cluster]   HA of gw0 cut at {:.3}", now_of_day());
        // Longer than VRRP's default master-down interval (3 x 1 s + skew).
        std::thread::sleep(Duration::from_secs(5));
        self.c.partition_ha(0, false)?;
        println!("[bench cluster]   HA of gw0 back at {:.3}", now_of_day());
        std::thread::sleep(Duration::from_millis(500));
        let o = checker.finish()?;
        let windows: Vec<&String> = o
            .double_answers
            .iter()
            .chain(&o.after_announcement)
            .collect();
        println!(
            "[bench cluster]   partition windows (first 4): {:?}",
            &windows[..windows.len().min(4)]
        );
        if !windows.is_empty() && std::env::var("BATON_BENCH_DEBUG").is_ok() {
            for (g, d) in self.daemons.iter().enumerate() {
                let Some(d) = d else { continue };
                let keys = [
                    "move done",
                    "claimed",
                    "fenced",
                    "withdrawn",
                    "lease",
                    "revok",
                    "released",
                ];
                for l in d
                    .log_text()
                    .lines()
                    .filter(|l| keys.iter().any(|k| l.contains(k)))
                {
                    println!("gw{g}: {l}");
                }
            }
        }
        Ok(windows.len())
    }
}
