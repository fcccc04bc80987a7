//! The subset of RFC 9651 structured fields that rate-limit headers use: a List of Items with
//! Parameters. Inner lists, dates and display strings are rejected (the whole field is then
//! malformed, as RFC 9651 requires of any parse failure).

#[derive(Debug, Clone, PartialEq)]
pub(super) enum BareItem {
    Integer(i64),
    Decimal(f64),
    String(String),
    Token(String),
    ByteSequence(String),
    Boolean(bool),
}

impl BareItem {
    pub(super) fn as_non_negative(&self) -> Option<u64> {
        match *self {
            Self::Integer(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }

    pub(super) fn as_name(&self) -> Option<&str> {
        match self {
            Self::String(s) | Self::Token(s) => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Item {
    pub(super) bare: BareItem,
    pub(super) params: Vec<(String, BareItem)>,
}

impl Item {
    pub(super) fn param(&self, key: &str) -> Option<&BareItem> {
        // RFC 9651: a repeated key keeps its last value.
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// Largest integer a structured field may carry.
pub(super) const MAX_INTEGER: u64 = 999_999_999_999_999;

pub(super) fn parse_list(input: &[u8]) -> Result<Vec<Item>, &'static str> {
    let mut p = Parser { input, pos: 0 };
    p.skip(|b| b == b' ');
    let mut items = Vec::new();
    if p.at_end() {
        return Ok(items);
    }
    loop {
        items.push(p.item()?);
        p.skip(|b| b == b' ' || b == b'\t');
        if p.at_end() {
            return Ok(items);
        }
        if p.next() != Some(b',') {
            return Err("expected a comma between list members");
        }
        p.skip(|b| b == b' ' || b == b'\t');
        if p.at_end() {
            return Err("trailing comma");
        }
    }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn skip(&mut self, mut pred: impl FnMut(u8) -> bool) {
        while self.peek().is_some_and(&mut pred) {
            self.pos += 1;
        }
    }

    fn item(&mut self) -> Result<Item, &'static str> {
        let bare = self.bare_item()?;
        let params = self.parameters()?;
        Ok(Item { bare, params })
    }

    fn parameters(&mut self) -> Result<Vec<(String, BareItem)>, &'static str> {
        let mut params = Vec::new();
        while self.peek() == Some(b';') {
            self.pos += 1;
            self.skip(|b| b == b' ');
            let key = self.key()?;
            let value = if self.peek() == Some(b'=') {
                self.pos += 1;
                self.bare_item()?
            } else {
                BareItem::Boolean(true)
            };
            params.push((key, value));
        }
        Ok(params)
    }

    fn key(&mut self) -> Result<String, &'static str> {
        match self.peek() {
            Some(b) if b.is_ascii_lowercase() || b == b'*' => {}
            _ => return Err("a parameter key must start with a lowercase letter or '*'"),
        }
        let start = self.pos;
        self.skip(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
        });
        Ok(ascii(&self.input[start..self.pos]))
    }

    fn bare_item(&mut self) -> Result<BareItem, &'static str> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string().map(BareItem::String),
            Some(b':') => self.byte_sequence().map(BareItem::ByteSequence),
            Some(b'?') => self.boolean().map(BareItem::Boolean),
            Some(b) if b.is_ascii_alphabetic() || b == b'*' => Ok(BareItem::Token(self.token())),
            Some(b'(') => Err("inner lists are not supported"),
            _ => Err("expected an item"),
        }
    }

    fn number(&mut self) -> Result<BareItem, &'static str> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let start = self.pos;
        self.skip(|b| b.is_ascii_digit());
        let int_digits = &self.input[start..self.pos];
        if int_digits.is_empty() {
            return Err("expected digits");
        }
        if self.peek() != Some(b'.') {
            if int_digits.len() > 15 {
                return Err("integer too long");
            }
            let n = digits_value(int_digits);
            return Ok(BareItem::Integer(if negative { -n } else { n }));
        }
        self.pos += 1;
        let frac_start = self.pos;
        self.skip(|b| b.is_ascii_digit());
        let frac_digits = &self.input[frac_start..self.pos];
        if int_digits.len() > 12 || frac_digits.is_empty() || frac_digits.len() > 3 {
            return Err("malformed decimal");
        }
        let value = digits_value(int_digits) as f64
            + digits_value(frac_digits) as f64 / 10f64.powi(frac_digits.len() as i32);
        Ok(BareItem::Decimal(if negative { -value } else { value }))
    }

    fn string(&mut self) -> Result<String, &'static str> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err("unterminated string"),
                Some(b'"') => return Ok(out),
                Some(b'\\') => match self.next() {
                    Some(c @ (b'"' | b'\\')) => out.push(char::from(c)),
                    _ => return Err("bad escape in string"),
                },
                Some(c @ 0x20..=0x7e) => out.push(char::from(c)),
                Some(_) => return Err("string holds a character that is not visible ASCII"),
            }
        }
    }

    fn token(&mut self) -> String {
        let start = self.pos;
        self.pos += 1;
        self.skip(|b| is_tchar(b) || b == b':' || b == b'/');
        ascii(&self.input[start..self.pos])
    }

    fn byte_sequence(&mut self) -> Result<String, &'static str> {
        self.pos += 1;
        let start = self.pos;
        self.skip(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        let body = ascii(&self.input[start..self.pos]);
        if self.next() != Some(b':') {
            return Err("unterminated byte sequence");
        }
        Ok(body)
    }

    fn boolean(&mut self) -> Result<bool, &'static str> {
        self.pos += 1;
        match self.next() {
            Some(b'1') => Ok(true),
            Some(b'0') => Ok(false),
            _ => Err("malformed boolean"),
        }
    }
}

fn digits_value(digits: &[u8]) -> i64 {
    digits
        .iter()
        .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
}

fn ascii(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` can be written as a structured-field string.
pub(super) fn is_valid_string(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// Whether `s` is valid base64 text for a byte sequence.
pub(super) fn is_valid_byte_sequence(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

pub(super) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

pub(super) fn write_integer_param(out: &mut String, key: &str, value: u64) {
    use std::fmt::Write as _;
    let _ = write!(out, ";{key}={}", value.min(MAX_INTEGER));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_items_with_parameters() {
        let items = parse_list(br#""burst";q=100;w=60, daily;q=1000;w=86400;pk=:YWJj:"#).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].bare, BareItem::String("burst".into()));
        assert_eq!(items[0].param("q"), Some(&BareItem::Integer(100)));
        assert_eq!(items[1].bare, BareItem::Token("daily".into()));
        assert_eq!(
            items[1].param("pk"),
            Some(&BareItem::ByteSequence("YWJj".into()))
        );
    }

    #[test]
    fn rejects_malformed_lists() {
        for bad in [
            &b"a,"[..],
            b"a;Q=1",
            b"\"open",
            b"a;q=1234567890123456",
            b"(a b)",
            b"a b",
            b"a;q=?2",
            b"\"\\x\"",
        ] {
            assert!(
                parse_list(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn other_value_types() {
        let items = parse_list(b"a;x=?0;y=-1.5;z").unwrap();
        assert_eq!(items[0].param("x"), Some(&BareItem::Boolean(false)));
        assert_eq!(items[0].param("y"), Some(&BareItem::Decimal(-1.5)));
        assert_eq!(items[0].param("z"), Some(&BareItem::Boolean(true)));
    }
}
