//! Byte offsets (the compiler's) ⇄ LSP positions (line, UTF-16 code unit).
//!
//! The conversion happens only here, at the edge. Positions out of range are clamped: a
//! line past the end means the end of the text, a character past the end of its line means
//! the end of that line (before its line break), and a position inside a surrogate pair or a
//! multi-byte character snaps to the character's start.

use tower_lsp_server::ls_types::{Position, Range};

/// Where each line of one text starts.
#[derive(Clone, Debug)]
pub struct LineMap {
    starts: Vec<usize>,
}

impl LineMap {
    pub fn new(text: &str) -> LineMap {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineMap { starts }
    }

    /// The byte offset of `position` in `text` (clamped into the text).
    pub fn offset(&self, text: &str, position: Position) -> usize {
        let line = position.line as usize;
        let Some(&start) = self.starts.get(line) else {
            return text.len();
        };
        let end = self
            .starts
            .get(line + 1)
            .map_or(text.len(), |next| next - 1);
        let line_text = text.get(start..end).unwrap_or("");
        let line_text = line_text.strip_suffix('\r').unwrap_or(line_text);
        let mut units = 0usize;
        for (index, c) in line_text.char_indices() {
            let width = c.len_utf16();
            if units + width > position.character as usize {
                return start + index;
            }
            units += width;
        }
        start + line_text.len()
    }

    /// The LSP position of a byte offset in `text` (clamped into the text).
    pub fn position(&self, text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while offset > 0 && !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let character: usize = text[start..offset].chars().map(char::len_utf16).sum();
        Position {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            character: u32::try_from(character).unwrap_or(u32::MAX),
        }
    }

    pub fn range(&self, text: &str, start: usize, end: usize) -> Range {
        Range {
            start: self.position(text, start),
            end: self.position(text, end),
        }
    }
}

/// Applies an LSP range edit to `text` in place.
pub fn apply_edit(text: &mut String, range: Range, new_text: &str) {
    let map = LineMap::new(text);
    let start = map.offset(text, range.start);
    let end = map.offset(text, range.end).max(start);
    text.replace_range(start..end, new_text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(line: u32, character: u32) -> Position {
        Position { line, character }
    }

    #[test]
    fn ascii_round_trips() {
        let text = "ab\ncd\n";
        let map = LineMap::new(text);
        for offset in 0..=text.len() {
            assert_eq!(map.offset(text, map.position(text, offset)), offset);
        }
        assert_eq!(map.position(text, 4), pos(1, 1));
        assert_eq!(map.position(text, text.len()), pos(2, 0));
    }

    #[test]
    fn non_ascii_lines_count_utf16_code_units() {
        // `é` is 2 bytes and 1 unit; `😀` is 4 bytes and 2 units (a surrogate pair).
        let text = "let é = \"😀x\"\nzähler";
        let map = LineMap::new(text);
        let x = text.find('x').expect("x");
        assert_eq!(map.position(text, x), pos(0, 11));
        assert_eq!(map.offset(text, pos(0, 11)), x);
        let emoji = text.find('😀').expect("emoji");
        assert_eq!(map.position(text, emoji), pos(0, 9));
        // Inside the surrogate pair: the emoji's start.
        assert_eq!(map.offset(text, pos(0, 10)), emoji);
        // Inside a multi-byte character's bytes: its start.
        assert_eq!(
            map.position(text, text.find('é').expect("é") + 1),
            pos(0, 4)
        );
        let h = text.find('h').expect("h");
        assert_eq!(map.position(text, h), pos(1, 2));
        assert_eq!(map.offset(text, pos(1, 2)), h);
    }

    #[test]
    fn out_of_range_positions_are_clamped() {
        let text = "ab\r\ncd";
        let map = LineMap::new(text);
        assert_eq!(map.offset(text, pos(0, 99)), 2, "before the \\r\\n");
        assert_eq!(map.offset(text, pos(7, 0)), text.len());
        assert_eq!(map.offset(text, pos(u32::MAX, u32::MAX)), text.len());
        assert_eq!(map.position(text, usize::MAX), pos(1, 2));
        let empty = LineMap::new("");
        assert_eq!(empty.offset("", pos(3, 3)), 0);
        assert_eq!(empty.position("", 5), pos(0, 0));
    }

    #[test]
    fn edits_apply_at_utf16_positions() {
        let mut text = "a😀b\nc".to_string();
        apply_edit(
            &mut text,
            Range {
                start: pos(0, 3),
                end: pos(1, 0),
            },
            "B\n",
        );
        assert_eq!(text, "a😀B\nc");
        // A range past the end appends; a reversed range inserts.
        apply_edit(
            &mut text,
            Range {
                start: pos(9, 0),
                end: pos(9, 9),
            },
            "!",
        );
        assert_eq!(text, "a😀B\nc!");
        apply_edit(
            &mut text,
            Range {
                start: pos(1, 1),
                end: pos(0, 0),
            },
            "?",
        );
        assert_eq!(text, "a😀B\nc?!");
    }
}
