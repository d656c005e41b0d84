//! Exchanges of an established IKE SA between two endpoints over a virtual link: Child
//! SA rekeys, creation and deletion, IKE SA rekeys, IKE_FOLLOWUP_KE, crossings of
//! rekeys with each other and with Deletes, and responses that do not answer the
//! request.

use ikev2::consts::{exchange, notify};
use ikev2::endpoint::{Event, FailReason, Start};
use ikev2::testing::{Pair, SEC, established_keys, fail_reason, key_set, reseal};

fn rekeyed_children(p: &Pair, i: usize) -> Vec<(u32, ikev2::endpoint::ChildSa)> {
    p.events[i]
        .iter()
        .filter_map(|e| match &e.1 {
            Event::ChildSaRekeyed {
                old_spi_in, child, ..
            } => Some((*old_spi_in, child.clone())),
            _ => None,
        })
        .collect()
}

fn deleted(p: &Pair, i: usize) -> Vec<u32> {
    p.events[i]
        .iter()
        .filter_map(|e| match &e.1 {
            Event::ChildSaDeleted { spi_in, .. } => Some(*spi_in),
            _ => None,
        })
        .collect()
}

#[test]
fn child_sas_rekey_with_and_without_pfs_from_either_side() {
    for (esp, rekeyer) in [
        ("aes256gcm16", 0),
        ("aes256gcm16-x25519", 0),
        ("aes128gcm16-mlkem768", 1),
    ] {
        let mut p = Pair::new(21, |_, peer| *peer = peer.clone().with_esp(&[esp]).unwrap());
        p.handshake(10 * SEC);
        let first = [p.child(0).unwrap().clone(), p.child(1).unwrap().clone()];
        let sa = match p.events[rekeyer]
            .iter()
            .find(|e| matches!(e.1, Event::IkeSaEstablished { .. }))
            .unwrap()
            .1
        {
            Event::IkeSaEstablished { sa, .. } => sa,
            _ => unreachable!(),
        };
        p.eps[rekeyer].rekey_child(p.now, sa, first[rekeyer].spi_in);
        while p.step() {}
        let (ra, rb) = (rekeyed_children(&p, 0), rekeyed_children(&p, 1));
        assert_eq!((ra.len(), rb.len()), (1, 1), "{esp}: {:?}", p.events);
        let (a, b) = (&ra[0].1, &rb[0].1);
        // Both sides hold the same new keys, with new SPIs, and different keys than before.
        assert_eq!(
            (&a.encr_out, &a.encr_in, a.spi_out, a.spi_in),
            (&b.encr_in, &b.encr_out, b.spi_in, b.spi_out),
            "{esp}"
        );
        assert_ne!(a.encr_out, first[0].encr_out);
        assert_ne!(a.spi_in, first[0].spi_in);
        assert_eq!(
            (ra[0].0, rb[0].0),
            (first[0].spi_in, first[1].spi_in),
            "the old SA each side names"
        );
        assert_eq!(*a.proposal, esp.to_string());
        // The old pair is deleted on both sides.
        assert_eq!(
            (deleted(&p, 0), deleted(&p, 1)),
            (vec![first[0].spi_in], vec![first[1].spi_in]),
            "{esp}"
        );
    }
}

#[test]
fn a_child_sa_deleted_at_its_hard_lifetime_goes_on_both_sides_and_the_ike_sa_stays() {
    let mut p = Pair::new(22, |_, _| {});
    p.handshake(10 * SEC);
    let first = p.child(1).unwrap().clone();
    let Some(Event::IkeSaEstablished { sa, .. }) = p.established(1).cloned() else {
        panic!()
    };
    assert_eq!(
        p.eps[1].delete_child(p.now, sa, first.spi_in),
        Start::Started
    );
    // One Delete at a time: a second request waits for the first.
    assert_eq!(p.eps[1].delete_child(p.now, sa, first.spi_in), Start::Busy);
    while p.step() {}
    assert_eq!(deleted(&p, 1), vec![first.spi_in]);
    assert_eq!(deleted(&p, 0), vec![first.spi_out]);
    assert!(live_children(&p, 0).is_empty() && live_children(&p, 1).is_empty());
    let Some(Event::IkeSaEstablished { sa: sa0, .. }) = p.established(0).cloned() else {
        panic!()
    };
    assert!(p.eps[0].is_established(sa0) && p.eps[1].is_established(sa));
    assert_eq!(p.eps[1].delete_child(p.now, sa, first.spi_in), Start::Gone);
}

