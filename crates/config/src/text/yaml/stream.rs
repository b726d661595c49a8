//! A serde deserializer that reads YAML events as it goes, for the fast
//! path. A plain scalar becomes null, a boolean, an integer, a float or a
//! string as serde_yaml_ng's document tree would make it. Where this
//! deserializer is unsure (a YAML feature or a number form it does not
//! read), it fails, and the document path decides.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::events::{Event, Events};

/// A failure of the fast path. The document path finds and reports the
/// actual problem, so no detail is kept.
#[derive(Debug)]
pub(super) struct GiveUp;

impl fmt::Display for GiveUp {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("left to the document path")
    }
}

impl std::error::Error for GiveUp {}

impl de::Error for GiveUp {
    fn custom<T: fmt::Display>(_message: T) -> Self {
        GiveUp
    }
}

/// Nested sequences and mappings the stream reads before it gives up. It
/// is below serde_yaml_ng's limit (128), so a document that the fast path
/// reads is never too deep for the document path, and a crafted file cannot
/// exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Deserializes the one document of a YAML text.
pub(super) struct Stream<'a> {
    events: Events<'a>,
    peeked: Option<Event<'a>>,
    /// Sequences and mappings open around the current node.
    depth: usize,
}

impl<'a> Stream<'a> {
    /// Starts reading `text` at its document's root node.
    pub(super) fn new(text: &'a str) -> Result<Self, GiveUp> {
        let mut stream = Stream { events: Events::new(text).ok_or(GiveUp)?, peeked: None, depth: 0 };
        stream.expect(Event::StreamStart)?;
        stream.expect(Event::DocumentStart)?;
        Ok(stream)
    }

    /// Checks that the document ended and that no second one follows.
    pub(super) fn finish(mut self) -> Result<(), GiveUp> {
        self.expect(Event::DocumentEnd)?;
        self.expect(Event::StreamEnd)
    }

    fn next(&mut self) -> Result<Event<'a>, GiveUp> {
        match self.peeked.take() {
            Some(event) => Ok(event),
            None => self.events.next().map_err(|_| GiveUp),
        }
    }

    fn peek(&mut self) -> Result<&Event<'a>, GiveUp> {
        if self.peeked.is_none() {
            self.peeked = Some(self.events.next().map_err(|_| GiveUp)?);
        }
        Ok(self.peeked.as_ref().expect("filled above"))
    }

    /// Reads the children of a sequence or mapping that just opened with
    /// `visit`, then its `end`. Gives up beyond [`MAX_DEPTH`].
    fn collection<T>(&mut self, end: Event<'static>, visit: impl FnOnce(Children<'_, 'a>) -> Result<T, GiveUp>) -> Result<T, GiveUp> {
        if self.depth >= MAX_DEPTH {
            return Err(GiveUp);
        }
        self.depth += 1;

        let value = visit(Children { stream: self, end: end.clone() })?;
        self.expect(end)?;
        self.depth -= 1;
        Ok(value)
    }

    fn expect(&mut self, expected: Event<'static>) -> Result<(), GiveUp> {
        if self.next()? == expected {
            Ok(())
        } else {
            Err(GiveUp)
        }
    }
}

