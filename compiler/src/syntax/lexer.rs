//! Lexing: source text in, tokens (with spans) and lexical diagnostics out.
//!
//! Logos recognises ordinary tokens; string literals are scanned by hand because they nest
//! interpolations: `"Release ${s.container}?"` becomes
//! `Quote StrText InterpStart Ident Dot Ident InterpEnd StrText StrEnd`.
//! Comments never reach the parser: doc comments (`///`) are kept aside for hover and for
//! attaching to declarations, plain comments for the formatter.
//!
//! The lexer is a [`TokenStream`] the parser pulls tokens from one at a time, so checking a
//! file never holds all of its tokens at once (12 bytes each, about 15 MB for 100,000
//! lines). [`lex`] collects them into a vector for the formatter and the editor analysis,
//! which look at tokens around a position.

use super::token::TokenKind;
use crate::diagnostics::{Diagnostic, codes};
use crate::span::{FileId, Span};
use logos::Logos;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
    /// True when a line break separates this token from the previous one. Statements end
    /// at line breaks for error recovery, and `(` or `[` on a new line does not continue
    /// the previous expression.
    pub starts_line: bool,
}

#[derive(Debug, Default)]
pub struct Lexed {
    /// Ends with exactly one [`TokenKind::Eof`].
    pub tokens: Vec<Token>,
    pub doc_comments: Vec<Span>,
    pub comments: Vec<Span>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Lexes the whole file into one vector of tokens.
pub fn lex(file: FileId, src: &str) -> Lexed {
    let mut stream = TokenStream::new(file, src);
    // Typical code has a token every 4 to 6 bytes; growing a large vector by doubling
    // would copy it several times. Unused capacity is never touched.
    let mut tokens = Vec::with_capacity(src.len() / 4 + 16);
    loop {
        let token = stream.next_token();
        tokens.push(token);
        if token.kind == TokenKind::Eof {
            break;
        }
    }
    Lexed {
        tokens,
        doc_comments: stream.doc_comments,
        comments: stream.comments,
        diagnostics: stream.diagnostics,
    }
}

/// Where the lexer is: in ordinary code, in the code of a `${…}` interpolation (with the
/// depth of the braces opened inside it), or in the text of a string.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Code,
    Interpolation { depth: usize },
    Str { open_quote: Span },
}

