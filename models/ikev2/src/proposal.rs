//! Proposals: strongSwan-style proposal strings, the SA payload form, and negotiation
//! as RFC 7296 section 2.7 and RFC 9370 section 2.2 describe it.
//!
//! A string such as `aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024` lists
//! algorithms separated by `-`; several algorithms of one type are alternatives in
//! preference order; `keN_` prefixes name the additional key exchanges ADDKE1..7, and
//! `keN_none` makes that exchange optional.

use std::fmt;

use crate::consts::{encr, esn, integ, ke, prf, protocol, transform_type as tt};
use crate::message::{self, Attribute, Transform};

/// One algorithm of one transform type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Algorithm {
    pub kind: u8,
    pub id: u16,
    /// The Key Length attribute in bits (mandatory for AES).
    pub key_bits: Option<u16>,
}

impl Algorithm {
    pub const fn new(kind: u8, id: u16) -> Self {
        Algorithm {
            kind,
            id,
            key_bits: None,
        }
    }

    /// True for ENCR transforms that are AEAD ciphers.
    pub fn is_aead(&self) -> bool {
        self.kind == tt::ENCR
            && matches!(
                self.id,
                encr::AES_GCM_8 | encr::AES_GCM_12 | encr::AES_GCM_16 | encr::CHACHA20_POLY1305
            )
    }

    fn to_transform(self) -> Transform {
        Transform {
            kind: self.kind,
            id: self.id,
            attributes: self
                .key_bits
                .map(|bits| {
                    vec![Attribute::Tv {
                        kind: crate::consts::attribute::KEY_LENGTH,
                        value: bits,
                    }]
                })
                .unwrap_or_default(),
        }
    }

    fn from_transform(t: &Transform) -> Self {
        Algorithm {
            kind: t.kind,
            id: t.id,
            key_bits: t.key_length(),
        }
    }
}

/// A proposal: for IKE or ESP, a list of acceptable algorithms (alternatives of one type
/// in preference order).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProposalSpec {
    pub protocol: u8,
    pub algorithms: Vec<Algorithm>,
}

/// A proposal string could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    #[error("`{proposal}`: unknown algorithm `{token}`")]
    UnknownToken { proposal: String, token: String },
    #[error("`{proposal}`: {problem}")]
    Incomplete {
        proposal: String,
        problem: &'static str,
    },
}

const TABLE: &[(&str, u8, u16, Option<u16>)] = &[
    ("aes128gcm16", tt::ENCR, encr::AES_GCM_16, Some(128)),
    ("aes192gcm16", tt::ENCR, encr::AES_GCM_16, Some(192)),
    ("aes256gcm16", tt::ENCR, encr::AES_GCM_16, Some(256)),
    ("aes128gcm12", tt::ENCR, encr::AES_GCM_12, Some(128)),
    ("aes256gcm12", tt::ENCR, encr::AES_GCM_12, Some(256)),
    ("aes128gcm8", tt::ENCR, encr::AES_GCM_8, Some(128)),
    ("aes256gcm8", tt::ENCR, encr::AES_GCM_8, Some(256)),
    ("aes128", tt::ENCR, encr::AES_CBC, Some(128)),
    ("aes192", tt::ENCR, encr::AES_CBC, Some(192)),
    ("aes256", tt::ENCR, encr::AES_CBC, Some(256)),
    ("chacha20poly1305", tt::ENCR, encr::CHACHA20_POLY1305, None),
    ("sha256", tt::INTEG, integ::HMAC_SHA2_256_128, None),
    ("sha384", tt::INTEG, integ::HMAC_SHA2_384_192, None),
    ("sha512", tt::INTEG, integ::HMAC_SHA2_512_256, None),
    ("prfsha256", tt::PRF, prf::HMAC_SHA2_256, None),
    ("prfsha384", tt::PRF, prf::HMAC_SHA2_384, None),
    ("prfsha512", tt::PRF, prf::HMAC_SHA2_512, None),
    ("modp2048", tt::KE, ke::MODP_2048, None),
    ("ecp256", tt::KE, ke::ECP_256, None),
    ("ecp384", tt::KE, ke::ECP_384, None),
    ("ecp521", tt::KE, ke::ECP_521, None),
    ("x25519", tt::KE, ke::X25519, None),
    ("x448", tt::KE, ke::X448, None),
    ("mlkem512", tt::KE, ke::ML_KEM_512, None),
    ("mlkem768", tt::KE, ke::ML_KEM_768, None),
    ("mlkem1024", tt::KE, ke::ML_KEM_1024, None),
    ("none", tt::KE, ke::NONE, None),
    ("noesn", tt::ESN, esn::NO_ESN, None),
    ("esn", tt::ESN, esn::ESN, None),
];