impl<'de> de::Deserializer<'de> for &mut Stream<'de> {
    type Error = GiveUp;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        match self.next()? {
            Event::Scalar { value, plain: true } => visit_plain(value, visitor),
            Event::Scalar { value, plain: false } => visit_text(value, visitor),
            Event::SequenceStart => self.collection(Event::SequenceEnd, |children| visitor.visit_seq(children)),
            Event::MappingStart => self.collection(Event::MappingEnd, |children| visitor.visit_map(children)),
            _ => Err(GiveUp),
        }
    }

    /// Reads a null scalar as `None`, and anything else as `Some`.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        let null = matches!(self.peek()?, Event::Scalar { value, plain: true } if is_null(value));
        if null {
            self.next()?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    /// Reads a scalar as its text, whatever it resolves to, as a document
    /// tree reads a mapping key.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        match self.next()? {
            Event::Scalar { value, .. } => visit_text(value, visitor),
            _ => Err(GiveUp),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.deserialize_str(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// The items of a sequence or the keys and values of a mapping, up to
/// `end`, which the caller reads.
struct Children<'s, 'de> {
    stream: &'s mut Stream<'de>,
    end: Event<'static>,
}

impl<'de> Children<'_, 'de> {
    /// Reads the next child with `seed`; `None` at the end.
    fn next<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, GiveUp> {
        if *self.stream.peek()? == self.end {
            return Ok(None);
        }
        seed.deserialize(&mut *self.stream).map(Some)
    }
}

impl<'de> SeqAccess<'de> for Children<'_, 'de> {
    type Error = GiveUp;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, GiveUp> {
        self.next(seed)
    }
}

impl<'de> MapAccess<'de> for Children<'_, 'de> {
    type Error = GiveUp;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, GiveUp> {
        self.next(seed)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, GiveUp> {
        seed.deserialize(&mut *self.stream)
    }
}

fn visit_text<'de, V: Visitor<'de>>(value: Cow<'de, str>, visitor: V) -> Result<V::Value, GiveUp> {
    match value {
        Cow::Borrowed(text) => visitor.visit_borrowed_str(text),
        Cow::Owned(text) => visitor.visit_string(text),
    }
}

/// Resolves a plain scalar as YAML 1.2's core schema does in serde_yaml_ng:
/// null, then booleans, then integers, then finite floats, else a string.
fn visit_plain<'de, V: Visitor<'de>>(value: Cow<'de, str>, visitor: V) -> Result<V::Value, GiveUp> {
    let text = value.as_ref();
    if is_null(text) {
        return visitor.visit_unit();
    }
    if let Some(boolean) = boolean(text) {
        return visitor.visit_bool(boolean);
    }
    match number(text)? {
        Some(Number::Unsigned(number)) => visitor.visit_u64(number),
        Some(Number::Signed(number)) => visitor.visit_i64(number),
        Some(Number::Float(number)) => visitor.visit_f64(number),
        None => visit_text(value, visitor),
    }
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn boolean(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

#[derive(Debug, PartialEq)]
enum Number {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

/// Reads a decimal integer or a finite float; `None` for text that is a
/// string. Gives up on the forms that are rare in config and need more
/// care: a leading `+`, hexadecimal, octal and binary integers, integers
/// beyond 64 bits, and `.inf` and `.nan`.
fn number(text: &str) -> Result<Option<Number>, GiveUp> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let rare = text.starts_with('+')
        || ["0x", "0o", "0b"].iter().any(|prefix| digits.starts_with(prefix))
        || matches!(digits, ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN");
    if rare {
        return Err(GiveUp);
    }

    if !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()) {
        // A leading zero followed by more digits makes a string in YAML 1.2.
        if digits.len() > 1 && digits.starts_with('0') {
            return Ok(None);
        }
        let number = if text.starts_with('-') {
            text.parse().map(Number::Signed)
        } else {
            text.parse().map(Number::Unsigned)
        };
        return number.map(Some).map_err(|_| GiveUp);
    }

    match text.parse::<f64>() {
        Ok(float) if float.is_finite() => Ok(Some(Number::Float(float))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_resolve_as_a_document_tree() {
        let cases = [
            ("8080", Some(Number::Unsigned(8080))),
            ("0", Some(Number::Unsigned(0))),
            ("-3", Some(Number::Signed(-3))),
            ("-0", Some(Number::Signed(0))),
            ("1.5", Some(Number::Float(1.5))),
            ("1e3", Some(Number::Float(1000.0))),
            (".5", Some(Number::Float(0.5))),
            ("0123", None),
            ("-007", None),
            ("1.5s", None),
            ("127.0.0.1", None),
            ("inf", None),
            ("NaN", None),
            ("1_000", None),
            ("v1", None),
        ];
        for (text, expected) in cases {
            assert_eq!(number(text).ok(), Some(expected), "{text:?}");
        }
    }

    #[test]
    fn rare_number_forms_give_up() {
        for text in ["+1", "0x1f", "-0x1f", "0o17", "0b11", ".inf", "-.inf", ".nan", "18446744073709551616", "-9223372036854775809"] {
            assert!(number(text).is_err(), "{text:?}");
        }
    }

    /// Reads `text` as a JSON value, through this stream and through
    /// serde_yaml_ng's document tree.
    fn both(text: &str) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
        let streamed = Stream::new(text).ok().and_then(|mut stream| {
            let value = serde::Deserialize::deserialize(&mut stream).ok()?;
            stream.finish().ok()?;
            Some(value)
        });
        let document = serde_yaml_ng::from_str(text).ok();
        (streamed, document)
    }

    #[test]
    fn documents_match_serde_yaml_ng() {
        let texts = [
            "a: 1\nb: [true, False, ~, null, '', x]\nc: { d: -2, e: 2.5, f: \"q\" }\n",
            "- 10.0.0.1\n- 1.5s\n- '8080'\n- 0123\n- |\n  line\n- >\n  folded\n  text\n",
            "key:\nother: yes\n",
            "name: \"tab\\tand \\u00e9\"\nlong: first\n  second\n",
            "[]\n",
            "{}\n",
        ];
        for text in texts {
            let (streamed, document) = both(text);

            assert!(streamed.is_some(), "the stream reads {text:?}");
            assert_eq!(streamed, document, "{text:?}");
        }
    }

    #[test]
    fn unsupported_documents_give_up() {
        for text in ["a: &x 1\nb: *x\n", "a: !tag 1\n", "a: 0x10\n", "---\na: 1\n---\nb: 2\n", "a: [1\n", ""] {
            assert_eq!(both(text).0, None, "{text:?}");
        }
    }

    #[test]
    fn deep_nesting_gives_up() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));

        assert!(both(&nested(MAX_DEPTH)).0.is_some(), "at the limit");
        assert_eq!(both(&nested(MAX_DEPTH + 1)).0, None, "beyond the limit");
        assert_eq!(both(&nested(100_000)).0, None, "far beyond, without a stack overflow");
    }
}
