//! The events of a YAML text, read one at a time from libyaml's parser (the
//! one serde_yaml_ng uses), so no document or event list is built.
//!
//! Events keep only what the fast path reads. Anchors, aliases and tags
//! come out as [`Event::Unsupported`], and the caller then gives up.

use std::borrow::Cow;
use std::mem::MaybeUninit;

/// One parser event. A scalar borrows its value from the text when the
/// text contains it unchanged, as most plain and quoted scalars do.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Event<'a> {
    StreamStart,
    StreamEnd,
    DocumentStart,
    DocumentEnd,
    Scalar { value: Cow<'a, str>, plain: bool },
    SequenceStart,
    SequenceEnd,
    MappingStart,
    MappingEnd,
    /// An alias, or a node with an anchor or a tag.
    Unsupported,
}

/// A syntax error, or an event that libyaml could not deliver.
#[derive(Debug, PartialEq)]
pub(super) struct SyntaxError;

/// libyaml's parser over a text.
pub(super) struct Events<'a> {
    /// Boxed because libyaml keeps a pointer to the parser inside it, so it
    /// must not move. Initialized for as long as `Events` exists.
    parser: Box<MaybeUninit<unsafe_libyaml::yaml_parser_t>>,
    text: &'a str,
    failed: bool,
}

impl<'a> Events<'a> {
    /// Starts parsing `text`. Returns `None` when libyaml cannot allocate
    /// its buffers.
    pub(super) fn new(text: &'a str) -> Option<Self> {
        let mut parser = Box::new(MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
        let raw = parser.as_mut_ptr();
        // SAFETY: `raw` points to memory that lives in the box. Initialize
        // fills it in, and the input is `text`, which outlives the parser
        // because `Events` borrows it for 'a.
        unsafe {
            if unsafe_libyaml::yaml_parser_initialize(raw).fail {
                return None;
            }
            unsafe_libyaml::yaml_parser_set_encoding(raw, unsafe_libyaml::YAML_UTF8_ENCODING);
            unsafe_libyaml::yaml_parser_set_input_string(raw, text.as_ptr(), text.len() as u64);
        }
        Some(Events { parser, text, failed: false })
    }

    /// Reads the next event. After an error, every later call fails too,
    /// because libyaml must not be called again.
    pub(super) fn next(&mut self) -> Result<Event<'a>, SyntaxError> {
        if self.failed {
            return Err(SyntaxError);
        }
        let mut event = MaybeUninit::<unsafe_libyaml::yaml_event_t>::uninit();
        let raw_event = event.as_mut_ptr();

        // SAFETY: the parser was initialized in `new`. A successful parse
        // initializes `event`, which is read before `yaml_event_delete`
        // frees what it owns.
        unsafe {
            if unsafe_libyaml::yaml_parser_parse(self.parser.as_mut_ptr(), raw_event).fail {
                self.failed = true;
                return Err(SyntaxError);
            }
            let converted = self.convert(&*raw_event);
            unsafe_libyaml::yaml_event_delete(raw_event);
            converted
        }
    }

    /// Turns a libyaml event into an [`Event`].
    ///
    /// # Safety
    /// `event` must come from a successful `yaml_parser_parse` and not yet
    /// be deleted.
    unsafe fn convert(&self, event: &unsafe_libyaml::yaml_event_t) -> Result<Event<'a>, SyntaxError> {
        // SAFETY (all union reads): each arm reads the member that libyaml
        // fills in for that event type.
        let converted = match event.type_ {
            unsafe_libyaml::YAML_STREAM_START_EVENT => Event::StreamStart,
            unsafe_libyaml::YAML_STREAM_END_EVENT => Event::StreamEnd,
            unsafe_libyaml::YAML_DOCUMENT_START_EVENT => Event::DocumentStart,
            unsafe_libyaml::YAML_DOCUMENT_END_EVENT => Event::DocumentEnd,
            unsafe_libyaml::YAML_SEQUENCE_START_EVENT => {
                let start = unsafe { event.data.sequence_start };
                plain_node(start.anchor, start.tag, Event::SequenceStart)
            }
            unsafe_libyaml::YAML_SEQUENCE_END_EVENT => Event::SequenceEnd,
            unsafe_libyaml::YAML_MAPPING_START_EVENT => {
                let start = unsafe { event.data.mapping_start };
                plain_node(start.anchor, start.tag, Event::MappingStart)
            }
            unsafe_libyaml::YAML_MAPPING_END_EVENT => Event::MappingEnd,
            unsafe_libyaml::YAML_SCALAR_EVENT => {
                let scalar = unsafe { event.data.scalar };
                if !scalar.anchor.is_null() || !scalar.tag.is_null() {
                    return Ok(Event::Unsupported);
                }
                // SAFETY: libyaml owns `length` bytes at `value` until the
                // event is deleted, and they are copied or compared here.
                let value = unsafe { std::slice::from_raw_parts(scalar.value, scalar.length as usize) };
                let quoted = match scalar.style {
                    unsafe_libyaml::YAML_PLAIN_SCALAR_STYLE => false,
                    unsafe_libyaml::YAML_SINGLE_QUOTED_SCALAR_STYLE | unsafe_libyaml::YAML_DOUBLE_QUOTED_SCALAR_STYLE => true,
                    _ => return Ok(Event::Scalar { value: owned(value)?, plain: false }),
                };
                let value = match self.source_of(event, value, quoted) {
                    Some(source) => Cow::Borrowed(source),
                    None => owned(value)?,
                };
                Event::Scalar { value, plain: !quoted }
            }
            _ => Event::Unsupported,
        };
        Ok(converted)
    }

    /// Returns the text of a scalar as it appears in the input, without its
    /// quotes, when it equals the parsed `value`: a scalar without escapes
    /// or line breaks.
    fn source_of(&self, event: &unsafe_libyaml::yaml_event_t, value: &[u8], quoted: bool) -> Option<&'a str> {
        let quote = usize::from(quoted);
        let start = (event.start_mark.index as usize).checked_add(quote)?;
        let end = (event.end_mark.index as usize).checked_sub(quote)?;
        let source = self.text.get(start..end)?;
        (source.as_bytes() == value).then_some(source)
    }
}

