//! Every example config is valid; every config under tests/invalid/ gives
//! exactly the errors in its `.errors` file (regenerate one with
//! `BATON_BLESS=1 cargo test -p baton-config --test corpus` after checking it).
use baton_config::{Host, parse};
use std::path::Path;

const HOST: Host = Host::with_cpus(2);

fn files(dir: &str, ext: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn every_invalid_config_gives_its_errors() {
    let cases = files("tests/invalid", "toml");
    assert!(cases.len() >= 30, "corpus shrank to {}", cases.len());
    let mut failures = Vec::new();
    for path in cases {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("read");
        let got = match parse(&name, &text, &HOST) {
            Ok(_) => String::from("(accepted)\n"),
            Err(diags) => diags.to_string(),
        };
        let expected_path = path.with_extension("errors");
        if std::env::var_os("BATON_BLESS").is_some() {
            std::fs::write(&expected_path, &got).expect("write .errors");
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != want {
            failures.push(format!("{name}:\n--- expected\n{want}--- got\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_example_is_valid() {
    let examples = files("examples", "toml");
    assert!(examples.len() >= 4);
    // The cluster example names a root-only key file; make one for it.
    let key_dir = std::env::temp_dir().join(format!("baton-key-{}", std::process::id()));
    std::fs::create_dir_all(&key_dir).expect("temp dir");
    tls_files(&key_dir, 0o600);
    for path in examples {
        let text = std::fs::read_to_string(&path)
            .expect("read")
            .replace("/etc/baton/", &format!("{}/", key_dir.display()));
        let name = path.display().to_string();
        if let Err(e) = parse(&name, &text, &HOST) {
            panic!("{name} is invalid:\n{e}");
        }
    }
    let _ = std::fs::remove_dir_all(&key_dir);
}

/// The example's CA, client certificate and key (contents are not read by
/// `baton check`), the key with `mode`.
fn tls_files(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    for f in ["etcd-ca.pem", "etcd-client.pem", "etcd-client.key"] {
        std::fs::write(dir.join(f), [7u8; 32]).expect("tls file");
    }
    std::fs::set_permissions(
        dir.join("etcd-client.key"),
        std::fs::Permissions::from_mode(mode),
    )
    .expect("chmod");
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = std::env::temp_dir().join(format!("baton-key-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    tls_files(&dir, 0o644);
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster.toml"),
    )
    .expect("read")
    .replace("/etc/baton/", &format!("{}/", dir.display()));
    let err = parse("cluster.toml", &text, &HOST).expect_err("accepted a world-readable key");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(err.0.len(), 1);
    assert!(
        err.0[0]
            .message
            .contains("readable by others than root (mode 644"),
        "{}",
        err
    );
    assert_eq!(err.0[0].path, "cluster.key_file");
}

/// The dataplane table holds 4,096 entries: one more instance is refused by
/// `baton check` (a file too long for the corpus, so built here).
#[test]
fn more_instances_than_the_table_holds_are_refused() {
    let mut text = String::from(
        "[networks.storage]\nsubnets = [\"10.0.0.0/8\"]\n\n[ports.ge0]\nnetworks = [\"storage\"]\nmax_addresses = 100000\n\n[limits]\naddresses_per_port = 100000\n",
    );
    let fits = |n: u32, text: &mut String| {
        for i in 0..n {
            let a = i + 1;
            text.push_str(&format!(
                "\n[instances.i{i}]\naddress = \"10.{}.{}.{}/8\"\nports = [\"ge0\"]\n",
                (a >> 16) & 255,
                (a >> 8) & 255,
                a & 255
            ));
        }
    };
    let mut full = text.clone();
    fits(4096, &mut full);
    assert!(
        parse("full.toml", &full, &HOST).is_ok(),
        "4,096 instances fit"
    );
    fits(4097, &mut text);
    let err = parse("over.toml", &text, &HOST)
        .err()
        .map(|d| d.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("4097 instances need 4097 dataplane entries") && err.contains("holds 4096"),
        "{err}"
    );
}
