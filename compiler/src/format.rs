//! The formatter behind `flowc fmt` and the language server's formatting: source text in,
//! the same program in the one canonical layout out (see `spec/format.md`).
//!
//! It works from the syntax tree and the comments the lexer set aside: the tree is turned
//! into a small document of text, line breaks, indentation and groups (Wadler's "prettier
//! printer"), and a group is printed on one line when it fits in [`WIDTH`] columns, else
//! broken. Comments are placed as the tree is walked in source order: the ones above a
//! declaration, statement, field or list item stay above it, the ones at the end of its line
//! stay there, and the rare comment in the middle of an expression moves to the end of the
//! statement (or item) that holds it. Literals (numbers, durations, strings with their
//! interpolations) are copied exactly as written.
//!
//! A file with syntax errors is not formatted. And before anything is returned, the result
//! is parsed again and compared with the original: the same tree (ignoring positions) and
//! the same comments in the same order, or [`FormatError::Unstable`] — the formatter never
//! hands back a program that means something else.

use crate::diagnostics::Diagnostic;
use crate::span::{FileId, LineIndex, Span};
use crate::syntax::ast::*;
use crate::syntax::lexer::{self, Token};
use crate::syntax::parser;
use crate::syntax::token::TokenKind as T;
use std::fmt;

/// The line width that groups (records, lists, one-line blocks) must fit in.
pub const WIDTH: usize = 100;
/// Spaces per indentation level.
const INDENT: usize = 2;

#[derive(Clone, Debug)]
pub enum FormatError {
    /// The text does not parse; `diagnostics` are its syntax errors (in file 0), and the
    /// position and message are those of the first one.
    Syntax {
        line: usize,
        column: usize,
        message: String,
        diagnostics: Vec<Diagnostic>,
    },
    /// The formatted text would not mean the same as the original: a bug in the formatter.
    /// The text is left as it is.
    Unstable(String),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Syntax {
                line,
                column,
                message,
                ..
            } => write!(
                f,
                "{line}:{column}: {message} (a file with syntax errors is not formatted)"
            ),
            FormatError::Unstable(why) => write!(
                f,
                "the formatter would change the meaning of this file ({why}); it is left unchanged, please report it"
            ),
        }
    }
}

impl std::error::Error for FormatError {}

/// Formats a whole `.flow` file. The result ends with one newline (an empty file stays
/// empty); formatting it again changes nothing.
pub fn format(text: &str) -> Result<String, FormatError> {
    let file = FileId(0);
    let parsed = parser::parse(file, text);
    let mut diagnostics = parsed.lex_diagnostics.clone();
    diagnostics.extend(parsed.diagnostics.iter().cloned());
    crate::diagnostics::sort(&mut diagnostics);
    let syntax: Vec<Diagnostic> = diagnostics
        .into_iter()
        .filter(|d| d.code.id.starts_with("E01"))
        .collect();
    if let Some(first) = syntax.first() {
        let (line, column) = LineIndex::new(text).line_col(text, first.primary.span.start as usize);
        return Err(FormatError::Syntax {
            line,
            column,
            message: first.message.clone(),
            diagnostics: syntax,
        });
    }

    let comments = merge_comments(&parsed.comments, &parsed.doc_comments);
    if formatting_off(text, &comments, &parsed.module) {
        return Ok(text.to_string());
    }
    // The layout looks at the tokens around each node, so it takes them all at once.
    let lexed = lexer::lex(file, text);
    let outside_strings = comments_outside_strings(&comments, &lexed.tokens);
    let mut builder = Builder {
        src: text,
        tokens: &lexed.tokens,
        comments: outside_strings,
        next: 0,
        last: 0,
    };
    let output = builder.module(&parsed.module);

    verify(text, &comments, &parsed.module, &output)?;
    Ok(output)
}

/// The directive that leaves a file as written: a `// fmt: off` line (possibly followed by
/// a space and the reason) above its first declaration, for files whose layout is their
/// point, such as a test of line-separated lists.
pub const OFF_DIRECTIVE: &str = "// fmt: off";

fn formatting_off(text: &str, comments: &[Span], module: &Module) -> bool {
    let first_item = module
        .items
        .first()
        .map_or(text.len() as u32, |item| item.span().start);
    comments
        .iter()
        .take_while(|c| c.start < first_item)
        .any(|c| {
            let comment = text[c.range()].trim_end();
            comment == OFF_DIRECTIVE
                || comment
                    .strip_prefix(OFF_DIRECTIVE)
                    .is_some_and(|rest| rest.starts_with(' '))
        })
}

/// Parses the output again and compares it with the input: same tree, same comments.
fn verify(text: &str, comments: &[Span], module: &Module, output: &str) -> Result<(), FormatError> {
    let file = FileId(0);
    let reparsed = parser::parse(file, output);
    if let Some(error) = reparsed
        .lex_diagnostics
        .iter()
        .chain(&reparsed.diagnostics)
        .find(|d| d.code.id.starts_with("E01"))
    {
        return Err(FormatError::Unstable(format!(
            "the result does not parse: {}",
            error.message
        )));
    }
    if shape(module) != shape(&reparsed.module) {
        return Err(FormatError::Unstable(
            "the result parses to a different program".to_string(),
        ));
    }
    let before: Vec<&str> = comments
        .iter()
        .map(|c| text[c.range()].trim_end())
        .collect();
    let after_spans = merge_comments(&reparsed.comments, &reparsed.doc_comments);
    let after: Vec<&str> = after_spans
        .iter()
        .map(|c| output[c.range()].trim_end())
        .collect();
    if before != after {
        return Err(FormatError::Unstable(
            "the comments would not be kept in order".to_string(),
        ));
    }
    Ok(())
}

/// The tree without positions: its `Debug` form with every `Span { … }` left out.
fn shape(module: &Module) -> String {
    let debug = format!("{module:?}");
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug.as_str();
    while let Some(at) = rest.find("Span {") {
        out.push_str(&rest[..at]);
        out.push_str("Span");
        let after = &rest[at..];
        let close = after.find('}').map_or(after.len(), |i| i + 1);
        rest = &after[close..];
    }
    out.push_str(rest);
    out
}

/// Plain and doc comments in one list, by position.
fn merge_comments(comments: &[Span], docs: &[Span]) -> Vec<Span> {
    let mut all: Vec<Span> = comments.iter().chain(docs).copied().collect();
    all.sort_by_key(|s| s.start);
    all
}

/// The comments that are not inside a string literal (a comment can only be there inside
/// an interpolation, `"${x // …`); those are copied with their string.
fn comments_outside_strings(comments: &[Span], tokens: &[Token]) -> Vec<Span> {
    let mut out = Vec::with_capacity(comments.len());
    let mut depth = 0usize;
    let mut index = 0;
    for &comment in comments {
        while index < tokens.len() && tokens[index].span.start < comment.start {
            match tokens[index].kind {
                T::Quote => depth += 1,
                T::StrEnd => depth = depth.saturating_sub(1),
                _ => {}
            }
            index += 1;
        }
        if depth == 0 {
            out.push(comment);
        }
    }
    out
}

// ----- the document ---------------------------------------------------------------------

enum Doc {
    Text(String),
    /// A space when its group is flat, a line break when it is broken.
    Line,
    /// Nothing when its group is flat, a line break when it is broken.
    SoftLine,
    /// Always a line break; breaks every group around it.
    HardLine,
    Concat(Vec<Doc>),
    Indent(Box<Doc>),
    /// Printed flat if it fits; `true` when it must break (it holds a hard line break).
    Group(Box<Doc>, bool),
    /// The first when the enclosing group is broken, the second when it is flat.
    IfBreak(&'static str, &'static str),
    /// A comment at the end of a line: printed like text, but it does not count when
    /// deciding whether a group fits (a comment never breaks the code before it).
    LineSuffix(String),
}

fn text(s: impl Into<String>) -> Doc {
    Doc::Text(s.into())
}

fn concat(parts: Vec<Doc>) -> Doc {
    Doc::Concat(parts)
}

fn indent(doc: Doc) -> Doc {
    Doc::Indent(Box::new(doc))
}

fn group(doc: Doc) -> Doc {
    let broken = breaks(&doc);
    Doc::Group(Box::new(doc), broken)
}

