//! A fast path for valid YAML resources files. Each entry is deserialized
//! from the parser's events, read one at a time, straight into its message
//! type. Building the whole document as a tree first took about as long as
//! the YAML parse and more than doubled the memory used for a file of 10,000
//! resources. serde_yaml_ng's own deserializer collects every event of the
//! document first: for 10,000 resources, `legate apply` then took a quarter
//! more CPU and 89 MB of memory, against 35 MB when read as it goes.
//!
//! Any problem makes the fast path give up, and the document path then
//! reports every error with its location.

use std::borrow::Cow;
use std::fmt;

use prost_reflect::{DeserializeOptions, DynamicMessage};
use serde::de::value::{BorrowedStrDeserializer, MapAccessDeserializer, StringDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, Error as _, MapAccess, SeqAccess, Unexpected, Visitor};

use stream::Stream;

mod events;
mod stream;

/// Parses a YAML resources file whose entries are all valid and each start
/// with `"@type"`. Returns `None` for anything else, and for JSON, which
/// the JSON parser reads faster.
pub(super) fn parse_valid_resources(text: &str) -> Option<Vec<prost_types::Any>> {
    if text.trim_start().starts_with('{') {
        return None;
    }
    let mut stream = Stream::new(text).ok()?;
    let resources = Typed(&mut stream).deserialize_map(ResourcesFile).ok()?;
    stream.finish().ok()?;
    Some(resources)
}

/// The top level of a resources file: a `resources` list and an optional
/// `version_info`, whose value is checked but not kept.
struct ResourcesFile;

impl<'de> Visitor<'de> for ResourcesFile {
    type Value = Vec<prost_types::Any>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a mapping with a `resources` list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut resources = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "resources" if resources.is_none() => resources = Some(map.next_value_seed(ResourceList)?),
                "version_info" => {
                    // Read as a tree reads it, so that the same values fail.
                    map.next_value::<serde_json::Value>()?;
                }
                _ => return Err(A::Error::custom(format!("unexpected field `{key}`"))),
            }
        }
        resources.ok_or_else(|| A::Error::missing_field("resources"))
    }
}

struct ResourceList;

impl<'de> DeserializeSeed<'de> for ResourceList {
    type Value = Vec<prost_types::Any>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ResourceList {
    type Value = Vec<prost_types::Any>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a list of resources")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut resources = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(resource) = seq.next_element_seed(ResourceEntry)? {
            resources.push(resource);
        }
        Ok(resources)
    }
}

/// One entry of the list: `"@type"` first, then the fields of that type.
struct ResourceEntry;

impl<'de> DeserializeSeed<'de> for ResourceEntry {
    type Value = prost_types::Any;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ResourceEntry {
    type Value = prost_types::Any;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a mapping that starts with \"@type\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if map.next_key::<String>()?.as_deref() != Some("@type") {
            return Err(A::Error::custom("the entry does not start with \"@type\""));
        }
        let type_url: String = map.next_value()?;
        let descriptor = super::resource_descriptor(&type_url)
            .ok_or_else(|| A::Error::custom(format!("{type_url:?} is not a resource type")))?;

        let options = DeserializeOptions::new().deny_unknown_fields(true);
        let message = DynamicMessage::deserialize_with_options(descriptor, MapAccessDeserializer::new(map), &options)?;
        Ok(prost_types::Any { type_url, value: super::encoded(&message) })
    }
}

