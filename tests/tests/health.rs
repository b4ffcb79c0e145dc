//! A `[health]` check on a single host: a failed check is reported (status,
//! the event stream) and the instance stays where it is, there being no
//! other member to go to; the check passes again after hold_up.
use baton_lab::daemon::{Daemon, lab_config};
use baton_lab::{Lab, LabSpec, wait_until};
use std::time::Duration;

#[test]
fn on_one_host_a_failed_check_is_reported_and_the_instance_stays() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let gw = &lab.gateways[0].ns;
    gw.ip(&[
        "link", "add", "san0", "type", "veth", "peer", "name", "san0p",
    ])?;
    gw.ip(&["link", "set", "san0", "up"])?;
    gw.ip(&["link", "set", "san0p", "up"])?;
    let config = lab_config(
        "hold_down = \"0\"\nhold_up = \"500ms\"",
        "\n[health.san]\nlinks = [\"san0\"]\n",
    );
    let d = Daemon::start(&lab, 0, &config)?;
    let events_file = std::env::temp_dir().join(format!("{}-health-events", lab.prefix));
    let mut events = d.events(false, std::fs::File::create(&events_file)?)?;
    wait_until("iscsi-a placed", Duration::from_secs(5), || {
        Ok(d.owner("iscsi-a")?.is_some())
    })?;
    let unserved = |d: &Daemon| -> anyhow::Result<String> {
        let i = d.instance("iscsi-a")?;
        Ok(i["unserved"]["reason"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(unserved(&d)?, "", "a passing check");

    gw.ip(&["link", "set", "san0p", "down"])?;
    wait_until("the check failed", Duration::from_secs(3), || {
        Ok(unserved(&d)? == "check-failed")
    })
    .map_err(|e| e.context(d.log_text()))?;
    let status = d.status()?;
    let check = &status["checks"][0];
    assert_eq!(check["ok"], false, "{check}");
    assert_eq!(check["links"][0]["state"], "failed", "{check}");
    // Nowhere else to go: it stays, and says why.
    assert_eq!(d.owner("iscsi-a")?.as_deref(), Some("ge0"));
    let text = String::from_utf8_lossy(&d.cli(&["status"])?.stdout).into_owned();
    assert!(text.contains("check-failed (san)"), "{text}");
    assert!(text.contains("check san FAILED: san0 failed"), "{text}");
    let scrape = gw.http_get("127.0.0.1:9750".parse()?, "/metrics")?;
    assert!(
        scrape.contains("baton_check_ok{check=\"san\"} 0"),
        "{scrape}"
    );

    gw.ip(&["link", "set", "san0p", "up"])?;
    wait_until("the check passes again", Duration::from_secs(3), || {
        Ok(unserved(&d)?.is_empty())
    })?;
    assert_eq!(d.status()?["checks"][0]["ok"], true);
    let scrape = gw.http_get("127.0.0.1:9750".parse()?, "/metrics")?;
    assert!(
        scrape.contains("baton_check_ok{check=\"san\"} 1"),
        "{scrape}"
    );
    let _ = events.kill();
    let _ = events.wait();
    let log = std::fs::read_to_string(&events_file)?;
    let _ = std::fs::remove_file(&events_file);
    assert!(log.contains("check san failed"), "{log}");
    assert!(log.contains("check san passes"), "{log}");
    Ok(())
}