/// Aliases accepted on input, never printed.
const ALIASES: &[(&str, &str)] = &[
    ("curve25519", "x25519"),
    ("curve448", "x448"),
    ("sha2_256", "sha256"),
    ("sha2_384", "sha384"),
    ("sha2_512", "sha512"),
    ("aes128gcm128", "aes128gcm16"),
    ("aes192gcm128", "aes192gcm16"),
    ("aes256gcm128", "aes256gcm16"),
];

fn lookup(token: &str) -> Option<Algorithm> {
    let token = ALIASES
        .iter()
        .find(|(alias, _)| *alias == token)
        .map_or(token, |(_, canonical)| canonical);
    TABLE
        .iter()
        .find(|(name, ..)| *name == token)
        .map(|&(_, kind, id, key_bits)| Algorithm { kind, id, key_bits })
}

fn name_of(a: &Algorithm) -> String {
    let base_kind = if tt::is_key_exchange(a.kind) {
        tt::KE
    } else {
        a.kind
    };
    let name = TABLE
        .iter()
        .find(|&&(_, kind, id, bits)| kind == base_kind && id == a.id && bits == a.key_bits)
        .map_or_else(|| format!("{}:{}", a.kind, a.id), |(n, ..)| n.to_string());
    if (tt::ADDKE1..=tt::ADDKE7).contains(&a.kind) {
        format!("ke{}_{name}", a.kind - tt::ADDKE1 + 1)
    } else {
        name
    }
}

impl ProposalSpec {
    /// Parses an IKE proposal string, e.g. `aes256gcm16-prfsha256-x25519-ke1_mlkem768`.
    pub fn parse_ike(s: &str) -> Result<Self, ProposalError> {
        Self::parse(s, protocol::IKE)
    }

    /// Parses an ESP proposal string, e.g. `aes256gcm16-esn` or `aes128gcm16-x25519`
    /// (a KE method gives PFS on rekey). Without `esn`/`noesn`, `noesn` is assumed.
    pub fn parse_esp(s: &str) -> Result<Self, ProposalError> {
        Self::parse(s, protocol::ESP)
    }

