//! The cluster's rules, pure: who claims an unowned instance, what the
//! engine is told, the digest of an instance's definition.
use super::records::{MemberRecord, OwnerRecord};
use crate::decide::{ClusterView, FenceCause, Reason};
use crate::protocol::MemberStatus;
use baton_config::model::{Cluster, Instance, InstanceName, MemberId};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// The part of an instance's definition members must agree on before one
/// takes it over from another: address, VLAN, MAC, routes, services, members.
pub fn digest(inst: &Instance) -> String {
    let hash = Sha256::digest(canonical(inst).as_bytes());
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The digested fields, written out field by field so that no library's or
/// type's `Debug` output can change a digest between two versions (a
/// different digest reads as `config-differs` and blocks takeovers during a
/// rolling upgrade). The text is the one earlier versions hashed (a tuple's
/// `Debug`), so members running them agree with this one too.
fn canonical(inst: &Instance) -> String {
    fn list<T>(items: &[T], item: impl Fn(&T) -> String) -> String {
        let items: Vec<String> = items.iter().map(item).collect();
        format!("[{}]", items.join(", "))
    }
    fn option<T>(v: Option<T>, some: impl Fn(T) -> String) -> String {
        v.map_or_else(|| "None".to_string(), |v| format!("Some({})", some(v)))
    }
    let routes = list(&inst.routes, |r| {
        format!(
            "Route {{ to: {}, via: {}, replaces_default: {} }}",
            r.to, r.via, r.replaces_default
        )
    });
    format!(
        "({}, {}, {}, {}, {}, {})",
        inst.address,
        option(inst.vlan, |v| v.to_string()),
        option(inst.mac, |m| list(&m, u8::to_string)),
        routes,
        list(&inst.services, u16::to_string),
        list(&inst.members, |m| format!("\"{}\"", m.escape_debug())),
    )
}

/// Whether `me` should claim the unowned `instance` now: it can host it,
/// no live member before it in `members` can, and every live member that
/// knows the instance defines it alike. Err: why not (for status).
pub fn claim_ok(
    me: &MemberId,
    instance: &InstanceName,
    members: &[MemberId],
    my_digest: &str,
    hostable_here: bool,
    live: &BTreeMap<MemberId, MemberRecord>,
) -> Result<(), Reason> {
    if !members.iter().any(|m| m == me) || !hostable_here {
        return Err(Reason::NotClaimed);
    }
    for (id, rec) in live.iter().filter(|(id, r)| *id != me && !r.leaving) {
        if let Some(d) = rec.digests.get(instance)
            && d != my_digest
        {
            return Err(Reason::ConfigDiffers { member: id.clone() });
        }
    }
    for m in members.iter().take_while(|m| *m != me) {
        if live
            .get(m)
            .is_some_and(|r| !r.leaving && r.hostable.contains(instance))
        {
            return Err(Reason::NotClaimed);
        }
    }
    Ok(())
}

/// What this member knows of an unowned instance when it decides whether
/// to claim it, besides the live members' records.
pub struct ClaimFacts<'a> {
    pub me: &'a MemberId,
    pub instance: &'a InstanceName,
    /// The instance's members, in order of preference.
    pub members: &'a [MemberId],
    pub my_digest: &'a str,
    /// One of its ports here has its link up.
    pub hostable_here: bool,
    /// Released to this member: a fresh handover names it, or it saw the
    /// owner key go with a release to it.
    pub released_to_us: bool,
    /// The member that held it last and its digest, since the owner key
    /// vanished.
    pub last_owner: Option<(&'a MemberId, &'a str)>,
    /// A takeover's wait (the old owner's deadline, or the start's) runs.
    pub waiting: bool,
    /// A fresh handover names another taker.
    pub handed_to_other: bool,
}