#[test]
fn an_additional_child_sa_comes_up_with_create_child_sa_with_and_without_pfs() {
    for (esp, creator) in [("aes256gcm16", 0), ("aes128gcm16-mlkem768", 1)] {
        let mut p = Pair::new(23, |_, peer| *peer = peer.clone().with_esp(&[esp]).unwrap());
        p.handshake(10 * SEC);
        let Some(Event::IkeSaEstablished { sa, .. }) = p.established(creator).cloned() else {
            panic!()
        };
        assert_eq!(p.eps[creator].create_child(p.now, sa), Start::Started);
        while p.step() {}
        let (a, b) = (live_children(&p, 0), live_children(&p, 1));
        assert_eq!((a.len(), b.len()), (2, 2), "{esp}: {:?}", p.events[creator]);
        // The new pair matches across the sides, with its own SPIs and keys.
        let (na, nb) = (&a[1], &b[1]);
        assert_eq!(
            (na.spi_out, &na.encr_out),
            (nb.spi_in, &nb.encr_in),
            "{esp}"
        );
        assert_eq!(
            (na.spi_in, &na.encr_in),
            (nb.spi_out, &nb.encr_out),
            "{esp}"
        );
        assert_ne!(na.encr_out, a[0].encr_out);
        assert_eq!(
            (na.local_ts.clone(), na.remote_ts.clone()),
            (nb.remote_ts.clone(), nb.local_ts.clone())
        );
        // No Delete: both pairs stay.
        assert!(deleted(&p, 0).is_empty() && deleted(&p, 1).is_empty());
    }
}

/// Child SAs endpoint `i` holds at the end: made (IKE_AUTH or rekey) and not deleted.
fn live_children(p: &Pair, i: usize) -> Vec<ikev2::endpoint::ChildSa> {
    let mut live = Vec::new();
    for (_, e) in &p.events[i] {
        match e {
            Event::ChildSaReady { child, .. } | Event::ChildSaRekeyed { child, .. } => {
                live.push(child.clone())
            }
            Event::ChildSaDeleted { spi_in, .. } => live.retain(|c| c.spi_in != *spi_in),
            _ => {}
        }
    }
    live
}

#[test]
fn simultaneous_child_rekeys_leave_the_same_single_pair_on_both_sides() {
    // Which exchange wins depends on the nonces, so on the seed: see both outcomes.
    let mut winners = std::collections::BTreeSet::new();
    for seed in 30..40 {
        let mut p = Pair::new(seed, |_, peer| {
            *peer = peer.clone().with_esp(&["aes256gcm16-x25519"]).unwrap()
        });
        p.handshake(10 * SEC);
        let first = [p.child(0).unwrap().clone(), p.child(1).unwrap().clone()];
        for (i, child) in first.iter().enumerate() {
            let Some(Event::IkeSaEstablished { sa, .. }) = p.established(i).cloned() else {
                panic!()
            };
            p.eps[i].rekey_child(p.now, sa, child.spi_in);
        }
        while p.step() {}
        // Both exchanges completed on both sides, then two Deletes: the old pair and
        // the loser's new one.
        let (ra, rb) = (rekeyed_children(&p, 0), rekeyed_children(&p, 1));
        assert_eq!((ra.len(), rb.len()), (2, 2), "seed {seed}: {:?}", p.events);
        assert_eq!((deleted(&p, 0).len(), deleted(&p, 1).len()), (2, 2));
        let (a, b) = (live_children(&p, 0), live_children(&p, 1));
        assert_eq!((a.len(), b.len()), (1, 1), "seed {seed}");
        let (a, b) = (&a[0], &b[0]);
        assert_eq!(
            (&a.encr_out, &a.encr_in, a.spi_out, a.spi_in),
            (&b.encr_in, &b.encr_out, b.spi_in, b.spi_out),
            "seed {seed}"
        );
        assert_ne!(a.spi_in, first[0].spi_in);
        // Side 0 answered side 1's request before its own response came back: its
        // first rekeyed event is side 1's SA, its second its own.
        winners.insert(ra.iter().position(|r| r.1.spi_in == a.spi_in).unwrap());
    }
    assert_eq!(winners.len(), 2, "one side won every time");
}

