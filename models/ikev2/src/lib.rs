//! `ikev2`: a sans-IO IKEv2 library with hybrid post-quantum key exchange.
//!
//! It depends on no simulator crate. The pieces: the wire codec ([`message`]),
//! strongSwan-style proposals and their negotiation ([`proposal`]), an injected crypto
//! provider with a real and an insecure "model" implementation ([`crypto`]), the key
//! derivations of RFC 7296, 9370, 8784 and 9867 ([`keys`]), and SK/SKF protection with
//! RFC 7383 fragmentation and reassembly ([`protect`]).

pub mod consts;
pub mod crypto;
pub mod endpoint;
pub mod keys;
pub mod message;
pub mod proposal;
pub mod protect;
#[cfg(feature = "testing")]
pub mod testing;

pub use message::{DecodeError, DecodeErrorKind, Header, Message, Notify, Payload};
