//! The canonical binary encoding of a serde value: what the run fingerprint hashes for
//! each trace event's data (see [`crate::trace`]).
//!
//! Compact and cheap to produce, because every event of a run goes through it: fixed-width
//! little-endian numbers, no field names. Lengths and enum variant indices are LEB128
//! varints; a sequence or map writes a 1 before each element and a 0 after the last, so
//! that iterators of unknown length need no buffering. Structs and tuples are their fields
//! in declaration order, `None` is 0 and `Some(x)` is 1 then `x`, unit values are
//! nothing.
//!
//! Within one type the encoding is injective, which is all a fingerprint needs: two
//! events of the same kind encode alike only when they are equal. (A field skipped by
//! `skip_serializing_if` writes nothing, so a type that skips fields should give each
//! shape its own kind; none of the traced types does.)

use std::fmt;

use serde::ser::{self, Serialize};

/// Appends the canonical encoding of `value` to `out`.
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    value.serialize(&mut Encoder { out })
}

/// A value's own `Serialize` implementation failed (the encoding itself cannot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for EncodeError {}
impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl Encoder<'_> {
    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.out.push(n as u8 | 0x80);
            n >>= 7;
        }
        self.out.push(n as u8);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.out.extend_from_slice(b);
    }
}

type Done = Result<(), EncodeError>;

/// Serializer methods that write a number's little-endian bytes.
macro_rules! le_numbers {
    ($($method:ident: $t:ty),* $(,)?) => {$(
        fn $method(self, v: $t) -> Done {
            self.out.extend_from_slice(&v.to_le_bytes());
            Ok(())
        }
    )*};
}

impl<'a, 'b> ser::Serializer for &'a mut Encoder<'b> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Done {
        self.out.push(v as u8);
        Ok(())
    }
    le_numbers! {
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128,
    }
    fn serialize_f32(self, v: f32) -> Done {
        self.serialize_u32(v.to_bits())
    }
    fn serialize_f64(self, v: f64) -> Done {
        self.serialize_u64(v.to_bits())
    }
    fn serialize_char(self, v: char) -> Done {
        self.serialize_u32(v as u32)
    }
    fn serialize_str(self, v: &str) -> Done {
        self.bytes(v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Done {
        self.bytes(v);
        Ok(())
    }
    fn serialize_none(self) -> Done {
        self.out.push(0);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Done {
        self.out.push(1);
        v.serialize(self)
    }
    fn serialize_unit(self) -> Done {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Done {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Done {
        self.varint(index.into());
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Done {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        v: &T,
    ) -> Done {
        self.varint(index.into());
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, EncodeError> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, EncodeError> {
        self.varint(index.into());
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, EncodeError> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, EncodeError> {
        self.varint(index.into());
        Ok(self)
    }
}

impl ser::SerializeSeq for &mut Encoder<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Done {
        self.out.push(1);
        v.serialize(&mut **self)
    }
    fn end(self) -> Done {
        self.out.push(0);
        Ok(())
    }
}

impl ser::SerializeMap for &mut Encoder<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Done {
        self.out.push(1);
        k.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Done {
        v.serialize(&mut **self)
    }
    fn end(self) -> Done {
        self.out.push(0);
        Ok(())
    }
}

/// Fields, one after the other: tuples, structs and their variants.
macro_rules! fields {
    ($($trait:ident, $method:ident;)*) => {$(
        impl ser::$trait for &mut Encoder<'_> {
            type Ok = ();
            type Error = EncodeError;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Done {
                v.serialize(&mut **self)
            }
            fn end(self) -> Done {
                Ok(())
            }
        }
    )*};
}
fields! {
    SerializeTuple, serialize_element;
    SerializeTupleStruct, serialize_field;
    SerializeTupleVariant, serialize_field;
}

macro_rules! named_fields {
    ($($trait:ident;)*) => {$(
        impl ser::$trait for &mut Encoder<'_> {
            type Ok = ();
            type Error = EncodeError;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, v: &T) -> Done {
                v.serialize(&mut **self)
            }
            fn end(self) -> Done {
                Ok(())
            }
        }
    )*};
}
named_fields! {
    SerializeStruct;
    SerializeStructVariant;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Serialize;

    fn enc<T: Serialize>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out).unwrap();
        out
    }

    #[derive(Serialize, Debug, Clone, PartialEq)]
    enum Shape {
        Unit,
        Newtype(u16),
        Tuple(u8, bool),
        Struct { name: String, sizes: Vec<u32> },
    }

    #[derive(Serialize, Debug, Clone, PartialEq)]
    struct Event {
        bytes: usize,
        reason: &'static str,
        spi: Option<u32>,
        shape: Shape,
        signed: i16,
    }

    #[test]
    fn writes_the_documented_bytes() {
        let e = Event {
            bytes: 1200,
            reason: "loss",
            spi: Some(0x0102_0304),
            shape: Shape::Struct {
                name: "ab".into(),
                sizes: vec![7, 300],
            },
            signed: -2,
        };
        let mut want = vec![];
        want.extend_from_slice(&1200u64.to_le_bytes());
        want.extend_from_slice(b"\x04loss");
        want.extend_from_slice(&[1, 4, 3, 2, 1]);
        want.extend_from_slice(b"\x03\x02ab");
        want.extend_from_slice(&[1, 7, 0, 0, 0, 1, 44, 1, 0, 0, 0]);
        want.extend_from_slice(&[0xfe, 0xff]);
        assert_eq!(enc(&e), want);
        assert_eq!(enc(&Shape::Unit), [0]);
        assert_eq!(enc(&Shape::Tuple(9, true)), [2, 9, 1]);
        assert_eq!(enc(&None::<u8>), [0]);
        // Lengths are LEB128: 200 bytes take two.
        assert_eq!(&enc(&"x".repeat(200))[..3], &[0xc8, 0x01, b'x']);
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            Just(Shape::Unit),
            any::<u16>().prop_map(Shape::Newtype),
            (any::<u8>(), any::<bool>()).prop_map(|(a, b)| Shape::Tuple(a, b)),
            (".{0,3}", prop::collection::vec(0u32..3, 0..3))
                .prop_map(|(name, sizes)| Shape::Struct { name, sizes }),
        ]
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            0usize..3,
            prop::sample::select(vec!["", "a", "loss", "lossy"]),
            prop::option::of(0u32..3),
            shape(),
            -2i16..2,
        )
            .prop_map(|(bytes, reason, spi, shape, signed)| Event {
                bytes,
                reason,
                spi,
                shape,
                signed,
            })
    }

    proptest! {
        /// Small domains, so that near-equal values meet often: equal encodings only
        /// for equal values.
        #[test]
        fn encodings_of_one_type_differ_when_the_values_do(a in event(), b in event()) {
            prop_assert_eq!(enc(&a) == enc(&b), a == b);
        }

        #[test]
        fn sequences_of_strings_do_not_run_together(
            a in prop::collection::vec("[ab]{0,2}", 0..4),
            b in prop::collection::vec("[ab]{0,2}", 0..4),
        ) {
            prop_assert_eq!(enc(&a) == enc(&b), a == b);
        }
    }
}
