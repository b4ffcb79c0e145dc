//! `baton check -c FILE`: 0 and a summary for every example, 1 and every
//! error for a broken file, and (not `--offline`) for a port or watched
//! link this host lacks.
use std::path::Path;
use std::process::Command;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples")
}

/// `baton check` with `args` before `-c PATH`.
fn check_with(args: &[&str], path: &Path) -> std::process::Output {
    Command::new(baton_lab::baton_bin().expect("baton binary"))
        .arg("check")
        .args(args)
        .arg("-c")
        .arg(path)
        .output()
        .expect("run baton")
}

/// The examples name ports this machine lacks: checked as files.
fn check(path: &Path) -> std::process::Output {
    check_with(&["--offline"], path)
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

#[test]
fn an_interface_this_host_lacks_is_an_error_unless_offline() {
    let dir = std::env::temp_dir().join(format!("{}-check-host", baton_lab::unique_prefix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("baton.toml");
    // `lo` exists in every network namespace; `san9` and `ge9` here do not.
    std::fs::write(
        &file,
        "[networks.n]\nsubnets = [\"192.0.2.0/24\"]\n\n[ports.lo]\nnetworks = [\"n\"]\n\n\
         [ports.ge9]\nnetworks = [\"n\"]\n\n[instances.a]\naddress = \"192.0.2.1/24\"\n\
         ports = [\"lo\", \"ge9\"]\n\n[health.san]\nlinks = [\"san9\"]\n",
    )
    .expect("write");
    let out = check_with(&[], &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(":7:1: ports.ge9: no interface \"ge9\" on this host"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":15:10: health.san.links[0]: no interface \"san9\" on this host"),
        "{stderr}"
    );
    assert!(!stderr.contains("\"lo\" on this host"), "{stderr}");
    assert!(stderr.contains("2 error(s)"), "{stderr}");
    let offline = check_with(&["--offline"], &file);
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