/// The lexer as a stream: [`TokenStream::next_token`] gives the tokens in order, then
/// [`TokenKind::Eof`] for ever. The comments and the diagnostics found so far (everything up
/// to the last token given, and possibly a little beyond) are in its public fields.
pub struct TokenStream<'src> {
    file: FileId,
    src: &'src str,
    /// Where the text of a string resumes, or where `code` started.
    pos: usize,
    last_end: usize,
    emitted: bool,
    /// The innermost mode last; the bottom is always [`Mode::Code`].
    modes: Vec<Mode>,
    /// Logos over `src[base..]`, for the code modes.
    code: logos::Lexer<'src, TokenKind>,
    base: usize,
    bad_chars: Option<Span>,
    /// Tokens found but not given yet (a string's text and its end come together).
    pending: VecDeque<Token>,
    /// The end, once reached.
    eof: Option<Token>,
    pub doc_comments: Vec<Span>,
    pub comments: Vec<Span>,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'src> TokenStream<'src> {
    pub fn new(file: FileId, src: &'src str) -> TokenStream<'src> {
        TokenStream {
            file,
            src,
            pos: 0,
            last_end: 0,
            emitted: false,
            modes: vec![Mode::Code],
            code: TokenKind::lexer(src),
            base: 0,
            bad_chars: None,
            pending: VecDeque::with_capacity(8),
            eof: None,
            doc_comments: Vec::new(),
            comments: Vec::new(),
            diagnostics: Vec::new(),
        }
    }

    /// The next token; after the end of the text, [`TokenKind::Eof`] every time.
    pub fn next_token(&mut self) -> Token {
        loop {
            if let Some(token) = self.pending.pop_front() {
                return token;
            }
            if let Some(eof) = self.eof {
                return eof;
            }
            self.step();
        }
    }

    fn push(&mut self, kind: TokenKind, span: Span) {
        let gap = &self.src[self.last_end.min(span.start as usize)..span.start as usize];
        let starts_line = !self.emitted || gap.contains('\n');
        self.emitted = true;
        self.pending.push_back(Token {
            kind,
            span,
            starts_line,
        });
        self.last_end = span.end as usize;
    }

    /// Restarts logos at `self.pos`, for code after a string or inside an interpolation.
    fn resume_code(&mut self) {
        self.base = self.pos;
        self.code = TokenKind::lexer(&self.src[self.base..]);
    }

    /// Lexes a little more: one ordinary token, or the text of a string up to its end or
    /// its next interpolation.
    fn step(&mut self) {
        match self.modes.last().copied().unwrap_or(Mode::Code) {
            Mode::Str { open_quote } => self.lex_string(open_quote),
            mode => self.lex_code(mode),
        }
    }

    fn lex_code(&mut self, mode: Mode) {
        let Some(result) = self.code.next() else {
            if let Some(open) = self.bad_chars.take() {
                self.report_bad_chars(open);
            }
            self.pos = self.src.len();
            if let Mode::Interpolation { .. } = mode {
                // The end of the text inside an interpolation: its string is unterminated.
                self.modes.pop();
                if let Some(Mode::Str { open_quote }) = self.modes.pop() {
                    self.report_unterminated(open_quote);
                }
                self.resume_code();
            } else {
                let end = Span::new(self.src.len(), self.src.len());
                self.push(TokenKind::Eof, end);
                self.eof = self.pending.back().copied();
            }
            return;
        };
        let range = self.code.span();
        let span = Span::new(self.base + range.start, self.base + range.end);
        let Ok(kind) = result else {
            self.bad_chars = Some(match self.bad_chars {
                Some(open) if open.end == span.start => open.to(span),
                Some(open) => {
                    self.report_bad_chars(open);
                    span
                }
                None => span,
            });
            return;
        };
        if let Some(open) = self.bad_chars.take() {
            self.report_bad_chars(open);
        }
        let in_interpolation = matches!(mode, Mode::Interpolation { .. });
        match kind {
            TokenKind::DocComment => self.doc_comments.push(span),
            TokenKind::Comment => self.comments.push(span),
            TokenKind::Quote => {
                self.pos = span.end as usize;
                self.push(TokenKind::Quote, span);
                self.modes.push(Mode::Str { open_quote: span });
            }
            TokenKind::LBrace if in_interpolation => {
                self.set_depth(1);
                self.push(kind, span);
            }
            TokenKind::RBrace if matches!(mode, Mode::Interpolation { depth: 0 }) => {
                self.push(TokenKind::InterpEnd, span);
                self.pos = span.end as usize;
                self.modes.pop();
            }
            TokenKind::RBrace if in_interpolation => {
                self.set_depth(-1);
                self.push(kind, span);
            }
            _ => self.push(kind, span),
        }
    }

    fn set_depth(&mut self, change: isize) {
        if let Some(Mode::Interpolation { depth }) = self.modes.last_mut() {
            *depth = depth.saturating_add_signed(change);
        }
    }

    fn report_bad_chars(&mut self, span: Span) {
        let text = &self.src[span.range()];
        let shown: String = text.chars().take(10).collect();
        self.diagnostics.push(
            Diagnostic::error(
                codes::INVALID_CHARACTER,
                self.file,
                span,
                "not part of any token",
            )
            .with_message(format!("Unexpected character `{}`", printable(&shown)))
            .with_help("remove it; strings go between double quotes `\"…\"`"),
        );
    }

    /// Scans the text of a string from `self.pos` (after its opening quote or an
    /// interpolation), emitting text pieces up to its closing [`TokenKind::StrEnd`] or the
    /// [`TokenKind::InterpStart`] of its next interpolation.
    fn lex_string(&mut self, open_quote: Span) {
        let bytes = self.src.as_bytes();
        let text_start = self.pos;
        let mut i = self.pos;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    self.flush_text(text_start, i);
                    self.push(TokenKind::StrEnd, Span::new(i, i + 1));
                    self.pos = i + 1;
                    self.modes.pop();
                    self.resume_code();
                    return;
                }
                b'\\' => {
                    i = self.check_escape(i);
                }
                b'$' if bytes.get(i + 1) == Some(&b'{') => {
                    self.flush_text(text_start, i);
                    self.push(TokenKind::InterpStart, Span::new(i, i + 2));
                    self.pos = i + 2;
                    self.modes.push(Mode::Interpolation { depth: 0 });
                    self.resume_code();
                    return;
                }
                _ => i += 1,
            }
        }
        self.flush_text(text_start, bytes.len());
        self.modes.pop();
        self.report_unterminated(open_quote);
        self.resume_code();
    }

    fn flush_text(&mut self, start: usize, end: usize) {
        if end > start {
            self.push(TokenKind::StrText, Span::new(start, end));
        }
    }

    fn report_unterminated(&mut self, open_quote: Span) {
        let end = self.src.len();
        self.push(TokenKind::StrEnd, Span::new(end, end));
        self.pos = end;
        self.diagnostics.push(
            Diagnostic::error(
                codes::UNTERMINATED_STRING,
                self.file,
                open_quote,
                "this string is never closed",
            )
            .with_help(
                "add the closing `\"`; to write a quote inside a string, escape it as `\\\"`",
            ),
        );
    }

    /// Validates the escape starting at the backslash at `i`; returns the index after it.
    fn check_escape(&mut self, i: usize) -> usize {
        let rest = &self.src[i + 1..];
        let Some(c) = rest.chars().next() else {
            return i + 1;
        };
        let after = i + 1 + c.len_utf8();
        match c {
            'n' | 't' | 'r' | '\\' | '"' | '$' | '0' => after,
            'u' => match unicode_escape(rest) {
                Some(len) => i + 1 + len,
                None => {
                    self.report_bad_escape(Span::new(i, after), "\\u");
                    after
                }
            },
            other => {
                self.report_bad_escape(Span::new(i, after), &format!("\\{other}"));
                after
            }
        }
    }

    fn report_bad_escape(&mut self, span: Span, shown: &str) {
        self.diagnostics.push(
            Diagnostic::error(codes::INVALID_ESCAPE, self.file, span, "unknown escape")
                .with_message(format!("Invalid escape `{}` in string", printable(shown)))
                .with_help(
                    "valid escapes are \\n \\t \\r \\0 \\\\ \\\" \\$ and \\u{…}; write \\\\ for a backslash",
                ),
        );
    }
}

