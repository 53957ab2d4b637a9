//! Positions in a document as the protocol gives them (line and UTF-16
//! column, counted from zero) and as the front end does (byte offsets),
//! and `file://` URIs as paths.

use std::path::PathBuf;

use lsp_types::{Position, Range, Uri};

use crate::diagnostics::floor_char;

/// The start of every line of a text, to turn byte offsets into positions
/// and back.
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    /// The lines of `text` (a line ends at `\n`).
    pub fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    /// The position of byte `offset` of `text` (clamped to the text, and
    /// down to a character's start).
    pub fn position(&self, text: &str, offset: usize) -> Position {
        let offset = floor_char(text, offset);
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let column = text[self.starts[line]..offset].encode_utf16().count();
        Position::new(line as u32, column as u32)
    }

    /// The range of bytes `start..end` of `text`.
    pub fn range(&self, text: &str, start: usize, end: usize) -> Range {
        Range::new(self.position(text, start), self.position(text, end))
    }

    /// The byte offset of `position` in `text`: past the end of its line
    /// goes to the line's end, past the last line to the text's end.
    pub fn offset(&self, text: &str, position: Position) -> usize {
        let Some(&start) = self.starts.get(position.line as usize) else {
            return text.len();
        };
        let end = self
            .starts
            .get(position.line as usize + 1)
            .map_or(text.len(), |&next| next - 1);
        let mut units = 0;
        for (i, c) in text[start..end].char_indices() {
            if units >= position.character as usize {
                return start + i;
            }
            units += c.len_utf16();
        }
        end
    }
}

/// The path of a `file://` URI, percent-escapes decoded; `None` for
/// another scheme.
pub fn path_of(uri: &Uri) -> Option<PathBuf> {
    let text = uri.as_str();
    let rest = text.strip_prefix("file://")?;
    // `file://host/path` names a host; only the local one is a path here.
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    let mut bytes = Vec::with_capacity(path.len());
    let mut raw = path.bytes();
    while let Some(b) = raw.next() {
        if b == b'%' {
            let hex: Vec<u8> = raw.by_ref().take(2).collect();
            let value = std::str::from_utf8(&hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())?;
            bytes.push(value);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok().map(PathBuf::from)
}

/// The `file://` URI of absolute path `path`, escaped where a URI must be.
pub fn uri_of(path: &std::path::Path) -> Option<Uri> {
    let mut text = String::from("file://");
    for b in path.to_str()?.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            text.push(b as char);
        } else {
            text.push_str(&format!("%{b:02X}"));
        }
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_utf16_units_and_offsets_come_back() {
        let text = "ab\n# é😀 x\nlast";
        let index = LineIndex::new(text);
        let x = text.find('x').expect("x");
        // `# é😀 ` is 6 UTF-16 units: the emoji takes two.
        assert_eq!(index.position(text, x), Position::new(1, 6));
        assert_eq!(index.offset(text, Position::new(1, 6)), x);
        assert_eq!(
            index.offset(text, Position::new(1, 99)),
            text.find("\nlast").expect("end")
        );
        assert_eq!(index.offset(text, Position::new(9, 0)), text.len());
        assert_eq!(index.position(text, text.len()), Position::new(2, 4));
    }

    #[test]
    fn file_uris_and_paths_round_trip() {
        let path = std::path::Path::new("/tmp/a dir/ü.cnn");
        let uri = uri_of(path).expect("a uri");
        assert_eq!(uri.as_str(), "file:///tmp/a%20dir/%C3%BC.cnn");
        assert_eq!(path_of(&uri).as_deref(), Some(path));
        let other: Uri = "untitled:1".parse().expect("a uri");
        assert_eq!(path_of(&other), None);
    }
}