/// Whether the document holds a hard line break (outside nested groups, whose flag says).
fn breaks(doc: &Doc) -> bool {
    match doc {
        Doc::Text(s) => s.contains('\n'),
        Doc::HardLine => true,
        Doc::LineSuffix(_) => false,
        Doc::Line | Doc::SoftLine | Doc::IfBreak(..) => false,
        Doc::Concat(parts) => parts.iter().any(breaks),
        Doc::Indent(inner) => breaks(inner),
        Doc::Group(_, broken) => *broken,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Flat,
    Break,
}

fn width_of(s: &str) -> usize {
    s.chars().count()
}

/// Prints a document starting at column 0.
fn print(doc: &Doc) -> String {
    let mut out = String::new();
    let mut column = 0usize;
    let mut stack: Vec<(usize, Mode, &Doc)> = vec![(0, Mode::Break, doc)];
    while let Some((level, mode, doc)) = stack.pop() {
        match doc {
            Doc::LineSuffix(s) => {
                out.push_str(s);
                column += width_of(s);
            }
            Doc::Text(s) => {
                out.push_str(s);
                column = match s.rfind('\n') {
                    Some(i) => width_of(&s[i + 1..]),
                    None => column + width_of(s),
                };
            }
            Doc::Line | Doc::SoftLine if mode == Mode::Flat => {
                if matches!(doc, Doc::Line) {
                    out.push(' ');
                    column += 1;
                }
            }
            Doc::Line | Doc::SoftLine | Doc::HardLine => {
                newline(&mut out, level);
                column = level;
            }
            Doc::Concat(parts) => {
                for part in parts.iter().rev() {
                    stack.push((level, mode, part));
                }
            }
            Doc::Indent(inner) => stack.push((level + INDENT, mode, inner)),
            Doc::Group(inner, broken) => {
                let mode = if *broken {
                    Mode::Break
                } else if mode == Mode::Flat
                    || fits(inner, &stack, WIDTH.saturating_sub(column) as isize)
                {
                    Mode::Flat
                } else {
                    Mode::Break
                };
                stack.push((level, mode, inner));
            }
            Doc::IfBreak(broken, flat) => {
                let s = if mode == Mode::Break { broken } else { flat };
                out.push_str(s);
                column += width_of(s);
            }
        }
    }
    trim_line_end(&mut out);
    out
}

fn trim_line_end(out: &mut String) {
    let kept = out.trim_end_matches([' ', '\t']).len();
    out.truncate(kept);
}

fn newline(out: &mut String, level: usize) {
    trim_line_end(out);
    out.push('\n');
    out.extend(std::iter::repeat_n(' ', level));
}

/// Whether `doc`, printed flat, and what follows it up to the next line break fit in
/// `remaining` columns.
fn fits(doc: &Doc, rest: &[(usize, Mode, &Doc)], mut remaining: isize) -> bool {
    let mut pending: Vec<(Mode, &Doc)> = vec![(Mode::Flat, doc)];
    let mut rest_index = rest.len();
    loop {
        if remaining < 0 {
            return false;
        }
        let (mode, doc) = match pending.pop() {
            Some(next) => next,
            None => {
                if rest_index == 0 {
                    return true;
                }
                rest_index -= 1;
                (rest[rest_index].1, rest[rest_index].2)
            }
        };
        match doc {
            Doc::Text(s) => {
                if let Some(i) = s.find('\n') {
                    return width_of(&s[..i]) as isize <= remaining;
                }
                remaining -= width_of(s) as isize;
            }
            Doc::LineSuffix(_) => {}
            Doc::Line if mode == Mode::Flat => remaining -= 1,
            Doc::SoftLine if mode == Mode::Flat => {}
            Doc::Line | Doc::SoftLine | Doc::HardLine => return true,
            Doc::Concat(parts) => {
                for part in parts.iter().rev() {
                    pending.push((mode, part));
                }
            }
            Doc::Indent(inner) => pending.push((mode, inner)),
            Doc::Group(inner, broken) => {
                pending.push((if *broken { Mode::Break } else { mode }, inner));
            }
            Doc::IfBreak(broken, flat) => {
                let s = if mode == Mode::Break { broken } else { flat };
                remaining -= width_of(s) as isize;
            }
        }
    }
}

// ----- from the tree to the document ------------------------------------------------------

struct Builder<'a> {
    src: &'a str,
    tokens: &'a [Token],
    /// Comments not inside strings, by position; `next` is the first not yet placed.
    comments: Vec<Span>,
    next: usize,
    /// The end of the last thing placed (for blank lines).
    last: u32,
}

/// One line (or several, for an item with comments) of a block or broken list.
struct Entry {
    blank_before: bool,
    doc: Doc,
}

impl<'a> Builder<'a> {
    // ----- source helpers -----------------------------------------------------------