/// The text with control characters (NUL, escape, …) written as escapes, so a message
/// never prints raw control bytes to a terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Length of a valid `u{XXXX}` escape body (after the backslash), if it is one.
pub fn unicode_escape(rest: &str) -> Option<usize> {
    let inner = rest.strip_prefix("u{")?;
    let close = inner.find('}')?;
    let digits = &inner[..close];
    if digits.is_empty() || digits.len() > 6 {
        return None;
    }
    let value = u32::from_str_radix(digits, 16).ok()?;
    char::from_u32(value)?;
    Some(2 + close + 1)
}

/// Resolves the escapes of a string piece that the lexer already validated.
pub fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some((_, 'n')) => out.push('\n'),
            Some((_, 't')) => out.push('\t'),
            Some((_, 'r')) => out.push('\r'),
            Some((_, '0')) => out.push('\0'),
            Some((_, 'u')) => {
                if let Some(len) = unicode_escape(&raw[i + 1..]) {
                    let digits = &raw[i + 3..i + len];
                    if let Some(ch) = u32::from_str_radix(digits, 16)
                        .ok()
                        .and_then(char::from_u32)
                    {
                        out.push(ch);
                    }
                    for _ in 0..len - 1 {
                        chars.next();
                    }
                }
            }
            Some((_, other)) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use TokenKind::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        lex(FileId(0), src).tokens.iter().map(|t| t.kind).collect()
    }

    #[test]
    fn keywords_operators_and_literals() {
        assert_eq!(
            kinds("let x = a?.b ?? 500ms >= 2.5"),
            vec![
                Let,
                Ident,
                Assign,
                Ident,
                QuestionDot,
                Ident,
                QuestionQuestion,
                Number,
                GtEq,
                Float,
                Eof
            ]
        );
    }

    #[test]
    fn interpolation_nests_tokens_inside_strings() {
        assert_eq!(
            kinds(r#""Release ${s.container}?""#),
            vec![
                Quote,
                StrText,
                InterpStart,
                Ident,
                Dot,
                Ident,
                InterpEnd,
                StrText,
                StrEnd,
                Eof
            ]
        );
        assert_eq!(
            kinds(r#""a ${f({x: "}"})} b""#),
            vec![
                Quote,
                StrText,
                InterpStart,
                Ident,
                LParen,
                LBrace,
                Ident,
                Colon,
                Quote,
                StrText,
                StrEnd,
                RBrace,
                RParen,
                InterpEnd,
                StrText,
                StrEnd,
                Eof
            ]
        );
    }

    #[test]
    fn comments_are_set_aside_and_doc_comments_kept() {
        let lexed = lex(FileId(0), "/// doc\n// plain\ntype");
        assert_eq!(lexed.doc_comments, vec![Span::new(0, 7)]);
        assert_eq!(lexed.comments, vec![Span::new(8, 16)]);
        assert_eq!(lexed.tokens[0].kind, Type);
    }

    #[test]
    fn spans_are_bytes_and_line_starts_are_marked() {
        let lexed = lex(FileId(0), "é = 1\n  x");
        let t = &lexed.tokens;
        assert_eq!(t[0].span, Span::new(0, 2));
        assert!(t[0].starts_line && !t[1].starts_line);
        assert_eq!(t[3].span, Span::new(9, 10));
        assert!(t[3].starts_line);
    }

    #[test]
    fn unterminated_string_and_bad_escape_are_reported() {
        let lexed = lex(FileId(0), r#"let s = "abc \q"#);
        let found: Vec<_> = lexed.diagnostics.iter().map(|d| d.code.id).collect();
        assert_eq!(found, vec!["E0104", "E0101"]);
        assert_eq!(lexed.tokens.last().map(|t| t.kind), Some(Eof));
    }

    #[test]
    fn runs_of_bad_characters_are_one_error() {
        let lexed = lex(FileId(0), "let x = 1 @@@ # 2");
        assert_eq!(lexed.diagnostics.len(), 2);
        assert_eq!(lexed.diagnostics[0].primary.span, Span::new(10, 13));
    }

    #[test]
    fn unescape_resolves_escapes() {
        assert_eq!(unescape(r#"a\n\"b\" \u{e9} \$"#), "a\n\"b\" é $");
    }
}
