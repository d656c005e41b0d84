//! Any string: proposal parsing never panics, and what parses prints and re-parses to
//! the same proposal.
#![no_main]
use ikev2::proposal::ProposalSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        for parse in [ProposalSpec::parse_ike, ProposalSpec::parse_esp] {
            if let Ok(p) = parse(s) {
                assert_eq!(parse(&p.to_string()), Ok(p));
            }
        }
    }
});
