//! A serde deserializer over one MessagePack value, as the host writes
//! frames: it reads the slice directly (no `Read` indirection), lends
//! strings out of the frame, hands struct field names to serde as bytes
//! (so they are matched without a UTF-8 check), and skips the values a
//! type ignores without visiting them. The SDK's hot loop decodes every
//! event through it, which is why it is written here rather than taken from
//! `rmp-serde` (whose general reader costs about twice as much per event
//! under the wasm compiler).

use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};
use std::fmt;

/// Deepest nesting a value may have (the host refuses deeper ones).
const MAX_DEPTH: usize = 512;

/// Why a value could not be decoded.
#[derive(Debug)]
pub(crate) struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

impl Error {
    /// A malformed value (as opposed to one of the wrong shape).
    fn malformed(why: &str) -> Self {
        Error(format!("invalid event MessagePack: {why}"))
    }

    /// Whether the bytes were malformed, not merely of another shape.
    pub(crate) fn is_malformed(&self) -> bool {
        self.0.starts_with("invalid event MessagePack")
    }
}

/// Reads one value from the front of `buf`.
pub(crate) struct Reader<'de> {
    buf: &'de [u8],
    depth: usize,
}

impl<'de> Reader<'de> {
    pub(crate) fn new(buf: &'de [u8]) -> Self {
        Reader { buf, depth: 0 }
    }

    /// Whether every byte was read.
    pub(crate) fn is_done(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, Error> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or_else(|| Error::malformed("the value is truncated"))?;
        self.buf = rest;
        Ok(b)
    }

