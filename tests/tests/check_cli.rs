//! `baton check -c FILE`: 0 and a summary for every example, 1 and every
//! error for a broken file.
use std::path::Path;
use std::process::Command;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples")
}

fn check(path: &Path) -> std::process::Output {
    Command::new(baton_lab::baton_bin().expect("baton binary"))
        .args(["check", "-c"])
        .arg(path)
        .output()
        .expect("run baton")
}

#[test]
fn every_example_checks_ok_with_its_placement() {
    let dir = std::env::temp_dir().join(format!("{}-check", baton_lab::unique_prefix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // The cluster example's TLS files (only their presence and the key's
    // mode are checked).
    use std::os::unix::fs::PermissionsExt as _;
    for f in ["etcd-ca.pem", "etcd-client.pem", "etcd-client.key"] {
        std::fs::write(dir.join(f), [1u8; 32]).expect("tls file");
    }
    std::fs::set_permissions(
        dir.join("etcd-client.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    for name in ["lab.toml", "ipv6.toml", "vlan.toml", "cluster.toml"] {
        let text = std::fs::read_to_string(examples().join(name))
            .expect("example")
            .replace("/etc/baton/", &format!("{}/", dir.display()));
        let copy = dir.join(name);
        std::fs::write(&copy, text).expect("copy");
        let out = check(&copy);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(": ok"), "{name}: {stdout}");
        assert!(stdout.contains("with all ports up"), "{name}: {stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_broken_file_exits_1_with_every_error() {
    let bad =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tests/invalid/unknown-keys.toml");
    let out = check(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            ":11:1: timers.hold_dwon: unknown key \"hold_dwon\"; did you mean \"hold_down\"?"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean \"services\"?"), "{stderr}");
    assert!(stderr.contains("3 error(s)"), "{stderr}");
    let missing = check(Path::new("/nonexistent/baton.toml"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read the file"));
}
