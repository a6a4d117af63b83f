//! Text from other people, made safe to print on a terminal or use as a file name.
//!
//! A message body or a file name comes from a friend, or from whoever holds a friend's
//! device: printed raw, control characters can clear the screen or move the cursor to
//! forge lines from someone else, and bidi overrides can make a name read backwards
//! (`gpj.exe` shown as `exe.jpg`). Apps that draw text themselves need none of this; a
//! terminal does.

use std::borrow::Cow;
use std::fmt::Write;

/// Control characters (C0, DEL, C1), bidi controls and line separators: what a terminal
/// may act on instead of showing.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every unsafe character shown as a visible escape such as `\u{1b}`.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    escape_unsafe(text, |out, c| write!(out, "\\u{{{c:x}}}"))
}

/// A line of JSON with every unsafe character that JSON allows raw (C1 controls, bidi
/// controls, line separators) written as a `\uXXXX` escape instead: the same JSON value,
/// safe on a terminal.
pub fn json_safe(line: &str) -> Cow<'_, str> {
    // Every unsafe character is in the Basic Multilingual Plane: one escape.
    escape_unsafe(line, |out, c| write!(out, "\\u{c:04x}"))
}

/// `text` with each unsafe character written by `escape` (given its code point).
fn escape_unsafe(
    text: &str,
    escape: impl Fn(&mut String, u32) -> std::fmt::Result,
) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe_char(c) {
            let _ = escape(&mut out, c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        assert_eq!(terminal_safe("hello"), "hello");
        assert_eq!(
            terminal_safe("hi\x1b[2J\n[bob] fake"),
            "hi\\u{1b}[2J\\u{a}[bob] fake"
        );
        assert_eq!(terminal_safe("gpj\u{202e}.exe"), "gpj\\u{202e}.exe");
        assert_eq!(terminal_safe("\u{9b}31m"), "\\u{9b}31m");
        let json = serde_json::json!({ "text": "a\u{202e}b\u{85}c\x07" }).to_string();
        let safe = json_safe(&json);
        assert!(!safe.chars().any(is_unsafe_char), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["text"], "a\u{202e}b\u{85}c\x07", "the same value");
    }
}
