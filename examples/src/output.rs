//! What the CLI prints: lines on standard output (JSON for scripts), and a quiet stop
//! when the reader of a pipe has had enough.

use quiver_sdk::text::json_safe;
use std::io::Write;

/// Standard output was closed by its reader (a broken pipe): stop quietly, like `cat`.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output is closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Prints one line on standard output; [`StdoutClosed`] once nobody reads it.
pub fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        other => Ok(other?),
    }
}

/// Prints one JSON object as a line, with the characters a terminal would act on
/// escaped (the same JSON value).
pub fn say_json(value: &serde_json::Value) -> anyhow::Result<()> {
    say(&json_safe(&value.to_string()))
}