    fn parse(s: &str, proto: u8) -> Result<Self, ProposalError> {
        let incomplete = |problem| ProposalError::Incomplete {
            proposal: s.to_string(),
            problem,
        };
        let mut algorithms: Vec<Algorithm> = Vec::new();
        for token in s.trim().split('-') {
            let unknown = || ProposalError::UnknownToken {
                proposal: s.to_string(),
                token: token.to_string(),
            };
            let alg = match token.strip_prefix("ke").and_then(|t| t.split_once('_')) {
                Some((n, method)) => {
                    let n: u8 = n.parse().map_err(|_| unknown())?;
                    let mut a = lookup(method)
                        .filter(|a| a.kind == tt::KE)
                        .ok_or_else(unknown)?;
                    if !(1..=7).contains(&n) {
                        return Err(unknown());
                    }
                    a.kind = tt::ADDKE1 + n - 1;
                    a
                }
                None => lookup(token).ok_or_else(unknown)?,
            };
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        let has = |kind| has_kind(&algorithms, kind);
        let aead = algorithms
            .iter()
            .filter(|a| a.kind == tt::ENCR)
            .map(Algorithm::is_aead);
        let (any_aead, any_plain) = aead.fold((false, false), |(x, y), a| (x || a, y || !a));
        if !has(tt::ENCR) {
            return Err(incomplete("no encryption algorithm"));
        }
        if any_aead && any_plain {
            return Err(incomplete(
                "AEAD and non-AEAD ciphers cannot share a proposal",
            ));
        }
        if any_aead && has(tt::INTEG) {
            return Err(incomplete("an AEAD cipher takes no integrity algorithm"));
        }
        if any_plain && !has(tt::INTEG) {
            return Err(incomplete("a non-AEAD cipher needs an integrity algorithm"));
        }
        let (has_esn, has_prf, has_ke) = (has(tt::ESN), has(tt::PRF), has(tt::KE));
        if proto == protocol::IKE {
            if has_esn {
                return Err(incomplete("ESN belongs to ESP proposals"));
            }
            if !has_prf {
                // strongSwan derives the PRF from the integrity algorithm when omitted.
                let derived: Vec<Algorithm> = algorithms
                    .iter()
                    .filter(|a| a.kind == tt::INTEG)
                    .map(|a| {
                        Algorithm::new(
                            tt::PRF,
                            a.id - integ::HMAC_SHA2_256_128 + prf::HMAC_SHA2_256,
                        )
                    })
                    .collect();
                if derived.is_empty() {
                    return Err(incomplete("an IKE proposal needs a PRF (e.g. prfsha256)"));
                }
                algorithms.extend(derived);
            }
            if !has_ke
                || algorithms
                    .iter()
                    .any(|a| a.kind == tt::KE && a.id == ke::NONE)
            {
                return Err(incomplete("an IKE proposal needs a key exchange method"));
            }
        } else {
            if has_prf {
                return Err(incomplete("a PRF belongs to IKE proposals"));
            }
            if !has_esn {
                algorithms.push(Algorithm::new(tt::ESN, esn::NO_ESN));
            }
        }
        algorithms.sort_by_key(|a| a.kind); // stable: keeps preference order per type
        Ok(ProposalSpec {
            protocol: proto,
            algorithms,
        })
    }

    /// The alternatives of one transform type, in preference order.
    pub fn of(&self, kind: u8) -> impl Iterator<Item = &Algorithm> {
        self.algorithms.iter().filter(move |a| a.kind == kind)
    }

    /// The single algorithm of `kind` in a negotiated proposal.
    pub fn chosen(&self, kind: u8) -> Option<Algorithm> {
        self.of(kind).next().copied()
    }

    /// The key exchange methods of the additional exchanges that will run, in ADDKE order
    /// (NONE slots skipped); meaningful on a negotiated proposal.
    pub fn additional_kes(&self) -> Vec<(u8, u16)> {
        (tt::ADDKE1..=tt::ADDKE7)
            .filter_map(|k| {
                self.chosen(k)
                    .filter(|a| a.id != ke::NONE)
                    .map(|a| (k, a.id))
            })
            .collect()
    }

    /// The proposal without key exchange transforms (KE, ADDKE1..7): what the first
    /// Child SA, created inside IKE_AUTH without a key exchange, negotiates.
    pub fn without_key_exchange(&self) -> ProposalSpec {
        ProposalSpec {
            protocol: self.protocol,
            algorithms: self
                .algorithms
                .iter()
                .filter(|a| !tt::is_key_exchange(a.kind))
                .copied()
                .collect(),
        }
    }

    /// The SA payload form with proposal number `number` and SPI `spi`.
    pub fn to_wire(&self, number: u8, spi: Vec<u8>) -> message::Proposal {
        message::Proposal {
            number,
            protocol: self.protocol,
            spi,
            transforms: self.algorithms.iter().map(|a| a.to_transform()).collect(),
        }
    }

    pub fn from_wire(p: &message::Proposal) -> Self {
        ProposalSpec {
            protocol: p.protocol,
            algorithms: p.transforms.iter().map(Algorithm::from_transform).collect(),
        }
    }
}

impl fmt::Display for ProposalSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // strongSwan's order: encryption, integrity, PRF, KE, ADDKEs, ESN.
        let rank = |a: &Algorithm| match a.kind {
            tt::ENCR => 0,
            tt::INTEG => 1,
            tt::PRF => 2,
            tt::ESN => 20,
            k => 3 + k,
        };
        let mut algs: Vec<&Algorithm> = self.algorithms.iter().collect();
        algs.sort_by_key(|a| rank(a));
        // An ESP proposal's implied `noesn` (its only ESN choice) is left out, as
        // strongSwan prints it.
        let implied_noesn =
            self.protocol == protocol::ESP && self.of(tt::ESN).map(|a| a.id).eq([esn::NO_ESN]);
        let shown: Vec<String> = algs
            .iter()
            .filter(|a| !(implied_noesn && a.kind == tt::ESN))
            .map(|a| name_of(a))
            .collect();
        f.write_str(&shown.join("-"))
    }
}

/// Whose preference order decides among acceptable proposals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Preference {
    /// The first acceptable proposal in the initiator's order (RFC 7296's reading).
    #[default]
    Initiator,
    /// The first of our own proposals the initiator offered (strongSwan's default,
    /// `prefer_configured_proposals`).
    Responder,
}

