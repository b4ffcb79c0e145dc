//! The CLI as a shell user expects it: `baton check FILE`, `baton status
//! INSTANCE...`, `-j`, and with `--json` every answer and every error JSON
//! on stdout (an error with a non-zero exit).
use baton_lab::daemon::{Daemon, lab_config};
use baton_lab::{Lab, LabSpec};
use std::process::Command;

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {:?} / {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn baton(args: &[&str]) -> std::process::Output {
    Command::new(baton_lab::baton_bin().expect("baton binary"))
        .args(args)
        .output()
        .expect("run baton")
}

#[test]
fn check_takes_the_file_as_an_argument_and_answers_in_json() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/lab.toml");
    let out = baton(&["check", "--offline", examples]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
    let out = baton(&["check", "--offline", "-j", examples]);
    assert!(out.status.success(), "{out:?}");
    let v = json_of(&out);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["placement"]["iscsi-a"], "ge0", "{v}");
    let bad = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/tests/invalid/unknown-keys.toml"
    );
    let out = baton(&["check", "--offline", "--json", bad]);
    assert_eq!(out.status.code(), Some(1));
    let v = json_of(&out);
    assert_eq!(v["ok"], false, "{v}");
    let errors = v["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 3, "{v}");
    assert_eq!(errors[0]["line"], 11, "{v}");
    assert_eq!(errors[0]["path"], "timers.hold_dwon", "{v}");
    // A file given both ways is refused.
    let out = baton(&["check", examples, "-c", examples]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn with_json_an_error_is_json_on_stdout() {
    let out = baton(&["status", "-j", "--socket", "/nonexistent/baton.sock"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json_of(&out);
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("connecting to the baton daemon"),
        "{v}"
    );
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn status_shows_the_instances_asked_for_and_move_answers_in_json() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let config = lab_config(
        "hold_down = \"0\"",
        "\n[instances.iscsi-b]\naddress = \"192.0.2.101/24\"\nports = [\"ge0\", \"ge1\"]\n",
    );
    let d = Daemon::start(&lab, 0, &config)?;
    let one = json_of(&d.cli(&["status", "-j", "iscsi-b"])?);
    let names: Vec<&str> = one["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["iscsi-b"], "{one}");
    let text = String::from_utf8_lossy(&d.cli(&["status", "iscsi-a"])?.stdout).into_owned();
    assert!(
        text.contains("iscsi-a") && !text.contains("iscsi-b"),
        "{text}"
    );
    let out = d.cli(&["status", "--json", "nosuch"])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        json_of(&out)["error"]
            .as_str()
            .unwrap_or("")
            .contains("no instance nosuch; instances: iscsi-a, iscsi-b"),
        "{out:?}"
    );
    baton_lab::wait_until("iscsi-a placed", std::time::Duration::from_secs(5), || {
        Ok(d.owner("iscsi-a")?.is_some())
    })?;
    let out = d.cli(&["move", "-j", "iscsi-a", "ge1"])?;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_of(&out)["ok"], true);
    let out = d.cli(&["move", "--json", "iscsi-a", "ge9"])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(json_of(&out)["error"].is_string(), "{out:?}");
    let out = d.cli(&["reload", "-j"])?;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_of(&out)["ok"], true);
    // Without a PORT or --member, the usage shows both forms.
    let out = d.cli(&["move", "iscsi-a"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("baton move INSTANCE --member ID"),
        "{out:?}"
    );
    Ok(())
}