#[test]
fn simultaneous_ike_sa_rekeys_leave_the_same_single_successor_on_both_sides() {
    // Plain and hybrid (each crossing rekey then runs its own IKE_FOLLOWUP_KE); which
    // exchange wins depends on the nonces, so on the seed: see both outcomes.
    for ike in [
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16-prfsha256-x25519-ke1_mlkem768",
    ] {
        let mut winners = std::collections::BTreeSet::new();
        for seed in 50..60 {
            let mut p = Pair::new(seed, |_, peer| {
                *peer = peer.clone().with_ike(&[ike]).unwrap()
            });
            p.handshake(10 * SEC);
            let first = [p.child(0).unwrap().clone(), p.child(1).unwrap().clone()];
            for i in 0..2 {
                let Some(Event::IkeSaEstablished { sa, .. }) = p.established(i).cloned() else {
                    panic!()
                };
                assert_eq!(p.eps[i].rekey_ike(p.now, sa), Start::Started);
            }
            while p.step() {}
            // One successor each, the same on both sides, holding the Child SA.
            assert_eq!(
                (p.eps[0].sa_count(), p.eps[1].sa_count()),
                (1, 1),
                "{ike} seed {seed}"
            );
            let rekeyed = |i: usize| {
                let r: Vec<_> = p.events[i]
                    .iter()
                    .filter_map(|e| match &e.1 {
                        Event::IkeSaRekeyed {
                            new, keys, keylog, ..
                        } => Some((*new, *keys, (keylog.spi_i, keylog.spi_r))),
                        _ => None,
                    })
                    .collect();
                assert_eq!(r.len(), 1, "{ike} seed {seed} side {i}: {:?}", p.events[i]);
                r[0]
            };
            let (a, b) = (rekeyed(0), rekeyed(1));
            assert_eq!((&a.1, a.2), (&b.1, b.2), "{ike} seed {seed}");
            // Both rekeys ran to the end (none refused): each side deleted the old SA
            // and the losing successor.
            for i in 0..2 {
                let ev = &p.events[i];
                assert!(
                    !ev.iter()
                        .any(|e| matches!(e.1, Event::IkeSaRekeyFailed { .. }))
                );
                let deleted = ev
                    .iter()
                    .filter(|e| matches!(e.1, Event::IkeSaDeleted { .. }))
                    .count();
                assert_eq!(deleted, 2, "{ike} seed {seed} side {i}: {ev:?}");
            }
            // Who initiated the surviving exchange: its initiator's SPI comes first.
            winners.insert(a.2.0 == a.0);
            // The Child SA lives on in the successor: rekeying it there works.
            p.eps[0].rekey_child(p.now, a.0, first[0].spi_in);
            while p.step() {}
            let (ra, rb) = (rekeyed_children(&p, 0), rekeyed_children(&p, 1));
            assert_eq!((ra.len(), rb.len()), (1, 1), "{ike} seed {seed}");
            assert_eq!(ra[0].1.encr_out, rb[0].1.encr_in);
        }
        assert_eq!(winners.len(), 2, "{ike}: one side won every time");
    }
}