/// The responder's choice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The Proposal Num to echo.
    pub number: u8,
    /// The SPI the initiator put in the chosen proposal.
    pub peer_spi: Vec<u8>,
    /// One algorithm per transform type present in the offer.
    pub chosen: ProposalSpec,
}

fn has_kind(algorithms: &[Algorithm], kind: u8) -> bool {
    algorithms.iter().any(|a| a.kind == kind)
}

/// What a transform type means when a proposal does not list it.
fn implied_when_absent(kind: u8) -> Option<Algorithm> {
    match kind {
        tt::INTEG => Some(Algorithm::new(tt::INTEG, integ::NONE)),
        tt::ESN => Some(Algorithm::new(tt::ESN, esn::NO_ESN)),
        k if tt::is_key_exchange(k) => Some(Algorithm::new(k, ke::NONE)),
        _ => None,
    }
}

/// Matches one offered proposal against one of ours: for every transform type either
/// side mentions, both must accept a common algorithm. Types the offer omits are treated
/// as their NONE value and are left out of the reply.
fn match_proposal(
    offered: &ProposalSpec,
    ours: &ProposalSpec,
    pref: Preference,
) -> Option<ProposalSpec> {
    if offered.protocol != ours.protocol {
        return None;
    }
    let mut kinds: Vec<u8> = offered
        .algorithms
        .iter()
        .chain(&ours.algorithms)
        .map(|a| a.kind)
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut chosen = Vec::new();
    for kind in kinds {
        let list = |p: &ProposalSpec| -> Vec<Algorithm> {
            let v: Vec<Algorithm> = p.of(kind).copied().collect();
            if v.is_empty() {
                implied_when_absent(kind).into_iter().collect()
            } else {
                v
            }
        };
        let (theirs, mine) = (list(offered), list(ours));
        let (first, second) = match pref {
            Preference::Initiator => (&theirs, &mine),
            Preference::Responder => (&mine, &theirs),
        };
        let pick = *first.iter().find(|a| second.contains(a))?;
        if offered.of(kind).next().is_some() {
            chosen.push(pick);
        }
    }
    Some(ProposalSpec {
        protocol: offered.protocol,
        algorithms: chosen,
    })
}

/// Chooses one proposal from `offered` (an SA payload's proposals) that one of `ours`
/// accepts; `None` means NO_PROPOSAL_CHOSEN.
pub fn select(
    offered: &[message::Proposal],
    ours: &[ProposalSpec],
    pref: Preference,
) -> Option<Selection> {
    let specs: Vec<ProposalSpec> = offered.iter().map(ProposalSpec::from_wire).collect();
    let found = match pref {
        Preference::Initiator => specs.iter().enumerate().find_map(|(i, o)| {
            ours.iter()
                .find_map(|m| match_proposal(o, m, pref))
                .map(|c| (i, c))
        }),
        Preference::Responder => ours.iter().find_map(|m| {
            specs
                .iter()
                .enumerate()
                .find_map(|(i, o)| match_proposal(o, m, pref).map(|c| (i, c)))
        }),
    }?;
    let (i, chosen) = found;
    Some(Selection {
        number: offered[i].number,
        peer_spi: offered[i].spi.clone(),
        chosen,
    })
}

