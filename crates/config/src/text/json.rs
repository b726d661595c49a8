//! A fast path for config files in JSON: serde_json reads them faster than
//! the YAML parser, which otherwise reads JSON as YAML.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `text` as JSON when it is a JSON object without repeated keys.
/// Returns `None` for anything else, which the YAML parser then reads and
/// reports on, so errors read the same for JSON and YAML files. serde_json
/// alone would keep the last of two repeated keys without an error.
pub(super) fn parse_object(text: &str) -> Option<Value> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    parse_json(text.as_bytes()).ok()
}

/// Parses JSON `bytes` into a value, rejecting an object with a repeated
/// key, which serde_json alone would accept with the last value.
pub fn parse_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = UniqueKeys.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Deserializes a JSON value, failing on an object with a repeated key.
struct UniqueKeys;

impl<'de> DeserializeSeed<'de> for UniqueKeys {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut list = Vec::with_capacity(items.size_hint().unwrap_or(0));
        while let Some(item) = items.next_element_seed(UniqueKeys)? {
            list.push(item);
        }
        Ok(Value::Array(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = entries.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            let value = entries.next_value_seed(UniqueKeys)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_object;

    #[test]
    fn object_parses() {
        let value = parse_object(" {\"resources\": [{\"name\": \"a\", \"port\": 80, \"weight\": 0.5}]}").expect("valid JSON");

        assert_eq!(value["resources"][0]["name"], "a");
        assert_eq!(value["resources"][0]["port"], 80);
        assert_eq!(value["resources"][0]["weight"], 0.5);
    }

    #[test]
    fn repeated_key_is_left_to_yaml() {
        assert_eq!(parse_object("{\"resources\": [{\"name\": \"a\", \"name\": \"b\"}]}"), None);
    }

    #[test]
    fn repeated_key_is_an_error() {
        let error = super::parse_json(br#"{"a": {"b": 1, "b": 2}}"#).unwrap_err().to_string();

        assert!(error.contains("duplicate key `b`"), "{error}");
        assert_eq!(super::parse_json(br#"{"a": [{"b": 1}, {"b": 2}]}"#).unwrap()["a"][1]["b"], 2);
    }

    #[test]
    fn yaml_and_bad_json_are_left_to_yaml() {
        assert_eq!(parse_object("resources: []"), None);
        assert_eq!(parse_object("{\"resources\": [}"), None);
        assert_eq!(parse_object("{\"resources\": []} trailing"), None);
    }
}
