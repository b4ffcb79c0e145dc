//! Bad input to `baton dataplane` gives a clear error and changes nothing.
use baton_lab::dataplane::baton;
use baton_lab::{Lab, LabSpec};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn has_xdp(lab: &Lab, port: &str) -> bool {
    lab.gw(0)
        .ns
        .ip(&["-d", "link", "show", "dev", port])
        .map(|s| s.contains("prog/xdp"))
        .unwrap_or(false)
}

#[test]
fn unknown_port_changes_nothing() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let gw = lab.gw(0);
    // ge0 is fine, ge7 does not exist: neither may be attached.
    let out = baton(
        gw,
        &["dataplane", "attach", "--port", "ge0", "--port", "ge7"],
    )?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no port named \"ge7\""),
        "{}",
        stderr(&out)
    );
    assert!(
        !has_xdp(&lab, "ge0"),
        "ge0 was attached although the command failed"
    );
    assert!(!gw.pin_dir.join("links/xdp-ge0").exists());
    Ok(())
}

#[test]
fn loopback_is_refused() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let out = baton(lab.gw(0), &["dataplane", "attach", "--port", "lo"])?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("loopback"), "{}", stderr(&out));
    Ok(())
}

#[test]
fn pin_dir_without_bpffs_is_refused() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let dir = format!("/tmp/{}-nobpffs/baton", lab.prefix);
    let out = lab
        .gw(0)
        .ns
        .command(baton_lab::baton_bin()?)
        .args(["dataplane", "attach", "--port", "ge0", "--pin-dir", &dir])
        .output()?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not on a bpffs"), "{}", stderr(&out));
    assert!(!std::path::Path::new(&dir).exists(), "created {dir}");
    assert!(!has_xdp(&lab, "ge0"));
    Ok(())
}

#[test]
fn a_program_attached_by_someone_else_is_left_alone() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let gw = lab.gw(0);
    // "Someone else": the same binary with another pin directory.
    let other = format!("/sys/fs/bpf/{}-other", lab.prefix);
    let attach_other = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        Ok(gw
            .ns
            .command(baton_lab::baton_bin()?)
            .args(args)
            .args(["--pin-dir", &other])
            .output()?)
    };
    let first = attach_other(&["dataplane", "attach", "--port", "ge0"])?;
    assert!(first.status.success(), "{}", stderr(&first));
    let ours = baton(
        gw,
        &["dataplane", "attach", "--port", "ge1", "--port", "ge0"],
    )?;
    let _ = std::fs::remove_dir_all(&other);
    assert!(!ours.status.success());
    assert!(
        stderr(&ours).contains("did not attach"),
        "{}",
        stderr(&ours)
    );
    // ge1 was attached before ge0 failed: it must have been rolled back.
    assert!(
        !has_xdp(&lab, "ge1"),
        "ge1 kept a program after the failed attach"
    );
    Ok(())
}

#[test]
fn attach_twice_is_idempotent_and_detach_removes() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let gw = lab.gw(0);
    for _ in 0..2 {
        let out = baton(gw, &["dataplane", "attach", "--port", "ge0"])?;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(has_xdp(&lab, "ge0"));
    let out = baton(gw, &["dataplane", "detach", "--port", "ge0"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!has_xdp(&lab, "ge0"));
    let out = baton(gw, &["dataplane", "detach", "--port", "ge0"])?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not attached"), "{}", stderr(&out));
    Ok(())
}