impl Drop for Events<'_> {
    fn drop(&mut self) {
        // SAFETY: the parser was initialized in `new` and is deleted once.
        unsafe { unsafe_libyaml::yaml_parser_delete(self.parser.as_mut_ptr()) }
    }
}

/// Returns `event` for a collection without an anchor or a tag.
fn plain_node<'a>(anchor: *mut u8, tag: *mut u8, event: Event<'a>) -> Event<'a> {
    if anchor.is_null() && tag.is_null() {
        event
    } else {
        Event::Unsupported
    }
}

fn owned(value: &[u8]) -> Result<Cow<'static, str>, SyntaxError> {
    let text = std::str::from_utf8(value).map_err(|_| SyntaxError)?;
    Ok(Cow::Owned(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Vec<Event<'_>> {
        let mut events = Events::new(text).expect("parser");
        let mut all = Vec::new();
        loop {
            let event = events.next().expect("valid YAML");
            let end = event == Event::StreamEnd;
            all.push(event);
            if end {
                return all;
            }
        }
    }

    fn scalar(value: &str, plain: bool) -> Event<'_> {
        Event::Scalar { value: Cow::Borrowed(value), plain }
    }

    #[test]
    fn block_and_flow_collections() {
        let parsed = events("a: [1, 'x']\nb: { c: \"é\" }\n");

        assert_eq!(
            parsed,
            [
                Event::StreamStart,
                Event::DocumentStart,
                Event::MappingStart,
                scalar("a", true),
                Event::SequenceStart,
                scalar("1", true),
                scalar("x", false),
                Event::SequenceEnd,
                scalar("b", true),
                Event::MappingStart,
                scalar("c", true),
                scalar("é", false),
                Event::MappingEnd,
                Event::MappingEnd,
                Event::DocumentEnd,
                Event::StreamEnd,
            ]
        );
    }

    #[test]
    fn scalars_borrow_unless_changed() {
        let parsed = events("- plain text\n- 'it''s'\n- \"tab\\t\"\n- |\n  block\n- two\n  lines\n");
        let values: Vec<(&str, bool)> = parsed
            .iter()
            .filter_map(|event| match event {
                Event::Scalar { value, .. } => Some((value.as_ref(), matches!(value, Cow::Borrowed(_)))),
                _ => None,
            })
            .collect();

        assert_eq!(values, [("plain text", true), ("it's", false), ("tab\t", false), ("block\n", false), ("two lines", false)]);
    }

    #[test]
    fn anchors_aliases_and_tags_are_unsupported() {
        for text in ["a: &x 1\nb: *x\n", "a: !tag 1\n", "a: &x [1]\n", "a: !!map { b: 1 }\n"] {
            assert!(events(text).contains(&Event::Unsupported), "{text:?}");
        }
    }

    #[test]
    fn syntax_error_stays_an_error() {
        let mut events = Events::new("a: [1, 2\n").expect("parser");
        let mut result = Ok(Event::StreamStart);
        for _ in 0..10 {
            result = events.next();
            if result.is_err() {
                break;
            }
        }

        assert_eq!(result, Err(SyntaxError));
        assert_eq!(events.next(), Err(SyntaxError), "no call after an error");
    }
}
