//! The rate-limit fields as RFC 9651 structured-field Lists, through the `sfv` crate: the whole
//! grammar is accepted (inner lists, dates, display strings, any parameter), byte sequences
//! must be valid base64, and anything malformed fails the whole field, as RFC 9651 requires.
//!
//! What the rate-limit fields need from a List member is reduced to [`Member`]: a name (a
//! String or a Token) and its parameters. A member of another shape (an inner list, a number as
//! the name) is skipped by the callers, not an error: the draft tells recipients to ignore
//! members they do not understand.

use sfv::{BareItem, Integer, KeyRef, ListEntry, ListSerializer, Parser, StringRef};

/// Largest integer a structured field may carry.
pub(super) const MAX_INTEGER: u64 = 999_999_999_999_999;

/// One List member that is an Item named by a String or a Token.
#[derive(Debug)]
pub(super) struct Member {
    pub(super) name: String,
    params: sfv::Parameters,
}

impl Member {
    /// A non-negative Integer parameter.
    pub(super) fn non_negative(&self, key: &str) -> Option<u64> {
        let value = self.params.get(key)?.as_integer()?;
        u64::try_from(i64::from(value)).ok()
    }

    /// A String or Token parameter.
    pub(super) fn text(&self, key: &str) -> Option<String> {
        match self.params.get(key)? {
            BareItem::String(s) => Some(s.as_str().to_owned()),
            BareItem::Token(t) => Some(t.as_str().to_owned()),
            _ => None,
        }
    }

    /// A Byte Sequence parameter, decoded.
    pub(super) fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.params.get(key)?.as_byte_sequence().map(<[u8]>::to_vec)
    }
}

/// Parses `input` as a List; the members that are named Items, in order.
pub(super) fn parse_list(input: &[u8]) -> Result<Vec<Member>, &'static str> {
    let list: sfv::List = Parser::new(input)
        .parse()
        .map_err(|_| "not a valid structured-field list")?;
    Ok(list
        .into_iter()
        .filter_map(|entry| match entry {
            ListEntry::Item(item) => {
                let name = match item.bare_item {
                    BareItem::String(s) => s.as_str().to_owned(),
                    BareItem::Token(t) => t.as_str().to_owned(),
                    _ => return None,
                };
                Some(Member {
                    name,
                    params: item.params,
                })
            }
            ListEntry::InnerList(_) => None,
        })
        .collect())
}

/// Whether `s` can be written as a structured-field String (visible ASCII and spaces).
pub(super) fn is_valid_string(s: &str) -> bool {
    StringRef::from_str(s).is_ok()
}

/// One member to write: a String name and its parameters, in order.
pub(super) struct Writer {
    list: ListSerializer<String>,
}

/// A parameter value to write.
pub(super) enum Param<'a> {
    Integer(u64),
    String(&'a str),
    Bytes(&'a [u8]),
}

impl Writer {
    pub(super) fn new() -> Self {
        Self {
            list: ListSerializer::new(),
        }
    }

    /// Appends a member. Names and strings must have passed [`is_valid_string`]; integers are
    /// clamped to what a structured field can carry.
    pub(super) fn member(&mut self, name: &str, params: &[(&str, Param<'_>)]) {
        let name = StringRef::from_str(name).expect("names are validated on construction");
        let mut item = self.list.bare_item(name);
        for (key, value) in params {
            let key = KeyRef::from_str(key).expect("parameter keys are constants");
            item = match *value {
                Param::Integer(n) => {
                    let n = Integer::try_from(n.min(MAX_INTEGER)).expect("clamped to the range");
                    item.parameter(key, n)
                }
                Param::String(s) => item.parameter(
                    key,
                    StringRef::from_str(s).expect("strings are validated on construction"),
                ),
                Param::Bytes(b) => item.parameter(key, b),
            };
        }
    }

    /// The field value; empty for no member.
    pub(super) fn finish(self) -> String {
        self.list.finish().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_items_with_parameters() {
        let items = parse_list(br#""burst";q=100;w=60, daily;q=1000;w=86400;pk=:YWJj:"#).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].name, "burst");
        assert_eq!(items[0].non_negative("q"), Some(100));
        assert_eq!(items[1].name, "daily");
        assert_eq!(items[1].bytes("pk").as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn the_whole_grammar_is_accepted_and_odd_members_skipped() {
        // An inner list, a number, a date parameter and a display-string parameter: valid
        // RFC 9651, so the field parses; only the named items are kept.
        let items =
            parse_list(br#"(a b);q=1, 7;q=2, "day";q=3;exp=@1659578233;note=%"f%c3%bcr""#).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].name, "day");
        assert_eq!(items[0].non_negative("q"), Some(3));
    }

    #[test]
    fn rejects_malformed_lists() {
        for bad in [
            &b"a,"[..],
            b"a;Q=1",
            b"\"open",
            b"a;q=1234567890123456",
            b"a b",
            b"a;q=?2",
            b"\"\\x\"",
            b"a;pk=:not base64:",
            b"a;pk=:Y=Q=:",
            b"a;d=@1.5",
        ] {
            assert!(
                parse_list(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn writes_what_it_reads() {
        let mut writer = Writer::new();
        writer.member(
            r#"a"b\c"#,
            &[
                ("q", Param::Integer(u64::MAX)),
                ("qu", Param::String("requests")),
                ("pk", Param::Bytes(b"\x00\xff")),
            ],
        );
        writer.member("x", &[]);
        let value = writer.finish();
        assert_eq!(
            value,
            r#""a\"b\\c";q=999999999999999;qu="requests";pk=:AP8=:, "x""#
        );
        let back = parse_list(value.as_bytes()).unwrap();
        assert_eq!(back[0].name, r#"a"b\c"#);
        assert_eq!(back[0].bytes("pk").as_deref(), Some(&b"\x00\xff"[..]));
        assert_eq!(back[1].name, "x");
    }
}
