//! A lab removes its namespaces and pins also when the test using it panics.
use baton_lab::{Lab, LabSpec};

fn netns_list() -> String {
    baton_lab::run_checked("ip", &["netns", "list"]).expect("ip netns list")
}

#[test]
fn namespaces_and_pins_are_removed_after_a_panic() {
    let names = std::sync::Mutex::new(Vec::new());
    let pins = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::build(&LabSpec {
            gateways: 2,
            ipv6: false,
        })
        .expect("lab");
        baton_lab::dataplane::attach(lab.gw(0)).expect("attach");
        names.lock().unwrap().extend(lab.namespaces());
        pins.lock().unwrap().push(lab.gw(0).pin_dir.clone());
        assert!(lab.gw(0).pin_dir.join("links/xdp-ge0").exists());
        panic!("deliberate failure inside a lab");
    });
    assert!(result.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 4);
    let list = netns_list();
    for name in &names {
        assert!(!list.contains(name.as_str()), "{name} survived the panic");
    }
    for pin in pins.into_inner().unwrap() {
        assert!(!pin.exists(), "{} survived the panic", pin.display());
    }
}