/// Reads every value by the type the YAML scalar resolves to, as a document
/// tree does. Without it, serde_yaml_ng hands any scalar to a string field,
/// so `name: 123` would pass here and fail in a bootstrap file.
///
/// It wraps a deserializer, and likewise the visitors, seeds and accessors
/// that reach nested values, so the rule applies at every depth.
struct Typed<T>(T);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Typed<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(Typed(visitor))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_option(Typed(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Typed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Typed(deserializer))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Typed<A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, A::Error> {
        self.0.next_element_seed(Typed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// The entries of a mapping, read as a document tree reads them: each key
/// as a string, each value through [`Typed`].
///
/// A field may be named by its proto name or its JSON name
/// (`connect_timeout`, `connectTimeout`). Given both, the last one read
/// wins, and a tree reads keys in sorted order where this reads them in file
/// order. So two keys that are alike but for underscores and case make the
/// fast path give up, and the document path decides as before.
struct TypedMap<A> {
    inner: A,
    /// Hashes of the keys read so far, with underscores removed and in
    /// lower case; the first ones on the stack, as most mappings are small.
    seen: [u64; 16],
    count: usize,
    more: Vec<u64>,
}

impl<A> TypedMap<A> {
    fn new(inner: A) -> Self {
        TypedMap { inner, seen: [0; 16], count: 0, more: Vec::new() }
    }

    /// Records `key` and returns whether a key alike but for underscores
    /// and case came before it.
    fn repeats(&mut self, key: &str) -> bool {
        let hash = loose_hash(key);
        let stacked = &self.seen[..self.count.min(self.seen.len())];
        if stacked.contains(&hash) || self.more.contains(&hash) {
            return true;
        }
        match self.seen.get_mut(self.count) {
            Some(slot) => *slot = hash,
            None => self.more.push(hash),
        }
        self.count += 1;
        false
    }
}

/// FNV-1a over the bytes of `key` without underscores, in ASCII lower case.
fn loose_hash(key: &str) -> u64 {
    key.bytes()
        .filter(|byte| *byte != b'_')
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3))
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for TypedMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        let Some(key) = self.inner.next_key_seed(KeyText)? else {
            return Ok(None);
        };
        if self.repeats(&key) {
            return Err(A::Error::custom(format!("`{key}` names a field given before")));
        }
        match key {
            Cow::Borrowed(key) => seed.deserialize(BorrowedStrDeserializer::new(key)),
            Cow::Owned(key) => seed.deserialize(StringDeserializer::new(key)),
        }
        .map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(Typed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A mapping key read as a string, as a document tree reads it, borrowed
/// from the text where the parser allows.
struct KeyText;

impl<'de> DeserializeSeed<'de> for KeyText {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyText {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value.to_string()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value))
    }
}

/// Passes each value on unchanged and wraps what leads to nested values.
impl<'de, V: Visitor<'de>> Visitor<'de> for Typed<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(formatter)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<V::Value, E> {
        self.0.visit_bool(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<V::Value, E> {
        self.0.visit_i64(value)
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<V::Value, E> {
        self.0.visit_i128(value)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<V::Value, E> {
        self.0.visit_u64(value)
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<V::Value, E> {
        self.0.visit_u128(value)
    }

    /// Gives up on `.inf` and `.nan`, which a tree stores as null.
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<V::Value, E> {
        if !value.is_finite() {
            return Err(E::custom("a number that is not finite"));
        }
        self.0.visit_f64(value)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<V::Value, E> {
        self.0.visit_str(value)
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<V::Value, E> {
        self.0.visit_borrowed_str(value)
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<V::Value, E> {
        self.0.visit_string(value)
    }

    fn visit_bytes<E: de::Error>(self, value: &[u8]) -> Result<V::Value, E> {
        self.0.visit_bytes(value)
    }

    fn visit_byte_buf<E: de::Error>(self, value: Vec<u8>) -> Result<V::Value, E> {
        self.0.visit_byte_buf(value)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(Typed(deserializer))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(Typed(deserializer))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(Typed(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(TypedMap::new(map))
    }

    /// Rejects a tagged YAML value (`!tag`), as a document tree does.
    fn visit_enum<A: EnumAccess<'de>>(self, _data: A) -> Result<V::Value, A::Error> {
        Err(A::Error::invalid_type(Unexpected::Enum, &self))
    }
}
