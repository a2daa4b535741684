//! The fenced code blocks of a Markdown file, with the `readme-test`
//! marker that may stand on the last non-blank line before one:
//!
//! ```text
//! <!-- readme-test: skip (why this block is not run) -->
//! ```
//!
//! Used by the tests that hold README.md to what it shows.

/// One fenced block.
#[derive(Debug, Clone)]
pub struct Block {
    /// The info string after the opening fence (`sh`, `text`, ...), or "".
    pub lang: String,
    /// The lines between the fences, each ending with '\n'.
    pub code: String,
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The text inside `readme-test: ...` on the line before the block.
    pub marker: Option<String>,
}

/// Every fenced block of `text`, in order. Errors name the line of a fence
/// that is never closed or of a marker that no block follows.
pub fn fenced_blocks(text: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    let mut marker: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let trimmed = line.trim();
        if let Some(block) = open.as_mut() {
            if trimmed == "```" {
                blocks.extend(open.take());
            } else {
                block.code.push_str(line);
                block.code.push('\n');
            }
            continue;
        }
        if let Some(lang) = trimmed.strip_prefix("```") {
            open = Some(Block {
                lang: lang.trim().to_string(),
                code: String::new(),
                line: number,
                marker: marker.take().map(|(_, m)| m),
            });
        } else if let Some(m) = trimmed
            .strip_prefix("<!-- readme-test:")
            .and_then(|rest| rest.strip_suffix("-->"))
        {
            if let Some((at, _)) = marker {
                return Err(format!(
                    "line {at}: a readme-test marker with no block after it"
                ));
            }
            marker = Some((number, m.trim().to_string()));
        } else if !trimmed.is_empty() {
            if let Some((at, _)) = marker {
                return Err(format!(
                    "line {at}: a readme-test marker with no block after it"
                ));
            }
        }
    }
    if let Some(block) = open {
        return Err(format!("line {}: a fence that is never closed", block.line));
    }
    if let Some((at, _)) = marker {
        return Err(format!(
            "line {at}: a readme-test marker with no block after it"
        ));
    }
    Ok(blocks)
}

/// The reason of a `skip (REASON)` marker; `Err` for any other marker or
/// an empty reason.
pub fn skip_reason(marker: &str) -> Result<&str, String> {
    marker
        .strip_prefix("skip")
        .map(str::trim)
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.strip_suffix(')'))
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| format!("unknown readme-test marker {marker:?}: expected `skip (REASON)`"))
}