/// Whether to claim the unowned instance now: every verdict in order. A
/// last owner that defined it otherwise blocks even a release (the taker
/// would serve another definition); a release to us is taken at once (the
/// releaser withdrew and fenced first); a takeover waits out the old
/// owner's deadline, and a handover to another is its taker's; otherwise
/// [`claim_ok`].
pub fn claim_verdict(
    f: &ClaimFacts,
    live: &BTreeMap<MemberId, MemberRecord>,
) -> Result<(), Reason> {
    if let Some((member, digest)) = f.last_owner
        && digest != f.my_digest
    {
        return Err(Reason::ConfigDiffers {
            member: member.clone(),
        });
    }
    if f.released_to_us {
        return Ok(());
    }
    if f.waiting || f.handed_to_other {
        return Err(Reason::NotClaimed);
    }
    claim_ok(
        f.me,
        f.instance,
        f.members,
        f.my_digest,
        f.hostable_here,
        live,
    )
}

/// Who takes `instance` when no port of this member can serve it: the
/// first of its `members`, other than `me`, that is alive, not leaving and
/// can host it (one of its ports is up, as its record says). None: no
/// member is better off, and it stays.
pub fn handover_target<'a>(
    me: &MemberId,
    instance: &InstanceName,
    members: &'a [MemberId],
    live: &[MemberStatus],
) -> Option<&'a MemberId> {
    first_host(members.iter().filter(|m| *m != me), instance, live)
}

/// Where `instance` fails back to (`failback = "auto"`): the first of its
/// `members` before `me` that is alive, not leaving and can host it. None:
/// `me` is the one it prefers most of those that can.
pub fn failback_target<'a>(
    me: &MemberId,
    instance: &InstanceName,
    members: &'a [MemberId],
    live: &[MemberStatus],
) -> Option<&'a MemberId> {
    first_host(members.iter().take_while(|m| *m != me), instance, live)
}

/// The first of `candidates` that is alive, not leaving, and whose record
/// says it can host `instance`.
fn first_host<'a>(
    mut candidates: impl Iterator<Item = &'a MemberId>,
    instance: &InstanceName,
    live: &[MemberStatus],
) -> Option<&'a MemberId> {
    candidates.find(|m| {
        live.iter()
            .any(|s| s.id == **m && s.alive && !s.leaving && s.hostable.contains(instance))
    })
}

/// The engine's view: what `me` holds, and why not the rest. An owner
/// record of `me` under another lease than `lease` is stale (a lease lost,
/// a revoke whose deletes the watch has not brought yet): not held.
pub fn view(
    me: &MemberId,
    lease: Option<i64>,
    instances: impl Iterator<Item = InstanceName>,
    owners: &BTreeMap<InstanceName, OwnerRecord>,
    fenced: Option<FenceCause>,
    why_not: &BTreeMap<InstanceName, Reason>,
) -> ClusterView {
    let mut v = ClusterView::default();
    for name in instances {
        let reason = match (fenced, owners.get(&name)) {
            (Some(cause), _) => Reason::Fenced { cause },
            (None, Some(o)) if o.member == *me && Some(o.lease) == lease => {
                v.held.insert(name);
                continue;
            }
            (None, Some(o)) if o.member == *me => Reason::NotClaimed,
            (None, Some(o)) => Reason::ClaimedByMember {
                member: o.member.clone(),
            },
            (None, None) => why_not.get(&name).cloned().unwrap_or(Reason::NotClaimed),
        };
        v.withheld.insert(name, reason);
    }
    v
}