    fn slice(&self, span: Span) -> &'a str {
        &self.src[span.range()]
    }

    /// Whether the source between two offsets holds an empty line.
    fn blank(&self, from: u32, to: u32) -> bool {
        if from >= to {
            return false;
        }
        let mut lines = self.src[from as usize..to as usize].split('\n');
        lines.next();
        let mut inner: Vec<&str> = lines.collect();
        inner.pop();
        inner.iter().any(|line| line.trim().is_empty())
    }

    fn same_line(&self, from: u32, to: u32) -> bool {
        from <= to && !self.src[from as usize..to as usize].contains('\n')
    }

    /// The first token starting at or after `pos`.
    fn token_from(&self, pos: u32) -> Token {
        let i = self.tokens.partition_point(|t| t.span.start < pos);
        self.tokens[i.min(self.tokens.len() - 1)]
    }

    /// The first token of `kind` starting at or after `pos`.
    fn find(&self, kind: T, pos: u32) -> Span {
        let i = self.tokens.partition_point(|t| t.span.start < pos);
        self.tokens[i..]
            .iter()
            .find(|t| t.kind == kind)
            .map_or(Span::new(pos as usize, pos as usize), |t| t.span)
    }

    /// The closing delimiter of a list whose last item (or opener) ends at `after`: the next
    /// token, or the one after a trailing comma.
    fn close_after(&self, after: u32) -> Span {
        let token = self.token_from(after);
        if token.kind == T::Comma {
            self.token_from(token.span.end).span
        } else {
            token.span
        }
    }

    /// The source text of the literal token (number, float) inside `span`, past any `(`.
    fn literal(&self, span: Span) -> &'a str {
        let i = self.tokens.partition_point(|t| t.span.start < span.start);
        self.tokens[i..]
            .iter()
            .take_while(|t| t.span.start < span.end)
            .find(|t| matches!(t.kind, T::Number | T::Float))
            .map_or("", |t| self.slice(t.span))
    }

    /// The string literal inside `span` (past any `(`), exactly as written.
    fn string(&self, span: Span) -> &'a str {
        let i = self.tokens.partition_point(|t| t.span.start < span.start);
        let mut depth = 0usize;
        let mut start = None;
        for token in &self.tokens[i..] {
            match token.kind {
                T::Quote => {
                    start.get_or_insert(token.span.start);
                    depth += 1;
                }
                T::StrEnd => {
                    depth = depth.saturating_sub(1);
                    if depth == 0
                        && let Some(start) = start
                    {
                        return &self.src[start as usize..token.span.end as usize];
                    }
                }
                T::Eof => break,
                _ => {}
            }
        }
        self.slice(span)
    }

    // ----- comments -----------------------------------------------------------------

    fn peek_comment(&self) -> Option<Span> {
        self.comments.get(self.next).copied()
    }

    fn comment_text(&self, comment: Span) -> Doc {
        text(self.slice(comment).trim_end())
    }

    fn is_doc_comment(&self, comment: Span) -> bool {
        self.slice(comment).starts_with("///")
    }

    /// Whether a comment not yet placed starts inside `from..to`.
    fn comment_within(&self, from: u32, to: u32) -> bool {
        self.comments[self.next..]
            .iter()
            .take_while(|c| c.start < to)
            .any(|c| c.start >= from)
    }

    /// The comments starting before `pos`, each as an entry of its own line.
    fn comments_before(&mut self, pos: u32, entries: &mut Vec<Entry>) {
        while let Some(comment) = self.peek_comment() {
            if comment.start >= pos {
                break;
            }
            self.next += 1;
            entries.push(Entry {
                blank_before: self.blank(self.last, comment.start),
                doc: self.comment_text(comment),
            });
            self.last = comment.end;
        }
    }

    /// After a thing ending at `end`: the comments left inside it, and a plain comment on its
    /// last line (before `limit`). A doc comment at the end of a line documents what follows,
    /// so it stays with that.
    fn trailing(&mut self, end: u32, limit: u32) -> Vec<Span> {
        let mut found = Vec::new();
        while let Some(comment) = self.peek_comment() {
            let inside = comment.start < end;
            let at_line_end = comment.start < limit
                && self.same_line(end, comment.start)
                && !self.is_doc_comment(comment);
            if !(inside || at_line_end) {
                break;
            }
            self.next += 1;
            self.last = self.last.max(comment.end);
            found.push(comment);
        }
        self.last = self.last.max(end);
        found
    }

    /// `doc` followed by its trailing comments: the first at the end of its line, any others
    /// (left from inside it) on the lines below.
    fn with_trailing(&self, doc: Doc, trailing: &[Span]) -> Doc {
        if trailing.is_empty() {
            return doc;
        }
        let mut parts = vec![doc];
        for (i, comment) in trailing.iter().enumerate() {
            let comment = self.slice(*comment).trim_end();
            parts.push(if i == 0 {
                Doc::LineSuffix(format!(" {comment}"))
            } else {
                concat(vec![Doc::HardLine, text(comment)])
            });
        }
        concat(parts)
    }

    /// A plain comment on the line of an opening bracket that ends at `open_end`.
    fn after_opener(&mut self, open_end: u32, close: u32) -> Option<Span> {
        let comment = self.peek_comment()?;
        if comment.start >= open_end
            && comment.start < close
            && self.same_line(open_end, comment.start)
            && !self.is_doc_comment(comment)
        {
            self.next += 1;
            self.last = comment.end;
            return Some(comment);
        }
        None
    }

    /// Items one per line, each with the comments above it and at the end of its line, then
    /// the comments before `close`. `sep` follows every item. Blank lines between items are
    /// kept (one at most).
    fn lines<I>(
        &mut self,
        items: &[I],
        span_of: impl Fn(&I) -> Span,
        close: u32,
        sep: &'static str,
        mut build: impl FnMut(&mut Self, &I) -> Doc,
    ) -> Vec<Entry> {
        let mut entries = Vec::new();
        for item in items {
            let span = span_of(item);
            self.comments_before(span.start, &mut entries);
            let blank_before = self.blank(self.last, span.start);
            self.last = span.start;
            let doc = build(self, item);
            let doc = concat(vec![doc, text(sep)]);
            let trailing = self.trailing(span.end, close);
            entries.push(Entry {
                blank_before,
                doc: self.with_trailing(doc, &trailing),
            });
        }
        self.comments_before(close, &mut entries);
        entries
    }

    fn join(entries: Vec<Entry>) -> Doc {
        let mut parts = Vec::with_capacity(entries.len() * 2);
        for (i, entry) in entries.into_iter().enumerate() {
            if i > 0 {
                parts.push(Doc::HardLine);
                if entry.blank_before {
                    parts.push(Doc::HardLine);
                }
            }
            parts.push(entry.doc);
        }
        concat(parts)
    }

    /// A delimited list laid out one item per line: the opener (with a comment on its line),
    /// the items indented, each followed by `sep`, the closer. Nothing inside gives `{}`.
    #[allow(clippy::too_many_arguments)]
    fn delimited_broken<I>(
        &mut self,
        delims: Delims,
        opener: Span,
        close: Span,
        items: &[I],
        span_of: impl Fn(&I) -> Span,
        sep: &'static str,
        build: impl FnMut(&mut Self, &I) -> Doc,
    ) -> Doc {
        let (open_text, close_text) = delims.texts();
        self.last = opener.end;
        let after_open = self.after_opener(opener.end, close.start);
        let entries = self.lines(items, span_of, close.start, sep, build);
        self.last = self.last.max(close.end);
        let mut parts = vec![text(open_text)];
        if let Some(comment) = after_open {
            let comment = self.slice(comment).trim_end();
            parts.push(Doc::LineSuffix(format!(" {comment}")));
        }
        if !entries.is_empty() {
            parts.push(indent(concat(vec![Doc::HardLine, Self::join(entries)])));
            parts.push(Doc::HardLine);
        } else if after_open.is_some() {
            parts.push(Doc::HardLine);
        }
        parts.push(text(close_text));
        concat(parts)
    }

    /// A list that is printed on one line when it fits, else one item per line with a
    /// trailing comma. Comments or blank lines inside always break it.
    fn delimited<I>(
        &mut self,
        delims: Delims,
        opener: Span,
        close: Span,
        items: &[I],
        span_of: impl Fn(&I) -> Span,
        mut build: impl FnMut(&mut Self, &I) -> Doc,
    ) -> Doc {
        let blank_inside = items
            .windows(2)
            .any(|pair| self.blank(span_of(&pair[0]).end, span_of(&pair[1]).start));
        if blank_inside || self.comment_within(opener.start, close.end) {
            return self.delimited_broken(delims, opener, close, items, span_of, ",", build);
        }
        let (open_text, close_text) = delims.texts();
        if items.is_empty() {
            return text(format!("{open_text}{close_text}"));
        }
        let line = || {
            if delims == Delims::Brace {
                Doc::Line
            } else {
                Doc::SoftLine
            }
        };
        let mut inner = vec![line()];
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                inner.push(text(","));
                inner.push(Doc::Line);
            }
            inner.push(build(self, item));
        }
        inner.push(Doc::IfBreak(",", ""));
        self.last = self.last.max(close.end);
        group(concat(vec![
            text(open_text),
            indent(concat(inner)),
            line(),
            text(close_text),
        ]))
    }

    /// A list kept on one line (parameters, arguments, patterns, type arguments) unless
    /// comments inside it need it broken, one item per line.
    fn inline_list<I>(
        &mut self,
        delims: Delims,
        opener: Span,
        close: Span,
        items: &[I],
        span_of: impl Fn(&I) -> Span,
        mut build: impl FnMut(&mut Self, &I) -> Doc,
    ) -> Doc {
        if self.comment_within(opener.start, close.end) {
            return self.delimited_broken(delims, opener, close, items, span_of, ",", build);
        }
        let (open_text, close_text) = delims.texts();
        let mut parts = vec![text(open_text)];
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                parts.push(text(", "));
            }
            parts.push(build(self, item));
        }
        parts.push(text(close_text));
        concat(parts)
    }

    // ----- declarations -------------------------------------------------------------

    fn module(&mut self, module: &Module) -> String {
        let end = self.src.len() as u32;
        let mut out = String::new();
        let push = |out: &mut String, text: &str, blank: bool| {
            if !out.is_empty() {
                out.push('\n');
                if blank {
                    out.push('\n');
                }
            }
            out.push_str(text);
        };
        // Whether the previous declaration took several lines (None before the first).
        let mut previous_multi: Option<bool> = None;
        for item in &module.items {
            let span = item.span();
            let mut comments = Vec::new();
            self.comments_before(span.start, &mut comments);
            let blank_before = self.blank(self.last, span.start);
            self.last = span.start;
            let doc = self.item(item);
            let mut rendered = print(&doc);
            let multi = rendered.contains('\n');
            for (i, comment) in self.trailing(span.end, end).iter().enumerate() {
                rendered.push(if i == 0 { ' ' } else { '\n' });
                rendered.push_str(self.slice(*comment).trim_end());
            }
            // A declaration of several lines stands apart from its neighbours; one-line
            // declarations may be grouped.
            let apart = previous_multi.is_some_and(|previous| previous || multi);
            let first_comment = comments.is_empty();
            for (i, entry) in comments.into_iter().enumerate() {
                push(
                    &mut out,
                    &print(&entry.doc),
                    entry.blank_before || (i == 0 && apart),
                );
            }
            push(
                &mut out,
                &rendered,
                blank_before || (first_comment && apart),
            );
            previous_multi = Some(multi);
        }
        let mut comments = Vec::new();
        self.comments_before(end, &mut comments);
        for entry in comments {
            push(&mut out, &print(&entry.doc), entry.blank_before);
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out
    }

    fn item(&mut self, item: &Item) -> Doc {
        match item {
            Item::Import(import) => {
                concat(vec![text("import "), text(self.string(import.path.span))])
            }
            Item::Type(decl) if decl.refined.is_some() => {
                let refined = decl
                    .refined
                    .as_ref()
                    .map(|t| self.ty(t))
                    .unwrap_or_else(|| text(""));
                concat(vec![
                    text("type "),
                    text(&decl.name.name),
                    text(" = "),
                    refined,
                ])
            }
            Item::Type(decl) => {
                let opener = self.find(T::LBrace, decl.name.span.end);
                let close = self.close_after(decl.fields.last().map_or(opener.end, |f| f.span.end));
                let fields = self.delimited(
                    Delims::Brace,
                    opener,
                    close,
                    &decl.fields,
                    |f| f.span,
                    |b, f| b.field(f),
                );
                concat(vec![
                    text("type "),
                    text(&decl.name.name),
                    text(" = "),
                    fields,
                ])
            }
            Item::Enum(decl) => {
                let opener = self.find(T::LBrace, decl.name.span.end);
                let close =
                    self.close_after(decl.variants.last().map_or(opener.end, |v| v.span.end));
                let variants = self.delimited(
                    Delims::Brace,
                    opener,
                    close,
                    &decl.variants,
                    |v| v.span,
                    |b, v| b.variant(v),
                );
                concat(vec![
                    text("enum "),
                    text(&decl.name.name),
                    text(" "),
                    variants,
                ])
            }
            Item::Tool(decl) => {
                let mut parts = vec![
                    text("tool "),
                    text(&decl.name.name),
                    self.params(decl.name.span.end, &decl.params),
                    text(" -> "),
                    self.ty(&decl.ret),
                    text(" via "),
                ];
                parts.push(match &decl.binding {
                    ToolBinding::Http { method, path } => {
                        text(format!("http {} {}", method.name, self.string(path.span)))
                    }
                    ToolBinding::Exec { command } => {
                        text(format!("exec {}", self.string(command.span)))
                    }
                    ToolBinding::Llm { model, prompt } => text(format!(
                        "llm {} prompt {}",
                        self.string(model.span),
                        self.string(prompt.span)
                    )),
                    ToolBinding::Error => text(""),
                });
                if !decl.raises.is_empty() {
                    let raises: Vec<String> = decl
                        .raises
                        .iter()
                        .map(|r| match r.on {
                            RaiseOn::Status(code) => format!("{} on {code}", r.error.name),
                            RaiseOn::Exit(code) => format!("{} on exit {code}", r.error.name),
                            RaiseOn::Refusal => format!("{} on refusal", r.error.name),
                        })
                        .collect();
                    parts.push(text(format!(" raises {}", raises.join(", "))));
                }
                if decl.sensitive.is_some() {
                    parts.push(text(" sensitive"));
                }
                concat(parts)
            }
            Item::Error(decl) => {
                let mut parts = vec![text("error "), text(&decl.name.name)];
                if !decl.fields.is_empty() {
                    parts.push(self.params(decl.name.span.end, &decl.fields));
                }
                concat(parts)
            }
            Item::Workflow(decl) => {
                let mut parts = vec![
                    text("workflow "),
                    text(&decl.name.name),
                    self.params(decl.name.span.end, &decl.params),
                ];
                if let Some(ret) = &decl.ret {
                    parts.push(text(" -> "));
                    parts.push(self.ty(ret));
                }
                if !decl.raises.is_empty() {
                    let names: Vec<&str> = decl.raises.iter().map(|r| r.name.as_str()).collect();
                    parts.push(text(format!(" raises {}", names.join(", "))));
                }
                if decl.accepts.is_empty() {
                    parts.push(text(" "));
                } else {
                    parts.push(self.accepts(&decl.accepts));
                }
                parts.push(self.block(&decl.body, false));
                concat(parts)
            }
            Item::Function(decl) => {
                let mut parts = vec![
                    text("fn "),
                    text(&decl.name.name),
                    self.params(decl.name.span.end, &decl.params),
                ];
                if let Some(ret) = &decl.ret {
                    parts.push(text(" -> "));
                    parts.push(self.ty(ret));
                }
                parts.push(text(" "));
                parts.push(self.block(&decl.body, false));
                concat(parts)
            }
            Item::Test(decl) => {
                let opener = self.find(T::LBrace, decl.name.span.end);
                let close = Span::new(decl.span.end as usize - 1, decl.span.end as usize);
                let steps = self.delimited_broken(
                    Delims::Brace,
                    opener,
                    close,
                    &decl.steps,
                    |s| s.span,
                    "",
                    |b, s| b.test_step(s),
                );
                concat(vec![
                    text("test "),
                    text(self.string(decl.name.span)),
                    text(" "),
                    steps,
                ])
            }
        }
    }

    /// ` accepts a: T from role("x"), b from user("y") ` on the workflow's line when it fits,
    /// else on a line of its own under the name, one signal a line, with the body's `{`
    /// after it on its own line.
    fn accepts(&mut self, signals: &[SignalDecl]) -> Doc {
        let mut list = Vec::new();
        for (i, signal) in signals.iter().enumerate() {
            if i > 0 {
                list.push(text(","));
                list.push(Doc::Line);
            }
            let mut one = vec![text(&signal.name.name)];
            if let Some(ty) = &signal.ty {
                one.push(text(": "));
                one.push(self.ty(ty));
            }
            for (j, sender) in signal.senders.iter().enumerate() {
                one.push(text(if j == 0 { " from " } else { " or " }));
                one.push(text(format!(
                    "{}({})",
                    sender.kind.name,
                    self.string(sender.name.span)
                )));
            }
            list.push(concat(one));
        }
        group(concat(vec![
            indent(concat(vec![
                Doc::Line,
                text("accepts "),
                indent(concat(list)),
            ])),
            Doc::Line,
        ]))
    }

    /// `(a, b)` after `after`: a call's arguments or a mock's parameter names.
    fn paren_list<I>(
        &mut self,
        after: u32,
        items: &[I],
        span_of: impl Fn(&I) -> Span,
        build: impl FnMut(&mut Self, &I) -> Doc,
    ) -> Doc {
        let opener = self.find(T::LParen, after);
        let close = self.close_after(items.last().map_or(opener.end, |i| span_of(i).end));
        self.inline_list(Delims::Paren, opener, close, items, span_of, build)
    }

    fn test_step(&mut self, step: &TestStep) -> Doc {
        let mut parts: Vec<Doc> = Vec::new();
        match &step.kind {
            TestStepKind::Mock {
                tool,
                params,
                behavior,
                times,
            } => {
                parts.push(text(format!("mock {}", tool.name)));
                if let Some(params) = params {
                    parts.push(self.paren_list(
                        tool.span.end,
                        params,
                        |p| p.span,
                        |_, p| text(&p.name),
                    ));
                }
                match behavior {
                    MockBehavior::Returns(expr) => {
                        parts.push(text(" returns "));
                        parts.push(self.expr(expr));
                    }
                    MockBehavior::Replies(raw) => {
                        parts.push(text(format!(" replies {}", self.string(raw.span))));
                    }
                    MockBehavior::Fails {
                        kind,
                        message,
                        permanent,
                    } => {
                        parts.push(text(format!(" fails {}", kind.name)));
                        if let Some(message) = message {
                            parts.push(text(format!(" {}", self.string(message.span))));
                        }
                        if *permanent {
                            parts.push(text(" permanent"));
                        }
                    }
                }
                if let Some((n, _)) = times {
                    parts.push(text(format!(" times {n}")));
                }
            }
            TestStepKind::Start {
                name,
                workflow,
                input,
                by,
            } => {
                if let Some(name) = name {
                    parts.push(text(format!("let {} = ", name.name)));
                }
                parts.push(text(format!("start {}", workflow.name)));
                match input {
                    StartInput::Args(args) => parts.push(self.paren_list(
                        workflow.span.end,
                        args,
                        |a| a.span,
                        |b, a| b.expr(a),
                    )),
                    StartInput::Json(json) => {
                        parts.push(text(format!(" json {}", self.string(json.span))));
                    }
                    StartInput::JsonFile(path) => {
                        parts.push(text(format!(" json file {}", self.string(path.span))));
                    }
                }
                if let Some(by) = by {
                    parts.push(text(format!(" as {}", self.string(by.span))));
                }
            }
            TestStepKind::ExpectGate {
                input,
                gate,
                fields,
            } => {
                let kind = if *input { "input" } else { "approval" };
                parts.push(text(format!("expect {kind} {}", self.string(gate.span))));
                if let Some(fields) = fields {
                    parts.push(text(" with "));
                    parts.push(self.expr(fields));
                }
            }
            TestStepKind::Decide {
                approve,
                gate,
                user,
                comment,
                refused,
            } => {
                if *refused {
                    parts.push(text("expect refused "));
                }
                parts.push(text(if *approve { "approve" } else { "reject" }));
                if let Some(gate) = gate {
                    parts.push(text(format!(" {}", self.string(gate.span))));
                }
                parts.push(text(format!(" as {}", self.string(user.span))));
                if let Some(comment) = comment {
                    parts.push(text(format!(" comment {}", self.string(comment.span))));
                }
            }
            TestStepKind::Provide {
                gate,
                user,
                value,
                refused,
            } => {
                if *refused {
                    parts.push(text("expect refused "));
                }
                parts.push(text(format!(
                    "provide input {} as {} value ",
                    self.string(gate.span),
                    self.string(user.span)
                )));
                parts.push(self.expr(value));
            }
            TestStepKind::Signal {
                name,
                user,
                value,
                refused,
            } => {
                if *refused {
                    parts.push(text("expect refused "));
                }
                parts.push(text(format!(
                    "signal {} as {}",
                    name.name,
                    self.string(user.span)
                )));
                if let Some(value) = value {
                    parts.push(text(" value "));
                    parts.push(self.expr(value));
                }
            }
            TestStepKind::Advance { by } => {
                parts.push(text("advance "));
                parts.push(self.expr(by));
            }
            TestStepKind::Cancel { compensate } => parts.push(text(if *compensate {
                "cancel"
            } else {
                "cancel without undo"
            })),
            TestStepKind::ExpectResult(ResultCheck::Matches(pattern)) => {
                parts.push(text("expect result "));
                parts.push(self.pattern(pattern));
            }
            TestStepKind::ExpectResult(ResultCheck::Equals(expr)) => {
                parts.push(text("expect result == "));
                parts.push(self.expr(expr));
            }
            TestStepKind::ExpectQuery { name, check } => {
                parts.push(text(format!("expect query {} ", name.name)));
                match check {
                    ResultCheck::Matches(pattern) => parts.push(self.pattern(pattern)),
                    ResultCheck::Equals(expr) => {
                        parts.push(text("== "));
                        parts.push(self.expr(expr));
                    }
                }
            }
            TestStepKind::ExpectError { kind, message } => {
                parts.push(text(format!("expect error {}", kind.name)));
                if let Some(message) = message {
                    parts.push(text(format!(" {}", self.string(message.span))));
                }
            }
            TestStepKind::ExpectCalled {
                tool,
                negated,
                times,
                args,
            } => {
                let not = if *negated { "not " } else { "" };
                parts.push(text(format!("expect {not}called {}", tool.name)));
                if let Some((n, _)) = times {
                    parts.push(text(format!(" {n} times")));
                }
                if let Some(args) = args {
                    let after = times.map_or(tool.span.end, |(_, s)| s.end);
                    parts.push(text(" with "));
                    parts.push(self.paren_list(after, args, |a| a.span, |b, a| b.expr(a)));
                }
            }
            TestStepKind::ExpectCallOrder { calls } => {
                parts.push(text("expect called in order "));
                for (i, call) in calls.iter().enumerate() {
                    if i > 0 {
                        parts.push(text(", "));
                    }
                    parts.push(text(&call.tool.name));
                    if let Some(args) = &call.args {
                        let after = call.tool.span.end;
                        parts.push(self.paren_list(after, args, |a| a.span, |b, a| b.expr(a)));
                    }
                }
            }
            TestStepKind::ExpectAudit { event, fields } => {
                parts.push(text(format!("expect audit {}", self.string(event.span))));
                if let Some(fields) = fields {
                    parts.push(text(" with "));
                    parts.push(self.expr(fields));
                }
            }
            TestStepKind::ExpectEscalated { gate } => {
                parts.push(text(format!("expect escalated {}", self.string(gate.span))));
            }
            TestStepKind::ExpectNotified { gate, fields } => {
                parts.push(text(format!("expect notified {}", self.string(gate.span))));
                if let Some(fields) = fields {
                    parts.push(text(" with "));
                    parts.push(self.expr(fields));
                }
            }
            TestStepKind::ExpectStatus(status) => {
                parts.push(text(format!("expect status {}", status.name)));
            }
            // A file with syntax errors is not formatted.
            TestStepKind::Error => parts.push(text(&self.src[step.span.range()])),
        }
        if let Some(run) = &step.run {
            parts.push(text(format!(" in {}", run.name)));
        }
        self.last = self.last.max(step.span.end);
        concat(parts)
    }

    fn params(&mut self, name_end: u32, params: &[Field]) -> Doc {
        let opener = self.find(T::LParen, name_end);
        let close = self.close_after(params.last().map_or(opener.end, |p| p.span.end));
        self.inline_list(
            Delims::Paren,
            opener,
            close,
            params,
            |p| p.span,
            |b, p| b.field(p),
        )
    }

    fn field(&mut self, field: &Field) -> Doc {
        concat(vec![text(&field.name.name), text(": "), self.ty(&field.ty)])
    }

    fn variant(&mut self, variant: &Variant) -> Doc {
        if variant.fields.is_empty() {
            return text(&variant.name.name);
        }
        let opener = self.find(T::LParen, variant.name.span.end);
        let close = self.close_after(variant.fields.last().map_or(opener.end, |f| f.span.end));
        let fields = self.inline_list(
            Delims::Paren,
            opener,
            close,
            &variant.fields,
            |f| f.span,
            |b, f| b.field(f),
        );
        concat(vec![text(&variant.name.name), fields])
    }

    /// A range's bounds as written (`1_000`, `-5`, `0.5`), joined by `..`.
    fn range(&self, min: &Option<Bound>, max: &Option<Bound>) -> String {
        let bound = |b: &Option<Bound>| {
            b.map(|b| {
                self.slice(b.span)
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect::<String>()
            })
            .unwrap_or_default()
        };
        format!("{}..{}", bound(min), bound(max))
    }

    fn ty(&mut self, ty: &TypeExpr) -> Doc {
        match &ty.kind {
            TypeExprKind::Named { name, args } if args.is_empty() => text(&name.name),
            TypeExprKind::Named { name, args } => {
                let opener = self.find(T::Lt, name.span.end);
                let close = self.close_after(args.last().map_or(opener.end, |a| a.span.end));
                let args = self.inline_list(
                    Delims::Angle,
                    opener,
                    close,
                    args,
                    |a| a.span,
                    |b, a| b.ty(a),
                );
                concat(vec![text(&name.name), args])
            }
            // `T? ?` keeps its space: `??` is one token, the coalescing operator.
            TypeExprKind::Optional(inner) => {
                let mark = match inner.kind {
                    TypeExprKind::Optional(_) => " ?",
                    _ => "?",
                };
                concat(vec![self.ty(inner), text(mark)])
            }
            // `Float in 0.0..1.0`, `String matching "…"` (the pattern as written),
            // `List<T> nonempty`, `String length 1..80`.
            TypeExprKind::Refined(refined) => {
                let rule = match &refined.rule {
                    RuleExpr::Range { min, max } => {
                        format!("in {}", self.range(min, max))
                    }
                    RuleExpr::Length { min, max } => {
                        format!("length {}", self.range(min, max))
                    }
                    RuleExpr::Matching(pattern) => {
                        format!("matching {}", self.slice(pattern.span))
                    }
                    RuleExpr::NonEmpty => "nonempty".to_string(),
                };
                concat(vec![self.ty(&refined.base), text(" "), text(&rule)])
            }
            TypeExprKind::Error => text(self.slice(ty.span)),
        }
    }

    // ----- blocks and statements ----------------------------------------------------

    /// A block; with `inline_ok`, a block that holds just a value or a jump (`return`,
    /// `break`, `continue`, `fail`), without blocks of its own, may share the line of its
    /// braces when the enclosing group fits.
    fn block(&mut self, block: &Block, inline_ok: bool) -> Doc {
        let opener = Span::new(block.span.start as usize, block.span.start as usize + 1);
        let close = Span::new(block.span.end as usize - 1, block.span.end as usize);
        if inline_ok
            && let [stmt] = block.stmts.as_slice()
            && is_value_or_jump(stmt)
            && !stmt_has_block(stmt)
            && !self.comment_within(block.span.start, block.span.end)
        {
            let stmt = self.stmt(stmt);
            self.last = self.last.max(block.span.end);
            return concat(vec![
                text("{"),
                indent(concat(vec![Doc::Line, stmt])),
                Doc::Line,
                text("}"),
            ]);
        }
        self.delimited_broken(
            Delims::Brace,
            opener,
            close,
            &block.stmts,
            |s| s.span,
            "",
            |b, s| b.stmt(s),
        )
    }

    fn stmt(&mut self, stmt: &Stmt) -> Doc {
        match &stmt.kind {
            StmtKind::LetUndo { name, value, undo } => concat(vec![
                text(format!("let {} = ", name.name)),
                self.expr(value),
                text(" undo "),
                self.block(undo, true),
            ]),
            StmtKind::Compensate => text("compensate"),
            StmtKind::OnCancel(block) => concat(vec![text("on cancel "), self.block(block, false)]),
            StmtKind::Let {
                mutable,
                name,
                ty,
                value,
            } => {
                let mut parts = vec![
                    text(if *mutable { "var " } else { "let " }),
                    text(&name.name),
                ];
                if let Some(ty) = ty {
                    parts.push(text(": "));
                    parts.push(self.ty(ty));
                }
                parts.push(text(" = "));
                parts.push(self.expr(value));
                concat(parts)
            }
            StmtKind::Assign { target, value } => {
                concat(vec![self.expr(target), text(" = "), self.expr(value)])
            }
            // A line that starts with `-` would continue the statement above it.
            StmtKind::Expr(expr) if self.starts_with_minus(expr) => {
                concat(vec![text("("), self.expr(expr), text(")")])
            }
            StmtKind::Expr(expr) => self.expr(expr),
            // Loop bodies always take their own lines.
            // A one-value query stays on its line: `query months -> Int { months }`.
            StmtKind::Query { name, ret, body } => group(concat(vec![
                text(format!("query {} -> ", name.name)),
                self.ty(ret),
                text(" "),
                self.block(body, true),
            ])),
            StmtKind::While { cond, body } => concat(vec![
                text("while "),
                self.expr(cond),
                text(" "),
                self.block(body, false),
            ]),
            StmtKind::For { var, iter, body } => concat(vec![
                text("for "),
                text(&var.name),
                text(" in "),
                self.expr(iter),
                text(" "),
                self.block(body, false),
            ]),
            StmtKind::Break => text("break"),
            StmtKind::Continue => text("continue"),
            StmtKind::ContinueAs { workflow, args } => concat(vec![
                text(format!("continue as {}", workflow.name)),
                self.call_arguments(workflow.span.end, args),
            ]),
            StmtKind::Return(None) => text("return"),
            StmtKind::Return(Some(value)) => concat(vec![text("return "), self.expr(value)]),
            StmtKind::Fail(value) => concat(vec![text("fail "), self.expr(value)]),
            StmtKind::Sleep(value) => concat(vec![text("sleep "), self.expr(value)]),
            StmtKind::Waive(waiver) => {
                let tools: Vec<&str> = waiver.tools.iter().map(|t| t.name.as_str()).collect();
                let mut parts = vec![
                    text(format!("waive approval for {} because ", tools.join(", "))),
                    text(self.string(waiver.because.span)),
                ];
                if !waiver.fields.is_empty() {
                    let opener = self.find(T::LBrace, waiver.because.span.end);
                    let close = self.close_after(
                        waiver
                            .fields
                            .last()
                            .map_or(opener.end, |f| field_init_span(f).end),
                    );
                    parts.push(text(" "));
                    parts.push(self.delimited(
                        Delims::Brace,
                        opener,
                        close,
                        &waiver.fields,
                        field_init_span,
                        |b, f| b.field_init(f),
                    ));
                }
                concat(parts)
            }
            StmtKind::Audit { event, fields } => {
                let opener = self.find(T::LBrace, event.span.end);
                let close =
                    self.close_after(fields.last().map_or(opener.end, |f| field_init_span(f).end));
                let fields = self.delimited(
                    Delims::Brace,
                    opener,
                    close,
                    fields,
                    field_init_span,
                    |b, f| b.field_init(f),
                );
                concat(vec![
                    text("audit "),
                    text(self.string(event.span)),
                    text(" "),
                    fields,
                ])
            }
            StmtKind::Error => text(self.slice(stmt.span)),
        }
    }

    // ----- expressions --------------------------------------------------------------

    /// Whether the source wrote parentheses around `expr` (they are kept).
    fn parenthesized(&self, expr: &Expr) -> bool {
        let inner_start = match &expr.kind {
            ExprKind::Binary { lhs, .. } => lhs.span.start,
            ExprKind::Field { base, .. } | ExprKind::Index { base, .. } => base.span.start,
            ExprKind::Call { callee, .. } => callee.span.start,
            _ => return self.src.as_bytes().get(expr.span.start as usize) == Some(&b'('),
        };
        expr.span.start < inner_start
    }

    /// Whether the expression, printed, starts with a `-`.
    fn starts_with_minus(&self, expr: &Expr) -> bool {
        if self.parenthesized(expr) {
            return false;
        }
        match &expr.kind {
            ExprKind::Unary {
                op: UnaryOp::Neg, ..
            } => true,
            ExprKind::Binary { lhs, .. } => self.starts_with_minus(lhs),
            ExprKind::Field { base, .. } | ExprKind::Index { base, .. } => {
                self.starts_with_minus(base)
            }
            ExprKind::Call { callee, .. } => self.starts_with_minus(callee),
            _ => false,
        }
    }

    /// `(a, b)` after a callee that ends at `after`.
    fn call_arguments(&mut self, after: u32, args: &[Expr]) -> Doc {
        let opener = self.find(T::LParen, after);
        let close = self.close_after(args.last().map_or(opener.end, |a| a.span.end));
        self.inline_list(
            Delims::Paren,
            opener,
            close,
            args,
            |a| a.span,
            |b, a| b.expr(a),
        )
    }

    fn expr(&mut self, expr: &Expr) -> Doc {
        let doc = match &expr.kind {
            ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Duration(_) => {
                text(self.literal(expr.span))
            }
            // `time` and its string, one space apart.
            ExprKind::Time(_) => text(format!("time {}", self.string(expr.span))),
            ExprKind::Bool(value) => text(if *value { "true" } else { "false" }),
            ExprKind::None => text("none"),
            ExprKind::Str(_) => text(self.string(expr.span)),
            ExprKind::Name(name) => text(name),
            ExprKind::List(items) => {
                let opener = self.find(T::LBracket, expr.span.start);
                let close = self.close_after(items.last().map_or(opener.end, |i| i.span.end));
                self.delimited(
                    Delims::Bracket,
                    opener,
                    close,
                    items,
                    |i| i.span,
                    |b, i| b.expr(i),
                )
            }
            ExprKind::Record(fields) => {
                let opener = self.find(T::LBrace, expr.span.start);
                let close =
                    self.close_after(fields.last().map_or(opener.end, |f| field_init_span(f).end));
                self.delimited(
                    Delims::Brace,
                    opener,
                    close,
                    fields,
                    field_init_span,
                    |b, f| b.field_init(f),
                )
            }
            ExprKind::Field {
                base,
                name,
                optional,
            } => concat(vec![
                self.expr(base),
                text(if *optional { "?." } else { "." }),
                text(&name.name),
            ]),
            ExprKind::Index { base, index } => concat(vec![
                self.expr(base),
                text("["),
                self.expr(index),
                text("]"),
            ]),
            ExprKind::Call { callee, args } => {
                let callee_doc = self.expr(callee);
                concat(vec![callee_doc, self.call_arguments(callee.span.end, args)])
            }
            ExprKind::Unary { op, operand } => concat(vec![
                text(match op {
                    UnaryOp::Not => "!",
                    UnaryOp::Neg => "-",
                }),
                self.expr(operand),
            ]),
            ExprKind::Binary { op, lhs, rhs } => concat(vec![
                self.expr(lhs),
                text(format!(" {} ", op.symbol())),
                self.expr(rhs),
            ]),
            ExprKind::If {
                cond,
                then_block,
                else_branch,
            } => group(self.if_chain(cond, then_block, else_branch.as_deref())),
            ExprKind::Match { scrutinee, arms } => {
                let scrutinee_doc = self.expr(scrutinee);
                let opener = self.find(T::LBrace, scrutinee.span.end);
                let close = self.close_after(arms.last().map_or(opener.end, |a| a.span.end));
                let arms = self.delimited_broken(
                    Delims::Brace,
                    opener,
                    close,
                    arms,
                    |a| a.span,
                    ",",
                    |b, a| b.arm(a),
                );
                concat(vec![text("match "), scrutinee_doc, text(" "), arms])
            }
            ExprKind::Block(block) => group(self.block(block, true)),
            ExprKind::Retry {
                policies,
                per_kind,
                body,
            } => {
                let mut parts = vec![text("retry ")];
                if *per_kind {
                    let opener = self.find(T::LBrace, expr.span.start);
                    let close =
                        self.close_after(policies.last().map_or(opener.end, |p| p.span.end));
                    parts.push(self.delimited_broken(
                        Delims::Brace,
                        opener,
                        close,
                        policies,
                        |p| p.span,
                        ",",
                        |b, p| {
                            let kinds: Vec<&str> =
                                p.kinds.iter().map(|k| k.name.as_str()).collect();
                            let binding = p
                                .binding
                                .as_ref()
                                .map(|b| format!("({})", b.name))
                                .unwrap_or_default();
                            let mut policy =
                                vec![text(format!("on {}{binding}: ", kinds.join(", ")))];
                            policy.extend(b.retry_policy(p));
                            concat(policy)
                        },
                    ));
                } else if let Some(policy) = policies.first() {
                    parts.extend(self.retry_policy(policy));
                    if !policy.kinds.is_empty() {
                        let kinds: Vec<&str> =
                            policy.kinds.iter().map(|k| k.name.as_str()).collect();
                        parts.push(text(format!(" on {}", kinds.join(", "))));
                    }
                }
                parts.push(text(" "));
                parts.push(self.block(body, true));
                group(concat(parts))
            }
            ExprKind::Timeout { duration, body } => group(concat(vec![
                text("timeout "),
                self.expr(duration),
                text(" "),
                self.block(body, true),
            ])),
            ExprKind::Try { body, catches } => {
                let mut parts = vec![text("try "), self.block(body, true)];
                for catch in catches {
                    parts.push(text(" catch "));
                    parts.push(text(match (&catch.error, &catch.binding) {
                        (Some(error), Some(binding)) => format!("{}({})", error.name, binding.name),
                        (Some(error), None) => error.name.to_string(),
                        (None, Some(binding)) => binding.name.to_string(),
                        (None, None) => String::new(),
                    }));
                    parts.push(text(" "));
                    parts.push(self.block(&catch.handler, true));
                }
                group(concat(parts))
            }
            ExprKind::AwaitApproval { .. } | ExprKind::AwaitInput { .. } => {
                concat(vec![text("await "), self.gate_wait(expr)])
            }
            ExprKind::AwaitSignal { name } => text(format!("await signal {}", name.name)),
            ExprKind::Select { arms } => {
                let opener = self.find(T::LBrace, expr.span.start);
                let close = self.close_after(arms.last().map_or(opener.end, |a| a.span.end));
                let arms = self.delimited_broken(
                    Delims::Brace,
                    opener,
                    close,
                    arms,
                    |a| a.span,
                    ",",
                    |b, a| b.select_arm(a),
                );
                concat(vec![text("select "), arms])
            }
            ExprKind::Parallel(parallel) => self.parallel(parallel, expr.span),
            ExprKind::Error => text(self.slice(expr.span)),
        };
        if self.parenthesized(expr) {
            concat(vec![text("("), doc, text(")")])
        } else {
            doc
        }
    }

    /// `if … { } else if … { } else { }`: one group, so all its blocks share one layout.
    fn if_chain(&mut self, cond: &Expr, then_block: &Block, else_branch: Option<&Expr>) -> Doc {
        let mut parts = vec![
            text("if "),
            self.expr(cond),
            text(" "),
            self.block(then_block, true),
        ];
        if let Some(otherwise) = else_branch {
            parts.push(text(" else "));
            parts.push(match &otherwise.kind {
                ExprKind::If {
                    cond,
                    then_block,
                    else_branch,
                } => self.if_chain(cond, then_block, else_branch.as_deref()),
                ExprKind::Block(block) => self.block(block, true),
                _ => self.expr(otherwise),
            });
        }
        concat(parts)
    }

    fn arm(&mut self, arm: &MatchArm) -> Doc {
        let pattern = self.pattern(&arm.pattern);
        let body = match &arm.body.kind {
            ExprKind::Block(block) => self.block(block, true),
            _ => self.expr(&arm.body),
        };
        group(concat(vec![pattern, text(" => "), body]))
    }

    /// `parallel for x in items max N collect { … }` (the body may stay on one line) or
    /// `parallel collect { name: value, … }` (a branch per line, like `select`'s arms).
    fn parallel(&mut self, parallel: &Parallel, span: Span) -> Doc {
        let collect = if parallel.collect { "collect " } else { "" };
        match &parallel.branches {
            ParallelBranches::Each {
                var,
                items,
                max,
                body,
            } => {
                let mut parts = vec![
                    text(format!("parallel for {} in ", var.name)),
                    self.expr(items),
                ];
                if let Some(max) = max {
                    parts.push(text(" max "));
                    parts.push(self.expr(max));
                }
                parts.push(text(format!(" {collect}")));
                parts.push(self.block(body, true));
                group(concat(parts))
            }
            ParallelBranches::Fields(fields) => {
                let opener = self.find(T::LBrace, span.start);
                let close =
                    self.close_after(fields.last().map_or(opener.end, |f| field_init_span(f).end));
                let fields = self.delimited_broken(
                    Delims::Brace,
                    opener,
                    close,
                    fields,
                    field_init_span,
                    ",",
                    |b, f| b.field_init(f),
                );
                concat(vec![text(format!("parallel {collect}")), fields])
            }
        }
    }

    /// `approval "g" { … }` or `input<T> "i" { … }`: what follows `await`, and what a
    /// `select` arm waits for.
    fn gate_wait(&mut self, expr: &Expr) -> Doc {
        match &expr.kind {
            ExprKind::AwaitApproval { gate, options } => concat(vec![
                text("approval "),
                text(self.string(gate.span)),
                text(" "),
                self.options(gate.span.end, options),
            ]),
            ExprKind::AwaitInput { ty, name, options } => concat(vec![
                text("input<"),
                self.ty(ty),
                text("> "),
                text(self.string(name.span)),
                text(" "),
                self.options(name.span.end, options),
            ]),
            _ => self.expr(expr),
        }
    }

    /// `3 backoff 1s multiplier 1.5 max 30s jitter none within 2h after r.retry_after`, as
    /// written (the kinds are the caller's).
    fn retry_policy(&mut self, policy: &RetryPolicy) -> Vec<Doc> {
        let mut parts = vec![if policy.forever {
            text("forever")
        } else {
            self.expr(&policy.attempts)
        }];
        let mut word = |b: &mut Self, word: &str, e: &Option<Expr>| {
            if let Some(e) = e {
                parts.push(text(format!(" {word} ")));
                parts.push(b.expr(e));
            }
        };
        word(self, "backoff", &policy.backoff);
        word(self, "multiplier", &policy.multiplier);
        word(self, "max", &policy.max);
        if policy.no_jitter {
            parts.push(text(" jitter none"));
        }
        let mut word = |b: &mut Self, word: &str, e: &Option<Expr>| {
            if let Some(e) = e {
                parts.push(text(format!(" {word} ")));
                parts.push(b.expr(e));
            }
        };
        word(self, "within", &policy.within);
        word(self, "after", &policy.after);
        parts
    }

    fn select_arm(&mut self, arm: &SelectArm) -> Doc {
        let waits = match &arm.kind {
            SelectArmKind::Signal { name, binding } => match binding {
                Some(binding) => text(format!("signal {} as {}", name.name, binding.name)),
                None => text(format!("signal {}", name.name)),
            },
            SelectArmKind::After { duration } => concat(vec![text("after "), self.expr(duration)]),
            SelectArmKind::Wait { wait, binding } => {
                let wait = match &wait.kind {
                    ExprKind::AwaitApproval { .. } | ExprKind::AwaitInput { .. } => {
                        self.gate_wait(wait)
                    }
                    _ => self.expr(wait),
                };
                match binding {
                    Some(binding) => concat(vec![wait, text(format!(" as {}", binding.name))]),
                    None => wait,
                }
            }
        };
        let body = match &arm.body.kind {
            ExprKind::Block(block) => self.block(block, true),
            _ => self.expr(&arm.body),
        };
        group(concat(vec![waits, text(" => "), body]))
    }

    fn field_init(&mut self, field: &FieldInit) -> Doc {
        // `{ id }` stays shorthand for `{ id: id }`.
        if field.value.span == field.name.span {
            return text(&field.name.name);
        }
        concat(vec![
            text(&field.name.name),
            text(": "),
            self.expr(&field.value),
        ])
    }

    fn options(&mut self, after: u32, options: &[AwaitOption]) -> Doc {
        let opener = self.find(T::LBrace, after);
        let close = self.close_after(options.last().map_or(opener.end, |o| o.span.end));
        self.delimited(
            Delims::Brace,
            opener,
            close,
            options,
            |o| o.span,
            |b, o| {
                let mut parts = vec![text(&o.name.name), text(": "), b.expr(&o.value)];
                if let Some(after) = &o.after {
                    parts.push(text(" after "));
                    parts.push(b.expr(after));
                }
                concat(parts)
            },
        )
    }

    fn pattern(&mut self, pattern: &Pattern) -> Doc {
        match &pattern.kind {
            PatternKind::Wildcard => text("_"),
            PatternKind::Name(name) => text(name),
            PatternKind::Variant {
                enum_name,
                name,
                fields,
            } => {
                let head = match enum_name {
                    Some(enum_name) => format!("{}.{}", enum_name.name, name.name),
                    None => name.name.to_string(),
                };
                if fields.is_empty() {
                    // `Held()` is a variant pattern; `Held` alone could be a binding.
                    return text(if enum_name.is_none() {
                        format!("{head}()")
                    } else {
                        head
                    });
                }
                let opener = self.find(T::LParen, name.span.end);
                let close = self.close_after(fields.last().map_or(opener.end, |f| f.span.end));
                let fields = self.inline_list(
                    Delims::Paren,
                    opener,
                    close,
                    fields,
                    |f| f.span,
                    |b, f| b.pattern(f),
                );
                concat(vec![text(head), fields])
            }
            PatternKind::Int(_) | PatternKind::Duration(_) => {
                let number = self.literal(pattern.span);
                if self.slice(pattern.span).starts_with('-') {
                    text(format!("-{number}"))
                } else {
                    text(number)
                }
            }
            PatternKind::Str(_) => text(self.string(pattern.span)),
            PatternKind::Bool(value) => text(if *value { "true" } else { "false" }),
            PatternKind::None => text("none"),
            PatternKind::Error => text(self.slice(pattern.span)),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Delims {
    Brace,
    Bracket,
    Paren,
    Angle,
}

impl Delims {
    fn texts(self) -> (&'static str, &'static str) {
        match self {
            Delims::Brace => ("{", "}"),
            Delims::Bracket => ("[", "]"),
            Delims::Paren => ("(", ")"),
            Delims::Angle => ("<", ">"),
        }
    }
}

fn field_init_span(field: &FieldInit) -> Span {
    field.name.span.to(field.value.span)
}

/// A statement that gives the block its value or leaves it.
fn is_value_or_jump(stmt: &Stmt) -> bool {
    matches!(
        stmt.kind,
        StmtKind::Expr(_)
            | StmtKind::Return(_)
            | StmtKind::Break
            | StmtKind::Continue
            | StmtKind::ContinueAs { .. }
            | StmtKind::Fail(_)
    )
}

/// Whether a statement holds a block of its own (such a statement never shares the line of
/// the braces around it).
fn stmt_has_block(stmt: &Stmt) -> bool {
    match &stmt.kind {
        StmtKind::While { .. }
        | StmtKind::For { .. }
        | StmtKind::Query { .. }
        | StmtKind::OnCancel(_)
        | StmtKind::LetUndo { .. } => true,
        StmtKind::Let { value, .. }
        | StmtKind::Expr(value)
        | StmtKind::Fail(value)
        | StmtKind::Sleep(value)
        | StmtKind::Return(Some(value)) => expr_has_block(value),
        StmtKind::Assign { target, value } => expr_has_block(target) || expr_has_block(value),
        StmtKind::Audit { fields, .. } => fields.iter().any(|f| expr_has_block(&f.value)),
        StmtKind::Waive(waiver) => waiver.fields.iter().any(|f| expr_has_block(&f.value)),
        StmtKind::ContinueAs { args, .. } => args.iter().any(expr_has_block),
        StmtKind::Break
        | StmtKind::Continue
        | StmtKind::Compensate
        | StmtKind::Return(None)
        | StmtKind::Error => false,
    }
}

fn expr_has_block(expr: &Expr) -> bool {
    match &expr.kind {
        ExprKind::If { .. }
        | ExprKind::Match { .. }
        | ExprKind::Select { .. }
        | ExprKind::Parallel(_)
        | ExprKind::Block(_)
        | ExprKind::Retry { .. }
        | ExprKind::Timeout { .. }
        | ExprKind::Try { .. } => true,
        ExprKind::List(items) => items.iter().any(expr_has_block),
        ExprKind::Record(fields) => fields.iter().any(|f| expr_has_block(&f.value)),
        ExprKind::Field { base, .. } => expr_has_block(base),
        ExprKind::Index { base, index } => expr_has_block(base) || expr_has_block(index),
        ExprKind::Call { callee, args } => {
            expr_has_block(callee) || args.iter().any(expr_has_block)
        }
        ExprKind::Unary { operand, .. } => expr_has_block(operand),
        ExprKind::Binary { lhs, rhs, .. } => expr_has_block(lhs) || expr_has_block(rhs),
        ExprKind::AwaitApproval { options, .. } | ExprKind::AwaitInput { options, .. } => options
            .iter()
            .any(|o| expr_has_block(&o.value) || o.after.as_deref().is_some_and(expr_has_block)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread with a small stack, like a language server's worker.
    fn on_small_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(f)
            .expect("spawn a thread")
            .join()
            .expect("no stack overflow");
    }

    #[test]
    fn nesting_up_to_the_parser_limit_formats_on_a_small_stack() {
        on_small_stack(|| {
            let depth = parser::MAX_DEPTH as usize - 10;
            let parens = format!("{}1{}", "(".repeat(depth), ")".repeat(depth));
            let chain = vec!["x"; depth].join(" + ");
            let records = format!("{}1{}", "{ a: ".repeat(depth / 2), " }".repeat(depth / 2));
            let ifs = format!(
                "{}1{}",
                "if x > 0 { ".repeat(depth / 3),
                " } else { 2 }".repeat(depth / 3)
            );
            for value in [parens, chain, records, ifs] {
                let text = format!("workflow w(x: Int) {{\n  let v = {value}\n}}\n");
                let once = format(&text).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(format(&once).expect("formats again"), once);
            }
        });
    }

    #[test]
    fn a_function_formats_like_a_workflow_and_round_trips() {
        let text = "/// Doubles.\nfn  twice( n :Int )->Int{n*2}\nfn noop(){}\n";
        let once = format(text).expect("formats");
        assert_eq!(
            once,
            "/// Doubles.\nfn twice(n: Int) -> Int {\n  n * 2\n}\n\nfn noop() {}\n"
        );
        assert_eq!(format(&once).expect("formats again"), once);
    }

    #[test]
    fn empty_and_blank_files() {
        assert_eq!(format("").expect("formats"), "");
        assert_eq!(format(" \n\n\t\n").expect("formats"), "");
        assert_eq!(
            format("// only\n\n\n// comments").expect("formats"),
            "// only\n\n// comments\n"
        );
    }

    #[test]
    fn syntax_errors_are_refused_with_the_first_one() {
        let Err(FormatError::Syntax {
            line,
            column,
            message,
            diagnostics,
        }) = format("workflow w() {\n  let = 1\n  let y = (\n}\n")
        else {
            panic!("a file with syntax errors must not be formatted");
        };
        assert_eq!((line, column), (2, 7));
        assert!(message.starts_with("Expected a variable name"), "{message}");
        assert!(diagnostics.len() >= 2);
    }

    #[test]
    fn crlf_and_trailing_whitespace_become_plain_lines() {
        let text = "workflow w() -> Int {  \r\n  // note  \r\n  1\r\n}";
        assert_eq!(
            format(text).expect("formats"),
            "workflow w() -> Int {\n  // note\n  1\n}\n"
        );
    }
}
