//! Small JSON writing helpers for the hot page path (no intermediate `serde_json::Value` trees).

use std::fmt::Write as _;

/// The bytes a JSON string literal must escape: control characters, the quote and the backslash.
const ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// True when `s` holds a byte a JSON string literal must escape. A table lookup per byte:
/// values are mostly short, and for them this beat both a `match` per byte and an
/// eight-bytes-at-a-time check (callgrind, page of 10 attributes of 12 characters).
fn needs_escape(s: &[u8]) -> bool {
    s.iter().any(|&b| ESCAPE[b as usize])
}

/// Appends `s` as a JSON string literal.
pub fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Almost every value needs no escape: a table lookup per byte decides and the string is
    // copied whole; a `match` per byte with piecewise copies cost 3-4x more on the page path.
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::{needs_escape, write_str};

    #[test]
    fn escape_check_finds_every_special_byte_at_every_position() {
        for len in 1..20 {
            for pos in 0..len {
                for special in [0u8, 0x1f, b'"', b'\\', b'\n'] {
                    let mut s = vec![b'a'; len];
                    s[pos] = special;
                    assert!(needs_escape(&s), "{special:#x} at {pos} of {len}");
                }
                let mut s = vec![b'a'; len];
                s[pos] = 0x7f;
                assert!(!needs_escape(&s));
            }
        }
        assert!(!needs_escape("ééééé !#$%&'()*+,-./[]^_`{|}~".as_bytes()));
    }

    #[test]
    fn strings_are_escaped_exactly_as_json_requires() {
        let mut out = String::new();
        write_str(&mut out, "plain é /");
        write_str(&mut out, "a\"b\\c\n\r\t\u{1}\u{7f}");
        assert_eq!(out, r#""plain é /""a\"b\\c\n\r\t\u0001"#.to_owned() + "\u{7f}\"");
    }
}