/// The initiator's check of the responder's SA reply: exactly one proposal, with the
/// number of one we sent, one transform per type, each one we offered in that
/// proposal, and no type we did not offer. Returns the negotiated proposal.
pub fn verify_reply(reply: &[message::Proposal], ours: &[ProposalSpec]) -> Option<ProposalSpec> {
    let [r] = reply else { return None };
    let offered = ours.get((r.number as usize).checked_sub(1)?)?;
    let chosen = ProposalSpec::from_wire(r);
    if chosen.protocol != offered.protocol {
        return None;
    }
    let mut kinds: Vec<u8> = chosen.algorithms.iter().map(|a| a.kind).collect();
    let n = kinds.len();
    kinds.dedup();
    if kinds.len() != n {
        return None;
    }
    let offered_kinds = offered.algorithms.iter().map(|a| a.kind);
    let all_present = offered_kinds.clone().all(|k| kinds.contains(&k));
    let acceptable = chosen
        .algorithms
        .iter()
        .all(|a| offered.of(a.kind).any(|o| o == a));
    (all_present && acceptable).then_some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ike(s: &str) -> ProposalSpec {
        ProposalSpec::parse_ike(s).unwrap()
    }

    #[test]
    fn parses_and_prints_strongswan_strings() {
        for s in [
            "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024",
            "aes128gcm16-prfsha256-mlkem768",
            "aes256gcm16-prfsha512-x25519",
            "aes256gcm16-aes128gcm16-prfsha256-x25519-ecp256-ke1_mlkem768-ke1_none",
            "aes256-sha256-prfsha256-x25519",
        ] {
            assert_eq!(ike(s).to_string(), s);
        }
        let p = ike("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024");
        let aes256gcm16 = Algorithm {
            kind: tt::ENCR,
            id: 20,
            key_bits: Some(256),
        };
        assert_eq!(p.chosen(tt::ENCR), Some(aes256gcm16));
        assert_eq!(p.chosen(tt::KE).unwrap().id, 31);
        assert_eq!(p.additional_kes(), vec![(6, 36), (7, 37)]);
        // Aliases and derived PRF.
        assert_eq!(
            ike("aes128-sha2_256-curve25519").to_string(),
            "aes128-sha256-prfsha256-x25519"
        );
        // ESP: noesn implied.
        let esp = ProposalSpec::parse_esp("aes256gcm16").unwrap();
        assert_eq!(esp.chosen(tt::ESN), Some(Algorithm::new(tt::ESN, 0)));
        assert_eq!(esp.to_string(), "aes256gcm16");
        assert_eq!(
            ProposalSpec::parse_esp("aes256gcm16-x25519-esn")
                .unwrap()
                .to_string(),
            "aes256gcm16-x25519-esn"
        );
    }

    proptest::proptest! {
        /// Whatever parses prints as a string that parses to the same proposal.
        #[test]
        fn printing_round_trips(tokens in proptest::collection::vec(0usize..TABLE.len() + 7, 1..8), esp: bool) {
            let words: Vec<String> = tokens
                .iter()
                .map(|&i| match TABLE.get(i) {
                    Some((name, ..)) => name.to_string(),
                    None => format!("ke{}_mlkem768", i - TABLE.len() + 1),
                })
                .collect();
            let parse = if esp { ProposalSpec::parse_esp } else { ProposalSpec::parse_ike };
            if let Ok(p) = parse(&words.join("-")) {
                proptest::prop_assert_eq!(parse(&p.to_string()), Ok(p));
            }
        }
    }

    #[test]
    fn rejects_bad_strings() {
        let bad = |s: &str| ProposalSpec::parse_ike(s).unwrap_err();
        assert!(matches!(
            bad("aes256gcm16-prfsha256-x25519-ke9_mlkem768"),
            ProposalError::UnknownToken { .. }
        ));
        assert!(matches!(
            bad("aes256gcm16-prfsha256-kyber"),
            ProposalError::UnknownToken { .. }
        ));
        assert!(matches!(
            bad("aes256gcm16-prfsha256-x25519-ke1_aes128"),
            ProposalError::UnknownToken { .. }
        ));
        assert!(matches!(
            bad("prfsha256-x25519"),
            ProposalError::Incomplete { .. }
        ));
        assert!(matches!(
            bad("aes256gcm16-x25519"),
            ProposalError::Incomplete { .. }
        ));
        assert!(matches!(
            bad("aes256gcm16-prfsha256"),
            ProposalError::Incomplete { .. }
        ));
        assert!(matches!(
            bad("aes256gcm16-aes256-sha256-prfsha256-x25519"),
            ProposalError::Incomplete { .. }
        ));
        assert!(matches!(
            bad("aes256gcm16-sha256-prfsha256-x25519"),
            ProposalError::Incomplete { .. }
        ));
        assert!(ProposalSpec::parse_esp("aes256gcm16-prfsha256").is_err());
    }

    fn wire(specs: &[&ProposalSpec]) -> Vec<message::Proposal> {
        specs
            .iter()
            .enumerate()
            .map(|(i, p)| p.to_wire(i as u8 + 1, vec![]))
            .collect()
    }

    #[test]
    fn picks_the_first_acceptable_proposal() {
        let a = ike("aes128gcm16-prfsha256-ecp256");
        let b = ike("aes256gcm16-prfsha256-x25519-ke1_mlkem768");
        let ours = [
            ike("aes256gcm16-prfsha256-x25519-ke1_mlkem768"),
            ike("aes128gcm16-prfsha256-ecp256"),
        ];
        let offered = wire(&[&a, &b]);
        let s = select(&offered, &ours, Preference::Initiator).unwrap();
        assert_eq!((s.number, s.chosen.to_string()), (1, a.to_string()));
        let s = select(&offered, &ours, Preference::Responder).unwrap();
        assert_eq!((s.number, s.chosen.to_string()), (2, b.to_string()));
        assert!(
            select(
                &offered,
                &[ike("aes256gcm16-prfsha512-x25519")],
                Preference::Initiator
            )
            .is_none()
        );
    }

    #[test]
    fn additional_key_exchanges_follow_rfc9370() {
        let offer = ike("aes256gcm16-prfsha256-x25519-ke1_mlkem768-ke1_none");
        let off = wire(&[&offer]);
        // A responder without ADDKE1 picks NONE, which the offer allows, and says so.
        let s = select(
            &off,
            &[ike("aes256gcm16-prfsha256-x25519")],
            Preference::Initiator,
        )
        .unwrap();
        assert_eq!(
            s.chosen.to_string(),
            "aes256gcm16-prfsha256-x25519-ke1_none"
        );
        assert!(s.chosen.additional_kes().is_empty());
        // One that supports it picks ML-KEM-768.
        let s = select(
            &off,
            &[ike("aes256gcm16-prfsha256-x25519-ke1_mlkem768")],
            Preference::Initiator,
        )
        .unwrap();
        assert_eq!(s.chosen.additional_kes(), vec![(6, 36)]);
        // ADDKE1 mandatory in the offer, absent at the responder: no match.
        let strict = ike("aes256gcm16-prfsha256-x25519-ke1_mlkem768");
        assert!(
            select(
                &wire(&[&strict]),
                &[ike("aes256gcm16-prfsha256-x25519")],
                Preference::Initiator
            )
            .is_none()
        );
        // The responder requires ADDKE1 but the offer lacks it: no match either.
        let plain = ike("aes256gcm16-prfsha256-x25519");
        assert!(
            select(
                &wire(&[&plain]),
                std::slice::from_ref(&strict),
                Preference::Initiator
            )
            .is_none()
        );
        // Every type must match: same methods, different ADDKE2.
        let two = ike("aes256gcm16-prfsha256-x25519-ke1_mlkem768-ke2_mlkem1024");
        assert!(select(&wire(&[&two]), &[strict], Preference::Initiator).is_none());
    }

    #[test]
    fn esp_no_pfs_and_key_lengths() {
        let offer = ProposalSpec::parse_esp("aes256gcm16-aes128gcm16").unwrap();
        let ours = [ProposalSpec::parse_esp("aes128gcm16").unwrap()];
        let s = select(&wire(&[&offer]), &ours, Preference::Initiator).unwrap();
        assert_eq!(s.chosen.to_string(), "aes128gcm16");
        // PFS offered as optional (x25519 or none) against a no-PFS responder.
        let pfs = ProposalSpec::parse_esp("aes128gcm16-x25519-none").unwrap();
        let s = select(&wire(&[&pfs]), &ours, Preference::Initiator).unwrap();
        assert_eq!(s.chosen.chosen(tt::KE).unwrap().id, ke::NONE);
    }

    #[test]
    fn initiator_verifies_the_reply() {
        let ours = [ike(
            "aes256gcm16-aes128gcm16-prfsha256-x25519-ke1_mlkem768-ke1_none",
        )];
        let good = ike("aes128gcm16-prfsha256-x25519-ke1_none").to_wire(1, vec![]);
        assert!(verify_reply(std::slice::from_ref(&good), &ours).is_some());
        let foreign = ike("aes128gcm16-prfsha512-x25519-ke1_none").to_wire(1, vec![]);
        assert!(verify_reply(&[foreign], &ours).is_none());
        let two_encr = ike("aes128gcm16-aes256gcm16-prfsha256-x25519-ke1_none").to_wire(1, vec![]);
        assert!(verify_reply(&[two_encr], &ours).is_none());
        let missing_addke = ike("aes128gcm16-prfsha256-x25519").to_wire(1, vec![]);
        assert!(verify_reply(&[missing_addke], &ours).is_none());
        let mut wrong_number = good;
        wrong_number.number = 2;
        assert!(verify_reply(&[wrong_number], &ours).is_none());
    }
}