#[test]
fn ike_sas_rekey_from_either_side_and_keep_their_child_sas() {
    for rekeyer in [0, 1] {
        let mut p = Pair::new(40 + rekeyer as u64, |_, peer| {
            *peer = peer
                .clone()
                .with_ike(&["aes256gcm16-prfsha256-x25519"])
                .unwrap()
                .with_esp(&["aes256gcm16-x25519"])
                .unwrap()
        });
        p.handshake(10 * SEC);
        let sa_of = |p: &Pair, i: usize| match p.established(i) {
            Some(Event::IkeSaEstablished { sa, keys, .. }) => (*sa, *keys),
            _ => panic!(),
        };
        let (old, old_keys) = sa_of(&p, rekeyer);
        p.eps[rekeyer].rekey_ike(p.now, old);
        while p.step() {}
        let rekeyed = |p: &Pair, i: usize| {
            p.events[i]
                .iter()
                .find_map(|e| match &e.1 {
                    Event::IkeSaRekeyed { old, new, keys, .. } => Some((*old, *new, *keys)),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("side {i} not rekeyed: {:?}", p.events[i]))
        };
        let (a, b) = (rekeyed(&p, 0), rekeyed(&p, 1));
        assert_eq!(a.2, b.2, "both sides derive the same new keys");
        assert_ne!(a.2, old_keys);
        assert_ne!((a.0, b.0), (a.1, b.1), "new SPIs");
        // The old IKE SA is gone on both sides; one SA each remains.
        for (i, (old, ..)) in [(0, &a), (1, &b)] {
            assert!(
                p.events[i]
                    .iter()
                    .any(|e| matches!(e.1, Event::IkeSaDeleted { sa, .. } if sa == *old)),
                "side {i}"
            );
        }
        assert_eq!((p.eps[0].sa_count(), p.eps[1].sa_count()), (1, 1));
        // The Child SA moved over: rekeying it runs on the new IKE SA (message IDs
        // from 0, keys from the new SK_d) and both sides agree.
        let first = p.child(0).unwrap().clone();
        p.eps[0].rekey_child(p.now, a.1, first.spi_in);
        while p.step() {}
        let (ra, rb) = (rekeyed_children(&p, 0), rekeyed_children(&p, 1));
        assert_eq!((ra.len(), rb.len()), (1, 1), "{:?}", p.events[0]);
        assert_eq!(
            (&ra[0].1.encr_out, ra[0].1.spi_out),
            (&rb[0].1.encr_in, rb[0].1.spi_in)
        );
        // And the new IKE SA deletes cleanly.
        p.eps[1].delete(p.now, b.1);
        while p.step() {}
        assert_eq!((p.eps[0].sa_count(), p.eps[1].sa_count()), (0, 0));
    }
}

#[test]
fn hybrid_rekeys_run_their_additional_key_exchanges_in_ike_followup_ke() {
    // IKE SA: X25519 in CREATE_CHILD_SA, ML-KEM-768 in one IKE_FOLLOWUP_KE; Child SA:
    // X25519 plus two additional key exchanges, two IKE_FOLLOWUP_KEs. Either side.
    for rekeyer in [0, 1] {
        let mut p = Pair::new(50 + rekeyer as u64, |_, peer| {
            *peer = peer
                .clone()
                .with_ike(&["aes256gcm16-prfsha256-x25519-ke1_mlkem768"])
                .unwrap()
                .with_esp(&["aes256gcm16-x25519-ke1_mlkem512-ke2_mlkem768"])
                .unwrap()
        });
        p.handshake(10 * SEC);
        let Some(Event::IkeSaEstablished { sa, .. }) = p.established(rekeyer).cloned() else {
            panic!()
        };
        assert_eq!(p.eps[rekeyer].rekey_ike(p.now, sa), Start::Started);
        while p.step() {}
        let rekeyed = |p: &Pair, i: usize| {
            p.events[i]
                .iter()
                .find_map(|e| match &e.1 {
                    Event::IkeSaRekeyed { new, keys, .. } => Some((*new, *keys)),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("side {i} not rekeyed: {:?}", p.events[i]))
        };
        let (a, b) = (rekeyed(&p, 0), rekeyed(&p, 1));
        assert_eq!(a.1, b.1, "both sides derive the same IKE keys");
        let followups = |p: &Pair, i: usize| {
            p.exchanges(i)
                .iter()
                .filter(|e| e.0 == exchange::IKE_FOLLOWUP_KE)
                .count()
        };
        assert_eq!(followups(&p, rekeyer), 1);
        // The Child SA, rekeyed over the new IKE SA.
        let new_sa = if rekeyer == 0 { a.0 } else { b.0 };
        let child = p.child(rekeyer).unwrap().clone();
        assert_eq!(
            p.eps[rekeyer].rekey_child(p.now, new_sa, child.spi_in),
            Start::Started
        );
        while p.step() {}
        assert_eq!(followups(&p, rekeyer), 3);
        let (ra, rb) = (rekeyed_children(&p, 0), rekeyed_children(&p, 1));
        assert_eq!((ra.len(), rb.len()), (1, 1), "{:?}", p.events[rekeyer]);
        let (ca, cb) = (&ra[0].1, &rb[0].1);
        assert_eq!(
            (&ca.encr_out, &ca.encr_in, ca.spi_out),
            (&cb.encr_in, &cb.encr_out, cb.spi_in)
        );
        assert_eq!(
            &*ca.proposal,
            "aes256gcm16-x25519-ke1_mlkem512-ke2_mlkem768"
        );
        assert_eq!((p.eps[0].sa_count(), p.eps[1].sa_count()), (1, 1));
    }
}

#[test]
fn a_followup_under_an_unknown_link_is_answered_state_not_found() {
    use ikev2::message::{Message, Payload};
    // A hybrid Child SA rekey: X25519 in CREATE_CHILD_SA, ML-KEM-768 in IKE_FOLLOWUP_KE,
    // unfragmented so that one datagram carries the whole request.
    let mut p = Pair::new(24, |_, peer| {
        *peer = peer
            .clone()
            .with_esp(&["aes256gcm16-x25519-ke1_mlkem768"])
            .unwrap();
        peer.fragmentation = false;
    });
    for l in &mut p.links {
        l.mtu = 9000;
    }
    p.handshake(10 * SEC);
    // The initiator's sending key of the IKE SA (its last key set).
    let entry = key_set(&p, 0, true);
    // On the way, the IKE_FOLLOWUP_KE request's link gets one bit flipped, and the
    // message is sealed again with the sender's key, so only the link is wrong.
    let tampered = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = tampered.clone();
    p.links[0].tamper = Some(Box::new(move |_, d| {
        let Ok(msg) = Message::decode(d) else { return };
        if msg.header.exchange != exchange::IKE_FOLLOWUP_KE || msg.header.is_response() {
            return;
        }
        if !reseal(d, entry.aead, &entry.sk_ei, |_, payloads| {
            for pl in payloads.iter_mut() {
                if let Payload::Notify(n) = pl
                    && n.kind == notify::ADDITIONAL_KEY_EXCHANGE
                {
                    n.data[0] ^= 1;
                }
            }
        }) {
            return;
        }
        seen.set(seen.get() + 1);
    }));
    let Some(Event::IkeSaEstablished { sa, .. }) = p.established(0).cloned() else {
        panic!()
    };
    let child = p.child(0).unwrap().clone();
    assert_eq!(
        p.eps[0].rekey_child(p.now, sa, child.spi_in),
        Start::Started
    );
    while p.step() {}
    assert_eq!(tampered.get(), 1, "the request was not seen");
    // The responder knows no pending exchange under that link: STATE_NOT_FOUND, and the
    // rekey fails at the initiator; the old Child SA stays on both sides.
    assert!(
        p.events[0].iter().any(|e| matches!(
            e.1,
            Event::ChildSaFailed { notify: n, .. } if n == notify::STATE_NOT_FOUND
        )),
        "{:?}",
        p.events[0]
    );
    assert!(rekeyed_children(&p, 0).is_empty());
    assert_eq!(live_children(&p, 0).len(), 1);
}

#[test]
fn a_child_sa_already_rekeyed_by_the_peer_is_not_rekeyed_again() {
    for esp in ["aes256gcm16-x25519", "aes256gcm16-x25519-ke1_mlkem768"] {
        let mut p = Pair::new(25, |_, peer| *peer = peer.clone().with_esp(&[esp]).unwrap());
        p.handshake(10 * SEC);
        let first = [p.child(0).unwrap().clone(), p.child(1).unwrap().clone()];
        let sa = |p: &Pair, i: usize| match p.established(i) {
            Some(Event::IkeSaEstablished { sa, .. }) => *sa,
            _ => panic!(),
        };
        assert_eq!(
            p.eps[0].rekey_child(p.now, sa(&p, 0), first[0].spi_in),
            Start::Started
        );
        // Once the request has reached the responder, ask it to rekey the same pair at
        // every step until it holds the successor.
        let received = p.eps[1].stats().datagrams_received;
        let mut answers = Vec::new();
        while p.step() {
            if p.eps[1].stats().datagrams_received == received {
                continue;
            }
            let done = !rekeyed_children(&p, 1).is_empty();
            let s1 = sa(&p, 1);
            answers.push((done, p.eps[1].rekey_child(p.now, s1, first[1].spi_in)));
            if done {
                break;
            }
        }
        // Busy while the peer's IKE_FOLLOWUP_KE runs; never a second rekey once the
        // successor exists.
        assert_eq!(
            answers.last(),
            Some(&(true, Start::Gone)),
            "{esp}: {answers:?}"
        );
        assert!(
            answers.iter().all(|a| a.1 != Start::Started),
            "{esp}: {answers:?}"
        );
        if esp.contains("ke1_") {
            assert!(
                answers.iter().any(|a| a.1 == Start::Busy),
                "{esp}: {answers:?}"
            );
        }
        while p.step() {}
        assert_eq!(
            (live_children(&p, 0).len(), live_children(&p, 1).len()),
            (1, 1)
        );
    }
}

#[test]
fn a_rekey_crossing_the_peers_delete_leaves_both_sides_without_the_child_sa() {
    let mut p = Pair::new(26, |_, peer| {
        *peer = peer.clone().with_esp(&["aes256gcm16-x25519"]).unwrap()
    });
    p.handshake(10 * SEC);
    let first = [p.child(0).unwrap().clone(), p.child(1).unwrap().clone()];
    let sa = |p: &Pair, i: usize| match p.established(i) {
        Some(Event::IkeSaEstablished { sa, .. }) => *sa,
        _ => panic!(),
    };
    // At the same moment: side 0 rekeys the pair, side 1 deletes it (a hard lifetime).
    let (s0, s1) = (sa(&p, 0), sa(&p, 1));
    assert_eq!(
        p.eps[0].rekey_child(p.now, s0, first[0].spi_in),
        Start::Started
    );
    assert_eq!(
        p.eps[1].delete_child(p.now, s1, first[1].spi_in),
        Start::Started
    );
    while p.step() {}
    // The rekey is refused (the pair is being deleted), the Delete goes through: neither
    // side holds a Child SA, neither made a new one, and the IKE SA stays.
    assert!(
        p.events[0].iter().any(|e| matches!(
            e.1,
            Event::ChildSaFailed { notify: n, .. } if n == notify::TEMPORARY_FAILURE
        )),
        "{:?}",
        p.events[0]
    );
    assert!(rekeyed_children(&p, 0).is_empty() && rekeyed_children(&p, 1).is_empty());
    assert!(live_children(&p, 0).is_empty() && live_children(&p, 1).is_empty());
    assert!(p.eps[0].is_established(s0) && p.eps[1].is_established(s1));
    // A rekey of it now finds nothing to rekey.
    assert_eq!(
        p.eps[0].rekey_child(p.now, s0, first[0].spi_in),
        Start::Gone
    );
}

#[test]
fn a_response_claiming_another_exchange_is_dropped() {
    use ikev2::message::Message;
    let mut p = Pair::new(26, |_, peer| peer.fragmentation = false);
    p.handshake(10 * SEC);
    // The responder's sending key (its last key set).
    let entry = key_set(&p, 1, true);
    // Every CREATE_CHILD_SA response is sealed again with the responder's key under a
    // header that claims IKE_INTERMEDIATE: authentic, same message ID, wrong exchange.
    let tampered = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = tampered.clone();
    p.links[1].tamper = Some(Box::new(move |_, d| {
        let Ok(msg) = Message::decode(d) else { return };
        if msg.header.exchange != exchange::CREATE_CHILD_SA || !msg.header.is_response() {
            return;
        }
        if !reseal(d, entry.aead, &entry.sk_er, |header, _| {
            header.exchange = exchange::IKE_INTERMEDIATE
        }) {
            return;
        }
        seen.set(seen.get() + 1);
    }));
    let Some(Event::IkeSaEstablished { sa, .. }) = p.established(0).cloned() else {
        panic!()
    };
    let child = p.child(0).unwrap().clone();
    let dropped = p.eps[0].stats().dropped_unexpected;
    assert_eq!(
        p.eps[0].rekey_child(p.now, sa, child.spi_in),
        Start::Started
    );
    while p.step() {}
    // Each answer (the first and its replays) is dropped unopened: no IKE_INTERMEDIATE
    // handling, no rekey; the request times out as if unanswered.
    assert!(tampered.get() >= 2, "responses seen: {}", tampered.get());
    assert_eq!(
        p.eps[0].stats().dropped_unexpected - dropped,
        tampered.get() as u64
    );
    assert!(
        !p.events[0]
            .iter()
            .any(|e| matches!(e.1, Event::ChildSaRekeyed { .. }))
    );
    assert_eq!(
        fail_reason(&p, 0),
        &FailReason::RetransmitTimeout {
            exchange: exchange::CREATE_CHILD_SA
        }
    );
}

#[test]
fn a_create_child_sa_with_a_short_nonce_is_refused() {
    use ikev2::message::{Message, Payload};
    let mut p = Pair::new(38, |_, peer| {
        *peer = peer
            .clone()
            .with_ike(&["aes256gcm16-prfsha256-x25519"])
            .unwrap();
        peer.fragmentation = false;
    });
    p.handshake(10 * SEC);
    let entry = key_set(&p, 0, true);
    // The rekey request's nonce is cut to 4 octets (RFC 7296 2.10 asks for 16 to 256).
    p.links[0].tamper = Some(Box::new(move |_, d| {
        let Ok(msg) = Message::decode(d) else { return };
        if msg.header.exchange != exchange::CREATE_CHILD_SA || msg.header.is_response() {
            return;
        }
        reseal(d, entry.aead, &entry.sk_ei, |_, payloads| {
            for pl in payloads.iter_mut() {
                if let Payload::Nonce(n) = pl {
                    n.truncate(4);
                }
            }
        });
    }));
    let Some(Event::IkeSaEstablished { sa, .. }) = p.established(0).cloned() else {
        panic!()
    };
    let child = p.child(0).unwrap().clone();
    assert_eq!(
        p.eps[0].rekey_child(p.now, sa, child.spi_in),
        Start::Started
    );
    while p.step() {}
    assert!(
        p.events[0].iter().any(|e| matches!(
            e.1,
            Event::ChildSaFailed { notify: n, .. } if n == notify::INVALID_SYNTAX
        )),
        "{:?}",
        p.events[0]
    );
    assert!(
        !p.events[1]
            .iter()
            .any(|e| matches!(e.1, Event::ChildSaRekeyed { .. }))
    );
    assert!(p.failed(0).is_none() && p.failed(1).is_none());
}

/// A Child SA rekey whose key share the responder refuses with INVALID_KE_PAYLOAD is
/// sent again with the method asked for, when we offered it (RFC 7296 sections 1.3 and
/// 2.7), and the rekey completes.
#[test]
fn a_child_rekey_refused_for_its_key_share_retries_with_the_method_asked_for() {
    let mut p = Pair::new(24, |i, peer| {
        let esp = if i == 0 {
            "aes256gcm16-x25519-mlkem768"
        } else {
            "aes256gcm16-mlkem768"
        };
        *peer = peer.clone().with_esp(&[esp]).unwrap();
    });
    p.handshake(10 * SEC);
    let first = p.child(0).unwrap().clone();
    let Some(Event::IkeSaEstablished { sa, .. }) = p.established(0).cloned() else {
        panic!("not established: {:?}", p.events[0])
    };
    p.eps[0].rekey_child(p.now, sa, first.spi_in);
    while p.step() {}
    let failed = p.events[0]
        .iter()
        .filter(|e| matches!(e.1, Event::ChildSaFailed { .. }))
        .count();
    assert_eq!(failed, 0, "{:?}", p.events[0]);
    let (ra, rb) = (rekeyed_children(&p, 0), rekeyed_children(&p, 1));
    assert_eq!((ra.len(), rb.len()), (1, 1), "{:?}", p.events);
    assert_eq!(ra[0].1.encr_out, rb[0].1.encr_in);
    assert_eq!(&*ra[0].1.proposal, "aes256gcm16-mlkem768");
    // Two CREATE_CHILD_SA requests: the refused X25519 share, then ML-KEM-768.
    let creates = p
        .exchanges(0)
        .iter()
        .filter(|x| x.0 == exchange::CREATE_CHILD_SA)
        .count();
    assert_eq!(creates, 2);
}

/// An IKE SA rekey that chose another cipher than the IKE SA had: the successor uses
/// the cipher the rekey chose, at both ends (RFC 7296 2.18: the new SA's keys follow
/// its own proposal; only the PRF stays, as it keys SKEYSEED with the old SK_d).
/// Gateway 0 prefers AES-256-GCM and the first handshake, which it starts, takes that;
/// gateway 1 prefers AES-128-GCM, and the IKE SA rekey it starts (offering its whole
/// configuration, as strongSwan does) takes that.
#[test]
fn an_ike_rekey_that_chooses_another_cipher_uses_it() {
    let mut p = Pair::new(41, |i, peer| {
        let mut ike = [
            "aes256gcm16-prfsha256-x25519",
            "aes128gcm16-prfsha256-x25519",
        ];
        if i == 1 {
            ike.reverse();
        }
        *peer = peer.clone().with_ike(&ike).unwrap();
    });
    p.handshake(10 * SEC);
    let first = established_keys(&p, 0);
    assert_eq!(first.0.sk_ei.len(), 32 + 4, "AES-256-GCM first");
    let Some(Event::IkeSaEstablished { sa, .. }) = p.established(1).cloned() else {
        panic!()
    };
    assert_eq!(p.eps[1].rekey_ike(p.now, sa), Start::Started);
    while p.step() {}
    let rekeyed = |i: usize| {
        p.events[i]
            .iter()
            .find_map(|e| match &e.1 {
                Event::IkeSaRekeyed { keys, .. } => Some(*keys),
                _ => None,
            })
            .unwrap_or_else(|| panic!("not rekeyed: {:?}", p.events[i]))
    };
    let (k0, k1) = (rekeyed(0), rekeyed(1));
    assert_eq!(k1.sk_ei.len(), 16 + 4, "AES-128-GCM after the rekey");
    assert_eq!((&k0.sk_ei, &k0.sk_er), (&k1.sk_ei, &k1.sk_er));
    // The successor carries traffic: a Child SA rekey over it completes.
    let child = p.child(0).unwrap().clone();
    let new_sa = p.events[0]
        .iter()
        .find_map(|e| match &e.1 {
            Event::IkeSaRekeyed { new, .. } => Some(*new),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        p.eps[0].rekey_child(p.now, new_sa, child.spi_in),
        Start::Started
    );
    while p.step() {}
    assert!(
        p.events[0]
            .iter()
            .any(|e| matches!(e.1, Event::ChildSaRekeyed { .. }))
    );
    assert!(p.failed(0).is_none() && p.failed(1).is_none());
}

/// What a driver that prefetches reads ahead: the SA a datagram or the next timer names,
/// and where that SA lies; and nothing for what names no SA of the endpoint.
#[test]
fn a_driver_finds_the_sa_a_message_or_timer_is_for() {
    let mut p = Pair::new(3, |_, _| {});
    p.handshake(10 * SEC);
    let sa = |i: usize| match p.established(i) {
        Some(Event::IkeSaEstablished { sa, .. }) => *sa,
        other => panic!("not established: {other:?}"),
    };
    let (sa0, sa1) = (sa(0), sa(1));
    assert_ne!(sa0, sa1, "each side names the SA by its own SPI");
    assert_eq!(
        p.eps[0].next_timer_sa(),
        None,
        "no timer runs on an idle SA"
    );

    // The initiator's liveness check names the responder's SA at the responder.
    p.eps[0].check_liveness(p.now, sa0);
    let request = p.eps[0].poll_transmit().expect("an INFORMATIONAL request");
    assert_eq!(p.eps[0].next_timer_sa(), Some(sa0), "its retransmission");
    assert_eq!(p.eps[1].sa_of_datagram(&request.payload), Some(sa1));
    assert_eq!(p.eps[1].sa_of_datagram(&request.payload[..20]), None);

    let mut hints = Vec::new();
    assert_eq!(
        p.eps[1].locate_sa(sa1, |at, len| hints.push((at, len))),
        Some(0)
    );
    // The SA, its peer's configuration and its Child SAs.
    assert!(
        hints.len() == 3 && hints.iter().all(|h| h.1 > 0),
        "{hints:?}"
    );
    hints.clear();
    assert_eq!(
        p.eps[1].locate_sa(sa1 ^ 1, |at, len| hints.push((at, len))),
        None
    );
    assert!(hints.is_empty());
}