/// How long a taker waits after an owner vanished with its member: D and
/// a guard of one heartbeat. Without the fast path the lease's expiry
/// already came after the owner's deadline (a lease revoked by hand is
/// then not waited for: hand over with `baton move --member` instead).
pub fn takeover_wait(c: &Cluster) -> Duration {
    if c.owner_deadline.is_zero() {
        // The lease expired at etcd at least TTL after the owner's last
        // answered keepalive; the owner dropped out `margin` before that.
        c.heartbeat
    } else {
        c.owner_deadline + c.heartbeat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest of one instance with every digested field set, as the
    /// version before this encoding computed it (`format!("{:?}")` of the
    /// fields): a member of that version and this one agree.
    #[test]
    fn the_digest_is_the_one_earlier_versions_computed() {
        let inst = Instance {
            address: "192.0.2.100/24".parse().expect("net"),
            ports: vec!["ge0".into(), "ge1".into()],
            vlan: Some(100),
            mac: Some([0x02, 0, 0x5e, 0, 1, 0xfe]),
            routes: vec![baton_config::model::Route {
                to: "198.51.100.0/24".parse().expect("net"),
                via: "192.0.2.1".parse().expect("addr"),
                replaces_default: false,
            }],
            services: vec![3260, 860],
            iscsi_ports: vec![3260],
            iscsi_digests: Default::default(),
            cpus: vec![],
            failback: Default::default(),
            revert_backoff: None,
            members: vec!["gw0".into(), "gw-1".into()],
            checks: None,
        };
        assert_eq!(
            canonical(&inst),
            "(192.0.2.100/24, Some(100), Some([2, 0, 94, 0, 1, 254]), \
             [Route { to: 198.51.100.0/24, via: 192.0.2.1, replaces_default: false }], \
             [3260, 860], [\"gw0\", \"gw-1\"])"
        );
        let legacy = format!(
            "{:?}",
            (
                &inst.address,
                &inst.vlan,
                &inst.mac,
                &inst.routes,
                &inst.services,
                &inst.members
            )
        );
        assert_eq!(
            canonical(&inst),
            legacy,
            "today's Debug output still agrees"
        );
        let v6 = Instance {
            address: "2001:db8::64/64".parse().expect("net"),
            vlan: None,
            mac: None,
            routes: vec![],
            ..inst.clone()
        };
        assert_eq!(
            canonical(&v6),
            "(2001:db8::64/64, None, None, [], [3260, 860], [\"gw0\", \"gw-1\"])"
        );
    }

    fn m(id: &str) -> MemberId {
        id.into()
    }

    fn i(name: &str) -> InstanceName {
        name.into()
    }

    static A: std::sync::LazyLock<InstanceName> = std::sync::LazyLock::new(|| i("a"));

    fn rec(id: &str, hostable: &[&str], digests: &[(&str, &str)]) -> (MemberId, MemberRecord) {
        (
            m(id),
            MemberRecord {
                member: id.into(),
                lease: 1,
                hostable: hostable.iter().map(|s| i(s)).collect(),
                digests: digests.iter().map(|(a, b)| (i(a), b.to_string())).collect(),
                ..MemberRecord::default()
            },
        )
    }

    fn order() -> Vec<MemberId> {
        vec!["gw1".into(), "gw2".into()]
    }

    /// As gw2 (the second of `members`) of instance "a".
    fn facts<'a>(members: &'a [MemberId]) -> ClaimFacts<'a> {
        ClaimFacts {
            me: &members[1],
            instance: &A,
            members,
            my_digest: "d",
            hostable_here: true,
            released_to_us: false,
            last_owner: None,
            waiting: false,
            handed_to_other: false,
        }
    }

    #[test]
    fn claim_verdicts_come_in_order() {
        let members = order();
        // gw1 comes first and can host it: not gw2's.
        let live: BTreeMap<_, _> = [rec("gw1", &["a"], &[("a", "d")])].into();
        assert_eq!(
            claim_verdict(&facts(&members), &live),
            Err(Reason::NotClaimed)
        );
        // Released to gw2: taken at once, whoever comes first.
        let released = ClaimFacts {
            released_to_us: true,
            ..facts(&members)
        };
        assert_eq!(claim_verdict(&released, &live), Ok(()));
        // ... but not from an owner that defined it otherwise.
        let differs = ClaimFacts {
            last_owner: Some((&members[0], "other")),
            ..released
        };
        assert_eq!(
            claim_verdict(&differs, &live),
            Err(Reason::ConfigDiffers {
                member: "gw1".into()
            })
        );
        // With nobody before it: a takeover's wait and another's handover hold it back.
        let alone = BTreeMap::new();
        assert_eq!(claim_verdict(&facts(&members), &alone), Ok(()));
        for held_back in [
            ClaimFacts {
                waiting: true,
                ..facts(&members)
            },
            ClaimFacts {
                handed_to_other: true,
                ..facts(&members)
            },
        ] {
            assert_eq!(claim_verdict(&held_back, &alone), Err(Reason::NotClaimed));
        }
    }

    #[test]
    fn the_first_live_member_that_can_host_claims() {
        let live: BTreeMap<_, _> = [
            rec("gw1", &["a"], &[("a", "d")]),
            rec("gw2", &["a"], &[("a", "d")]),
        ]
        .into();
        assert_eq!(
            claim_ok(&m("gw1"), &i("a"), &order(), "d", true, &live),
            Ok(())
        );
        assert_eq!(
            claim_ok(&m("gw2"), &i("a"), &order(), "d", true, &live),
            Err(Reason::NotClaimed)
        );
    }

    #[test]
    fn a_member_before_that_cannot_host_or_is_gone_or_leaving_does_not_block() {
        let cannot: BTreeMap<_, _> = [rec("gw1", &[], &[]), rec("gw2", &["a"], &[])].into();
        assert_eq!(
            claim_ok(&m("gw2"), &i("a"), &order(), "d", true, &cannot),
            Ok(())
        );
        let gone: BTreeMap<_, _> = [rec("gw2", &["a"], &[])].into();
        assert_eq!(
            claim_ok(&m("gw2"), &i("a"), &order(), "d", true, &gone),
            Ok(())
        );
        let mut leaving: BTreeMap<_, _> = [rec("gw1", &["a"], &[]), rec("gw2", &["a"], &[])].into();
        if let Some(r) = leaving.get_mut("gw1") {
            r.leaving = true;
        }
        assert_eq!(
            claim_ok(&m("gw2"), &i("a"), &order(), "d", true, &leaving),
            Ok(())
        );
    }

    #[test]
    fn a_member_not_listed_or_without_a_port_never_claims() {
        let live: BTreeMap<_, _> = [rec("gw3", &["a"], &[])].into();
        assert_eq!(
            claim_ok(&m("gw3"), &i("a"), &order(), "d", true, &live),
            Err(Reason::NotClaimed)
        );
        assert_eq!(
            claim_ok(&m("gw2"), &i("a"), &order(), "d", false, &BTreeMap::new()),
            Err(Reason::NotClaimed)
        );
    }

    #[test]
    fn a_live_member_with_another_definition_blocks_only_that_instance() {
        let live: BTreeMap<_, _> = [rec("gw1", &[], &[("a", "old"), ("b", "same")])].into();
        assert_eq!(
            claim_ok(&m("gw2"), &i("a"), &order(), "new", true, &live),
            Err(Reason::ConfigDiffers {
                member: "gw1".into()
            })
        );
        assert_eq!(
            claim_ok(&m("gw2"), &i("b"), &order(), "same", true, &live),
            Ok(())
        );
    }

    #[test]
    fn an_instance_goes_to_the_first_member_that_can_host_it_and_fails_back_only_forward() {
        let status = |id: &str, alive: bool, leaving: bool, hostable: &[&str]| MemberStatus {
            id: m(id),
            alive,
            silent_ms: None,
            digests_match: true,
            held: vec![],
            hostable: hostable.iter().map(|s| i(s)).collect(),
            leaving,
        };
        let members = [m("gw1"), m("gw2"), m("gw3")];
        let me = &members[0];
        let a = i("a");
        // gw2 cannot host it (its ports are down too): gw3 takes it.
        let live = [
            status("gw2", true, false, &[]),
            status("gw3", true, false, &["a"]),
        ];
        assert_eq!(handover_target(me, &a, &members, &live), Some(&members[2]));
        // gw2 first when it can; never this member itself.
        let live = [
            status("gw1", true, false, &["a"]),
            status("gw2", true, false, &["a"]),
            status("gw3", true, false, &["a"]),
        ];
        assert_eq!(handover_target(me, &a, &members, &live), Some(&members[1]));
        // Silent, leaving, or not a member of the list: nobody is better off.
        let live = [
            status("gw2", false, false, &["a"]),
            status("gw3", true, true, &["a"]),
            status("gw4", true, false, &["a"]),
        ];
        assert_eq!(handover_target(me, &a, &members, &live), None);
        // Failback: only to a member before this one, the first that can.
        let live = [
            status("gw1", true, false, &["a"]),
            status("gw2", true, false, &["a"]),
        ];
        assert_eq!(
            failback_target(&members[2], &a, &members, &live),
            Some(&members[0])
        );
        assert_eq!(
            failback_target(&members[1], &a, &members, &live),
            Some(&members[0])
        );
        assert_eq!(failback_target(&members[0], &a, &members, &live), None);
        let live = [
            status("gw1", true, false, &[]),
            status("gw3", true, false, &["a"]),
        ];
        assert_eq!(failback_target(&members[2], &a, &members, &live), None);
    }

    #[test]
    fn the_view_holds_only_own_keys_and_nothing_when_fenced() {
        let owners: BTreeMap<_, _> = [
            (
                i("a"),
                OwnerRecord {
                    member: "gw1".into(),
                    lease: 1,
                    digest: "d".into(),
                },
            ),
            (
                i("b"),
                OwnerRecord {
                    member: "gw2".into(),
                    lease: 2,
                    digest: "d".into(),
                },
            ),
        ]
        .into();
        let names = || ["a", "b", "c"].iter().map(|s| i(s));
        let v = view(&m("gw1"), Some(1), names(), &owners, None, &BTreeMap::new());
        assert!(v.held.contains("a"));
        // Our record under a lease we no longer have (revoked while we were
        // cut off; the watch has not brought the delete yet): not held.
        let stale = view(&m("gw1"), Some(7), names(), &owners, None, &BTreeMap::new());
        assert!(stale.held.is_empty());
        assert_eq!(stale.refusal("a"), Some(Reason::NotClaimed));
        assert_eq!(
            v.refusal("b"),
            Some(Reason::ClaimedByMember {
                member: "gw2".into()
            })
        );
        assert_eq!(v.refusal("c"), Some(Reason::NotClaimed));
        let f = view(
            &m("gw1"),
            Some(1),
            names(),
            &owners,
            Some(FenceCause::NoQuorum),
            &BTreeMap::new(),
        );
        assert!(f.held.is_empty());
        assert_eq!(
            f.refusal("a"),
            Some(Reason::Fenced {
                cause: FenceCause::NoQuorum
            })
        );
    }

    #[test]
    fn the_digest_changes_with_the_definition_not_with_local_tuning() {
        let text = |extra: &str| {
            format!(
                "[networks.n]\nsubnets = [\"192.0.2.0/24\"]\n[ports.ge0]\nnetworks = [\"n\"]\n[ports.ge1]\nnetworks = [\"n\"]\n[instances.a]\nports = [\"ge0\", \"ge1\"]\n{extra}"
            )
        };
        let d = |extra: &str| {
            let c = baton_config::parse("t.toml", &text(extra), &baton_config::Host::with_cpus(4))
                .unwrap_or_else(|e| panic!("{e}"));
            digest(&c.instances["a"])
        };
        let base = d("address = \"192.0.2.100/24\"\n");
        assert_eq!(base, d("address = \"192.0.2.100/24\"\ncpus = [1]\n"));
        assert_ne!(base, d("address = \"192.0.2.101/24\"\n"));
    }
}