    #[inline]
    fn bytes(&mut self, n: usize) -> Result<&'de [u8], Error> {
        if self.buf.len() < n {
            return Err(Error::malformed("the value is truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    #[inline]
    fn be<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        Ok(self.bytes(N)?.try_into().expect("took N bytes"))
    }

    /// The length that follows a str / bin / array / map marker.
    #[inline]
    fn len(&mut self, marker: u8) -> Result<usize, Error> {
        Ok(match marker {
            0xa0..=0xbf => (marker & 0x1f) as usize,
            0x80..=0x9f => (marker & 0x0f) as usize,
            0xd9 | 0xc4 => self.byte()? as usize,
            0xda | 0xc5 | 0xdc | 0xde => u16::from_be_bytes(self.be()?) as usize,
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    /// The bytes of a string whose marker was just read.
    #[inline]
    fn str_bytes(&mut self, marker: u8) -> Result<&'de [u8], Error> {
        let n = self.len(marker)?;
        self.bytes(n)
    }

    fn str(bytes: &'de [u8]) -> Result<&'de str, Error> {
        // docs/abi.md, "Event encodings": every `str` in a frame the host
        // hands a stage is valid UTF-8 (it wrote the frame from checked
        // JSON, checked a module's frames, or has them from an SDK stage,
        // which writes Rust strings). Checking again costs the wasm code a
        // pass over every string of every event.
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        // SAFETY: as above; a host breaking that promise could only make
        // this instance, inside its sandbox, misbehave on its own data.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    }

    fn nest(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::malformed("the value is nested too deep"));
        }
        Ok(())
    }

    /// Skips one value without decoding it.
    fn skip(&mut self) -> Result<(), Error> {
        let mut pending: usize = 1;
        while pending > 0 {
            pending -= 1;
            let m = self.byte()?;
            match m {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => {}
                0xcc | 0xd0 => drop(self.bytes(1)?),
                0xcd | 0xd1 => drop(self.bytes(2)?),
                0xce | 0xd2 | 0xca => drop(self.bytes(4)?),
                0xcf | 0xd3 | 0xcb => drop(self.bytes(8)?),
                0xa0..=0xbf | 0xd9..=0xdb | 0xc4..=0xc6 => drop(self.str_bytes(m)?),
                0x90..=0x9f | 0xdc | 0xdd => pending += self.len(m)?,
                0x80..=0x8f | 0xde | 0xdf => pending += 2 * self.len(m)?,
                _ => return Err(Error::malformed("the value holds an extension")),
            }
        }
        Ok(())
    }
}

/// What a JSON pointer led to in an event.
pub(crate) enum Found {
    /// Nothing: a missing member or index, or a path through a scalar.
    Missing,
    /// A string, number or boolean, whose text is in the caller's buffer.
    Scalar,
    Null,
    Array,
    Object,
}

impl Reader<'_> {
    /// Walks the pointer whose tokens are `path` down from the value at the
    /// front, skipping everything off the path undecoded; a scalar at its
    /// end is written into `buf` as the JSON walk writes it.
    pub(crate) fn seek(mut self, path: &[String], buf: &mut String) -> Result<Found, Error> {
        for token in path {
            let m = self.byte()?;
            match m {
                0x80..=0x8f | 0xde | 0xdf => {
                    let n = self.len(m)?;
                    let mut hit = false;
                    for _ in 0..n {
                        match self.buf.first() {
                            Some(&k @ (0xa0..=0xbf | 0xd9..=0xdb)) => {
                                self.buf = &self.buf[1..];
                                if self.str_bytes(k)? == token.as_bytes() {
                                    hit = true;
                                    break;
                                }
                            }
                            // A key that is not a string never matches.
                            _ => self.skip()?,
                        }
                        self.skip()?;
                    }
                    if !hit {
                        return Ok(Found::Missing);
                    }
                }
                0x90..=0x9f | 0xdc | 0xdd => {
                    let n = self.len(m)?;
                    match token.parse::<usize>() {
                        Ok(i) if i < n => {
                            for _ in 0..i {
                                self.skip()?;
                            }
                        }
                        _ => return Ok(Found::Missing),
                    }
                }
                _ => return Ok(Found::Missing),
            }
        }
        let m = *self
            .buf
            .first()
            .ok_or_else(|| Error::malformed("the value is truncated"))?;
        let text = match m {
            0xc0 => return Ok(Found::Null),
            0x90..=0x9f | 0xdc | 0xdd => return Ok(Found::Array),
            0x80..=0x8f | 0xde | 0xdf => return Ok(Found::Object),
            0xc2 => "false".to_owned(),
            0xc3 => "true".to_owned(),
            0xa0..=0xbf | 0xd9..=0xdb => {
                self.buf = &self.buf[1..];
                let s = Reader::str(self.str_bytes(m)?)?;
                buf.clear();
                buf.push_str(s);
                return Ok(Found::Scalar);
            }
            _ => {
                // A number: its JSON text, as serde_json prints it.
                let v: serde_json::Value = de::Deserialize::deserialize(&mut self)?;
                if !v.is_number() {
                    return Err(Error::malformed(
                        "the key is neither a scalar nor a container",
                    ));
                }
                v.to_string()
            }
        };
        buf.clear();
        buf.push_str(&text);
        Ok(Found::Scalar)
    }
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let m = self.byte()?;
        match m {
            0x00..=0x7f => visitor.visit_u64(m as u64),
            0xe0..=0xff => visitor.visit_i64(m as i8 as i64),
            0xcc => visitor.visit_u64(self.byte()? as u64),
            0xcd => visitor.visit_u64(u16::from_be_bytes(self.be()?) as u64),
            0xce => visitor.visit_u64(u32::from_be_bytes(self.be()?) as u64),
            0xcf => visitor.visit_u64(u64::from_be_bytes(self.be()?)),
            0xd0 => visitor.visit_i64(self.byte()? as i8 as i64),
            0xd1 => visitor.visit_i64(i16::from_be_bytes(self.be()?) as i64),
            0xd2 => visitor.visit_i64(i32::from_be_bytes(self.be()?) as i64),
            0xd3 => visitor.visit_i64(i64::from_be_bytes(self.be()?)),
            0xca => visitor.visit_f32(f32::from_be_bytes(self.be()?)),
            0xcb => visitor.visit_f64(f64::from_be_bytes(self.be()?)),
            0xc0 => visitor.visit_unit(),
            0xc2 => visitor.visit_bool(false),
            0xc3 => visitor.visit_bool(true),
            0xa0..=0xbf | 0xd9..=0xdb => {
                let bytes = self.str_bytes(m)?;
                visitor.visit_borrowed_str(Reader::str(bytes)?)
            }
            0xc4..=0xc6 => {
                let bytes = self.str_bytes(m)?;
                visitor.visit_borrowed_bytes(bytes)
            }
            0x90..=0x9f | 0xdc | 0xdd => {
                let n = self.len(m)?;
                self.nest()?;
                let v = visitor.visit_seq(Items { de: self, left: n })?;
                self.depth -= 1;
                Ok(v)
            }
            0x80..=0x8f | 0xde | 0xdf => {
                let n = self.len(m)?;
                self.nest()?;
                let v = visitor.visit_map(Items { de: self, left: n })?;
                self.depth -= 1;
                Ok(v)
            }
            _ => Err(Error::malformed("the value holds an extension")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.buf.first() == Some(&0xc0) {
            self.buf = &self.buf[1..];
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// Field and variant names: compared as bytes, never validated.
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.buf.first() {
            Some(&(m @ 0xa0..=0xbf | m @ 0xd9..=0xdb)) => {
                self.buf = &self.buf[1..];
                let bytes = self.str_bytes(m)?;
                visitor.visit_borrowed_bytes(bytes)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.skip()?;
        visitor.visit_unit()
    }

    /// Externally tagged, as serde_json tags them: `"Unit"`, or
    /// `{"Variant": value}`.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.buf.first() {
            Some(0xa0..=0xbf | 0xd9..=0xdb) => {
                let m = self.byte()?;
                let name = Reader::str(self.str_bytes(m)?)?;
                visitor.visit_enum(name.into_deserializer())
            }
            Some(0x81) => {
                self.buf = &self.buf[1..];
                self.nest()?;
                let v = visitor.visit_enum(Tagged { de: self })?;
                self.depth -= 1;
                Ok(v)
            }
            _ => Err(de::Error::custom(
                "expected an enum: a string, or an object with one entry",
            )),
        }
    }

    fn is_human_readable(&self) -> bool {
        true
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
    }
}

/// The entries of an array (`left` values) or a map (`left` pairs).
struct Items<'a, 'de> {
    de: &'a mut Reader<'de>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Items<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> MapAccess<'de> for Items<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// `{"Variant": value}`.
struct Tagged<'a, 'de> {
    de: &'a mut Reader<'de>,
}

impl<'a, 'de> EnumAccess<'de> for Tagged<'a, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let v = seed.deserialize(&mut *self.de)?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for Tagged<'_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        de::Deserialize::deserialize(&mut *self.de)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(&mut *self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(&mut *self.de, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(&mut *self.de, visitor)
    }
}
