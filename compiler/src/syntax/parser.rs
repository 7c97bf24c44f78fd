//! Parsing: tokens in, a [`Module`] and syntax diagnostics out.
//!
//! A hand-written recursive-descent parser with Pratt-style binary operators. It never
//! fails: a malformed construct becomes an `Error` node, the error is reported once at its
//! exact span, and parsing resumes at the next sensible point — the next item, the next
//! statement (statements end at line breaks), or the closing delimiter of a list — so one
//! file reports every independent mistake. Nesting deeper than [`MAX_DEPTH`] is an error,
//! never a stack overflow. See `spec/architecture.md` for why this is not a combinator parser.

use super::ast::*;
use super::lexer::{Token, TokenStream, unescape};
use super::name::Interner;
use super::token::TokenKind as T;
use crate::diagnostics::{Diagnostic, codes};
use crate::span::{FileId, Span};

mod test_blocks;

/// How deeply expressions, blocks and types may nest (counting operator chains).
pub const MAX_DEPTH: u32 = 256;

pub struct Parsed {
    pub module: Module,
    /// The parser's own diagnostics.
    pub diagnostics: Vec<Diagnostic>,
    /// The lexer's diagnostics (they come before the parser's).
    pub lex_diagnostics: Vec<Diagnostic>,
    pub doc_comments: Vec<Span>,
    pub comments: Vec<Span>,
}

/// Lexes and parses a file. The parser pulls its tokens from a [`TokenStream`] as it goes,
/// so the file's tokens are never all in memory at once.
pub fn parse(file: FileId, src: &str) -> Parsed {
    let mut stream = TokenStream::new(file, src);
    let current = stream.next_token();
    let next = stream.next_token();
    let mut parser = Parser {
        file,
        src,
        stream,
        current,
        next,
        previous: Span::default(),
        pos: 0,
        depth: 0,
        diagnostics: Vec::new(),
        last_error_at: None,
        too_deep: false,
        names: Interner::default(),
    };
    let module = parser.parse_module();
    let stream = parser.stream;
    Parsed {
        module,
        diagnostics: parser.diagnostics,
        lex_diagnostics: stream.diagnostics,
        doc_comments: stream.doc_comments,
        comments: stream.comments,
    }
}

struct Parser<'a> {
    file: FileId,
    src: &'a str,
    /// The lexer, two tokens ahead of the parser: `current` and `next` came from it.
    stream: TokenStream<'a>,
    current: Token,
    next: Token,
    /// The span of the token before `current` (empty at the start).
    previous: Span,
    /// How many tokens were consumed: the index of `current`.
    pos: usize,
    depth: u32,
    diagnostics: Vec<Diagnostic>,
    /// Token index of the last reported error: one error per position stops cascades.
    last_error_at: Option<usize>,
    /// Set once the nesting limit is hit; the rest of the file is skipped.
    too_deep: bool,
    /// Every name of the file, allocated once.
    names: Interner,
}

/// Whether `{` may start a record literal here. Not in `if x {`, `while x {`, `match x {`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Records {
    Allowed,
    NotHere,
}

const ITEM_KEYWORDS: [T; 5] = [T::Import, T::Type, T::Enum, T::Tool, T::Workflow];

impl<'a> Parser<'a> {
    // ----- token cursor -------------------------------------------------------------

    fn token(&self) -> Token {
        self.current
    }

    /// The token after the current one.
    fn next_token(&self) -> Token {
        self.next
    }

    fn peek(&self) -> T {
        self.current.kind
    }

    fn span(&self) -> Span {
        self.current.span
    }

    fn previous_span(&self) -> Span {
        self.previous
    }

    fn at(&self, kind: T) -> bool {
        self.peek() == kind
    }

    fn bump(&mut self) -> Token {
        let token = self.current;
        if token.kind != T::Eof {
            self.pos += 1;
            self.previous = token.span;
            self.current = self.next;
            self.next = self.stream.next_token();
        }
        token
    }

    fn eat(&mut self, kind: T) -> Option<Span> {
        if self.at(kind) {
            Some(self.bump().span)
        } else {
            None
        }
    }

    fn text(&self, span: Span) -> &'a str {
        &self.src[span.range()]
    }

    /// Consumes `kind` or reports "expected …" at the current token.
    fn expect(&mut self, kind: T, help: &str) -> Option<Span> {
        if let Some(span) = self.eat(kind) {
            return Some(span);
        }
        self.error_expected(kind.describe(), help);
        None
    }

    // ----- errors and recovery ------------------------------------------------------

    fn report(&mut self, diagnostic: Diagnostic) {
        if self.too_deep || self.last_error_at == Some(self.pos) || self.echoes_lexer_error() {
            return;
        }
        self.last_error_at = Some(self.pos);
        self.diagnostics.push(diagnostic);
    }

    fn echoes_lexer_error(&self) -> bool {
        // The lexer is ahead of the parser, so it has reported everything before `current`.
        if self.at(T::Eof)
            && self
                .stream
                .diagnostics
                .iter()
                .any(|d| d.code == codes::UNTERMINATED_STRING)
        {
            return true;
        }
        let from = self.previous_span().end;
        let to = self.span().start;
        self.stream
            .diagnostics
            .iter()
            .any(|d| d.primary.span.start >= from && d.primary.span.end <= to)
    }

    /// Reports an unexpected token at the token itself (not after the previous one).
    fn error_unexpected(&mut self, expected: &str, help: &str) {
        let found = self.token();
        let found_text = match found.kind {
            T::Ident | T::Number | T::Float => format!("`{}`", self.text(found.span)),
            other => other.describe().to_string(),
        };
        let diagnostic = Diagnostic::error(
            codes::SYNTAX_ERROR,
            self.file,
            found.span,
            format!("expected {expected}"),
        )
        .with_message(format!("Expected {expected}, found {found_text}"))
        .with_help(help);
        self.report(diagnostic);
    }

    fn error_expected(&mut self, expected: &str, help: &str) {
        let found = self.token();
        let found_text = match found.kind {
            T::Ident | T::Number | T::Float => format!("`{}`", self.text(found.span)),
            other => other.describe().to_string(),
        };
        // An error at the end of the file or of a line reads best right after the last token.
        let span = if found.kind == T::Eof || (found.starts_line && self.pos > 0) {
            self.previous_span().end_point()
        } else {
            found.span
        };
        let label = if found.kind == T::Eof || (found.starts_line && self.pos > 0) {
            format!("expected {expected} after this")
        } else {
            format!("expected {expected}")
        };
        let mut diagnostic = Diagnostic::error(codes::SYNTAX_ERROR, self.file, span, label)
            .with_message(format!("Expected {expected}, found {found_text}"));
        if !help.is_empty() {
            diagnostic = diagnostic.with_help(help);
        }
        self.report(diagnostic);
    }

    fn error_count(&self) -> usize {
        self.diagnostics.len()
    }

    /// Skips to the end of the current statement: the next token that starts a line, a
    /// `;`, or the `}` closing the enclosing block, stepping over balanced brackets.
    fn recover_statement(&mut self, statement_start: usize) {
        let mut depth = 0usize;
        loop {
            let token = self.token();
            match token.kind {
                T::Eof => return,
                T::RBrace if depth == 0 => return,
                T::Semicolon if depth == 0 => {
                    self.bump();
                    return;
                }
                _ if depth == 0 && token.starts_line && self.pos > statement_start => return,
                T::LParen | T::LBrace | T::LBracket | T::InterpStart => depth += 1,
                T::RParen | T::RBrace | T::RBracket | T::InterpEnd => {
                    depth = depth.saturating_sub(1)
                }
                _ => {}
            }
            self.bump();
        }
    }

    /// Skips to the next `,` or the `close` of the list being parsed, over balanced brackets.
    fn recover_list_item(&mut self, close: T) {
        let mut depth = 0usize;
        loop {
            let kind = self.peek();
            match kind {
                T::Eof => return,
                T::Comma if depth == 0 => return,
                _ if kind == close && depth == 0 => return,
                _ if depth == 0 && ITEM_KEYWORDS.contains(&kind) && self.token().starts_line => {
                    return;
                }
                T::LParen | T::LBrace | T::LBracket | T::InterpStart => depth += 1,
                T::RParen | T::RBrace | T::RBracket | T::InterpEnd => {
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                }
                _ => {}
            }
            self.bump();
        }
    }

    /// Skips to the next item keyword at the start of a line.
    fn recover_item(&mut self) {
        self.bump();
        while !self.at(T::Eof) {
            let token = self.token();
            if token.starts_line
                && (ITEM_KEYWORDS.contains(&token.kind)
                    || self.at_test_item()
                    || (self.at_word("fn") && self.next_token().kind == T::Ident))
            {
                return;
            }
            self.bump();
        }
    }

    /// Enters one level of nesting; false (after reporting) when the limit is reached.
    fn enter(&mut self) -> bool {
        self.depth += 1;
        if self.depth <= MAX_DEPTH {
            return true;
        }
        if !self.too_deep {
            let diagnostic = Diagnostic::error(
                codes::NESTING_TOO_DEEP,
                self.file,
                self.span(),
                format!("more than {MAX_DEPTH} levels deep here"),
            )
            .with_message(
                "This code is nested too deeply (or an expression is too long) to compile",
            )
            .with_help("split it up: bind inner parts or partial results to names with `let`");
            self.diagnostics.push(diagnostic);
            self.too_deep = true;
        }
        while !self.at(T::Eof) {
            self.bump();
        }
        false
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    // ----- doc comments -------------------------------------------------------------

    /// The `///` comments directly above the token at `start`, joined by newlines.
    fn doc_before(&self, start: Span) -> Option<Box<str>> {
        let mut index = self
            .stream
            .doc_comments
            .partition_point(|d| d.end <= start.start);
        let mut next_start = start.start as usize;
        let mut lines = Vec::new();
        while index > 0 {
            let doc = self.stream.doc_comments[index - 1];
            let gap = &self.src[doc.end as usize..next_start];
            if !gap.trim().is_empty() || gap.matches('\n').count() > 1 {
                break;
            }
            let text = &self.src[doc.start as usize + 3..doc.end as usize];
            lines.push(text.strip_prefix(' ').unwrap_or(text).trim_end());
            next_start = doc.start as usize;
            index -= 1;
        }
        if lines.is_empty() {
            return None;
        }
        lines.reverse();
        Some(lines.join("\n").into_boxed_str())
    }

    // ----- items --------------------------------------------------------------------

    fn parse_module(&mut self) -> Module {
        let mut items = Vec::new();
        while !self.at(T::Eof) {
            let before = self.pos;
            let errors = self.error_count();
            match self.parse_item() {
                Some(item) => items.push(item),
                None => {
                    // A stray `}` after an earlier error is usually that error's echo.
                    let echo = self.at(T::RBrace) && !self.diagnostics.is_empty();
                    if self.error_count() == errors && !echo {
                        self.error_unexpected(
                            "`workflow`, `fn`, `tool`, `type`, `enum`, `test` or `import`",
                            "a file holds declarations: `type`, `enum`, `tool`, `workflow`, `fn`, `test` and `import`; statements go inside a workflow's `{ … }`",
                        );
                    }
                    self.recover_item();
                }
            }
            if self.pos == before {
                self.bump();
            }
        }
        Module {
            items: exact(items),
        }
    }

    fn parse_item(&mut self) -> Option<Item> {
        let start = self.span();
        let doc = self.doc_before(start);
        match self.peek() {
            T::Import => {
                self.bump();
                let path = self.parse_plain_string("the path of a `.flow` file in quotes")?;
                Some(Item::Import(Import {
                    span: start.to(path.span),
                    path,
                }))
            }
            T::Type => Some(Item::Type(Box::new(self.parse_type_decl(doc)?))),
            T::Enum => Some(Item::Enum(Box::new(self.parse_enum_decl(doc)?))),
            T::Tool => Some(Item::Tool(Box::new(self.parse_tool_decl(doc, None)?))),
            // `sensitive tool …` reads as naturally as `tool … sensitive`: both mark it.
            T::Sensitive if self.next_token().kind == T::Tool => {
                let sensitive = self.eat(T::Sensitive);
                Some(Item::Tool(Box::new(self.parse_tool_decl(doc, sensitive)?)))
            }
            T::Workflow => Some(Item::Workflow(Box::new(self.parse_workflow_decl(doc)?))),
            T::Ident if self.at_test_item() => Some(Item::Test(Box::new(self.parse_test_decl()?))),
            T::Ident if self.at_word("error") && self.next_token().kind == T::Ident => {
                Some(Item::Error(Box::new(self.parse_error_decl(doc)?)))
            }
            // `fn` is a word only here: `fn name(`.
            T::Ident if self.at_word("fn") && self.next_token().kind == T::Ident => {
                Some(Item::Function(Box::new(self.parse_function_decl(doc)?)))
            }
            _ => None,
        }
    }

    fn parse_type_decl(&mut self, doc: Option<Box<str>>) -> Option<TypeDecl> {
        let start = self.bump().span;
        let name = self.parse_ident("a type name")?;
        self.expect(
            T::Assign,
            "a record type reads `type Name = { field: Type, … }`",
        )?;
        if !self.at(T::LBrace) && self.at(T::Ident) {
            // `type Score = Float in 0.0..1.0`: a refined type.
            let refined = self.parse_type();
            return Some(TypeDecl {
                doc,
                name,
                fields: Vec::new(),
                refined: Some(refined),
                span: start.to(self.previous_span()),
            });
        }
        self.expect(
            T::LBrace,
            "a record type reads `type Name = { field: Type, … }`, a refined type `type Name = Int in 1..10`",
        )?;
        let fields = self.parse_fields(T::RBrace);
        let end = self.previous_span();
        Some(TypeDecl {
            doc,
            name,
            fields,
            refined: None,
            span: start.to(end),
        })
    }

    /// `error Name(field: Type, …)` (the fields may be left out).
    fn parse_error_decl(&mut self, doc: Option<Box<str>>) -> Option<ErrorDecl> {
        let start = self.bump().span;
        let name = self.parse_ident("the error's name")?;
        let fields = if self.eat(T::LParen).is_some() {
            self.parse_fields(T::RParen)
        } else {
            Vec::new()
        };
        Some(ErrorDecl {
            doc,
            name,
            fields,
            span: start.to(self.previous_span()),
        })
    }

    /// `raises A on 404, B on exit 3, …` after a tool's binding (on its line or the next).
    fn parse_tool_raises(&mut self) -> Vec<RaiseClause> {
        const SHAPE: &str = "a tool's errors read `raises NotFound on 404, Busy on exit 3`";
        if !self.at_word("raises") {
            return Vec::new();
        }
        self.bump();
        let mut raises = Vec::new();
        loop {
            let start = self.span();
            let Some(error) = self.parse_ident("the name of an error") else {
                break;
            };
            if !self.at(T::On) {
                self.error_expected("`on`", SHAPE);
                break;
            }
            self.bump();
            if self.eat_word("refusal").is_some() {
                raises.push(RaiseClause {
                    error,
                    on: RaiseOn::Refusal,
                    span: start.to(self.previous_span()),
                });
                if self.eat(T::Comma).is_none() {
                    break;
                }
                continue;
            }
            let exit = self.eat_word("exit").is_some();
            let code = match self.peek() {
                T::Number => {
                    let span = self.bump().span;
                    self.text(span).replace('_', "").parse::<i64>().ok()
                }
                _ => None,
            };
            let Some(code) = code else {
                self.error_expected(
                    "an HTTP status, `exit` and an exit status, or `refusal`",
                    SHAPE,
                );
                break;
            };
            let on = if exit {
                RaiseOn::Exit(code)
            } else {
                RaiseOn::Status(code)
            };
            raises.push(RaiseClause {
                error,
                on,
                span: start.to(self.previous_span()),
            });
            if self.eat(T::Comma).is_none() {
                break;
            }
        }
        raises
    }

    fn parse_enum_decl(&mut self, doc: Option<Box<str>>) -> Option<EnumDecl> {
        let start = self.bump().span;
        let name = self.parse_ident("an enum name")?;
        self.expect(T::LBrace, "an enum reads `enum Name { A, B(field: Type) }`")?;
        let variants = self.parse_list(T::RBrace, |p| {
            let start = p.span();
            let doc = p.doc_before(start);
            let name = p.parse_ident("a variant name")?;
            let fields = if p.eat(T::LParen).is_some() {
                p.parse_fields(T::RParen)
            } else {
                Vec::new()
            };
            Some(Variant {
                doc,
                name,
                fields,
                span: start.to(p.previous_span()),
            })
        });
        Some(EnumDecl {
            doc,
            name,
            variants,
            span: start.to(self.previous_span()),
        })
    }

    /// `name: Type, …` up to and including `close` (whose opener is already consumed).
    /// Record fields may be named like keywords (`doc.type`); parameters may not, since
    /// they are used as plain names.
    fn parse_fields(&mut self, close: T) -> Vec<Field> {
        self.parse_typed_names(close, true)
    }

    fn parse_params(&mut self) -> Vec<Field> {
        self.parse_typed_names(T::RParen, false)
    }

    fn parse_typed_names(&mut self, close: T, keyword_names: bool) -> Vec<Field> {
        self.parse_list(close, |p| {
            let start = p.span();
            let doc = p.doc_before(start);
            let name = if keyword_names {
                p.parse_field_name("a field name")?
            } else {
                p.parse_ident("a parameter name")?
            };
            p.expect(T::Colon, "declare a field as `name: Type`")?;
            let ty = p.parse_type();
            Some(Field {
                doc,
                name,
                span: start.to(ty.span),
                ty,
            })
        })
    }

    fn parse_tool_decl(&mut self, doc: Option<Box<str>>, prefix: Option<Span>) -> Option<ToolDecl> {
        let keyword = self.bump().span;
        let start = prefix.unwrap_or(keyword);
        let name = self.parse_ident("a tool name")?;
        const SHAPE: &str = "a tool reads `tool name(param: Type) -> Result via http post \"/path\"` (or `via exec \"cmd\"`, `via llm \"model\" prompt \"…\"`)";
        self.expect(T::LParen, SHAPE)?;
        let params = self.parse_params();
        self.expect(T::Arrow, SHAPE)?;
        let ret = self.parse_type();
        self.expect(T::Via, SHAPE)?;
        let binding = self.parse_tool_binding(&params);
        let raises = self.parse_tool_raises();
        // Only on the binding's line: a `sensitive` that starts the next line is the next
        // tool's (`sensitive tool pay(…)`), never this one's.
        let suffix = if self.token().starts_line {
            None
        } else {
            self.eat(T::Sensitive)
        };
        let sensitive = prefix.or(suffix);
        Some(ToolDecl {
            doc,
            name,
            params,
            ret,
            binding,
            raises,
            sensitive,
            span: start.to(self.previous_span()),
        })
    }

    fn parse_tool_binding(&mut self, params: &[Field]) -> ToolBinding {
        const HELP: &str = "bind the tool with `via http <method> \"/path\"`, `via exec \"command\"` or `via llm \"model\" prompt \"…\"`";
        if !self.at(T::Ident) {
            self.error_expected("`http`, `exec` or `llm`", HELP);
            return ToolBinding::Error;
        }
        let kind_span = self.span();
        match self.text(kind_span) {
            "http" => {
                self.bump();
                let Some(method) = self.parse_ident("an HTTP method such as `post`") else {
                    return ToolBinding::Error;
                };
                match self.parse_plain_string("the request path or URL in quotes") {
                    Some(path) => ToolBinding::Http { method, path },
                    None => ToolBinding::Error,
                }
            }
            "exec" => {
                self.bump();
                match self.parse_plain_string("the command to run, in quotes") {
                    Some(command) => ToolBinding::Exec { command },
                    None => ToolBinding::Error,
                }
            }
            "llm" => {
                self.bump();
                let Some(model) = self.parse_plain_string("the model name in quotes") else {
                    return ToolBinding::Error;
                };
                if !(self.at(T::Ident) && self.text(self.span()) == "prompt") {
                    self.error_expected(
                        "`prompt`",
                        "an LLM tool reads `via llm \"model\" prompt \"instructions\"`",
                    );
                    return ToolBinding::Error;
                }
                self.bump();
                match self.parse_prompt(params) {
                    Some(prompt) => ToolBinding::Llm { model, prompt },
                    None => ToolBinding::Error,
                }
            }
            _ => {
                self.error_expected("`http`, `exec` or `llm`", HELP);
                ToolBinding::Error
            }
        }
    }

    fn parse_workflow_decl(&mut self, doc: Option<Box<str>>) -> Option<WorkflowDecl> {
        let start = self.bump().span;
        let name = self.parse_ident("a workflow name")?;
        self.expect(
            T::LParen,
            "a workflow reads `workflow name(param: Type) -> Result { … }`",
        )?;
        let params = self.parse_params();
        let ret = if self.eat(T::Arrow).is_some() {
            Some(self.parse_type())
        } else {
            None
        };
        let mut raises = Vec::new();
        if self.at_word("raises") {
            self.bump();
            while let Some(error) = self.parse_ident("the name of an error it may fail with") {
                raises.push(error);
                if self.eat(T::Comma).is_none() {
                    break;
                }
            }
        }
        let accepts = if self.at_word("accepts") {
            self.bump();
            self.parse_signal_decls()
        } else {
            Vec::new()
        };
        let body = self.parse_block()?;
        Some(WorkflowDecl {
            doc,
            name,
            params,
            ret,
            accepts,
            raises,
            span: start.to(body.span),
            body,
        })
    }

    fn parse_function_decl(&mut self, doc: Option<Box<str>>) -> Option<FunctionDecl> {
        let start = self.bump().span;
        let name = self.parse_ident("a function name")?;
        self.expect(
            T::LParen,
            "a function reads `fn name(param: Type) -> Result { … }`",
        )?;
        let params = self.parse_params();
        let ret = if self.eat(T::Arrow).is_some() {
            Some(self.parse_type())
        } else {
            None
        };
        let body = self.parse_block()?;
        Some(FunctionDecl {
            doc,
            name,
            params,
            ret,
            span: start.to(body.span),
            body,
        })
    }

    /// `accepts cancel: String from role("support"), paused from system("billing")`, up to
    /// the body's `{`. A signal that does not parse is left out (already reported).
    fn parse_signal_decls(&mut self) -> Vec<SignalDecl> {
        let mut signals = Vec::new();
        loop {
            match self.parse_signal_decl() {
                Some(signal) => signals.push(signal),
                None => {
                    // Skip to the next signal or the body.
                    while !matches!(self.peek(), T::Comma | T::LBrace | T::Eof) {
                        self.bump();
                    }
                }
            }
            if self.eat(T::Comma).is_none() || self.at(T::LBrace) {
                return signals;
            }
        }
    }

    fn parse_signal_decl(&mut self) -> Option<SignalDecl> {
        const SHAPE: &str = "a signal reads `name: Type from role(\"…\")` (or `user(\"…\")`, `system(\"…\")`; several joined with `or`)";
        let name = self.parse_ident("a signal name")?;
        let ty = if self.eat(T::Colon).is_some() {
            Some(self.parse_type())
        } else {
            None
        };
        if !self.at_word("from") {
            self.error_expected("`from` and who may send the signal", SHAPE);
            return None;
        }
        self.bump();
        let mut senders = vec![self.parse_sender(SHAPE)?];
        while self.at_word("or") {
            self.bump();
            senders.push(self.parse_sender(SHAPE)?);
        }
        Some(SignalDecl {
            span: name.span.to(self.previous_span()),
            name,
            ty,
            senders,
        })
    }

    fn parse_sender(&mut self, shape: &str) -> Option<SenderExpr> {
        if !self.at(T::Ident) {
            self.error_expected("`role(\"…\")`, `user(\"…\")` or `system(\"…\")`", shape);
            return None;
        }
        let kind = self.parse_ident("`role`, `user` or `system`")?;
        self.expect(T::LParen, shape)?;
        let name = self.parse_plain_string("a name in quotes")?;
        self.expect(T::RParen, shape)?;
        Some(SenderExpr {
            span: kind.span.to(self.previous_span()),
            kind,
            name,
        })
    }

    /// Whether the next token is the identifier `word` (a word that is a keyword only in one
    /// place, such as `accepts` after a workflow's result type).
    fn at_word(&self, word: &str) -> bool {
        self.at(T::Ident) && self.text(self.span()) == word
    }

    // ----- shared pieces ------------------------------------------------------------

    /// Parses `item, item, …` up to and including `close`; trailing commas are fine.
    fn parse_list<I>(&mut self, close: T, item: impl FnMut(&mut Self) -> Option<I>) -> Vec<I> {
        exact(self.parse_list_items(close, item))
    }

    fn parse_list_items<I>(
        &mut self,
        close: T,
        mut item: impl FnMut(&mut Self) -> Option<I>,
    ) -> Vec<I> {
        let mut items = Vec::new();
        loop {
            if self.eat(close).is_some() {
                return items;
            }
            if self.at(T::Eof) || self.too_deep {
                self.expect(close, "");
                return items;
            }
            let before = self.pos;
            let errors = self.error_count();
            match item(self) {
                Some(parsed) if self.error_count() == errors => items.push(parsed),
                _ => {
                    if self.error_count() == errors {
                        self.error_expected("a list item", "");
                    }
                    self.recover_list_item(close);
                    if self.pos == before && !self.at(close) && !self.at(T::Comma) {
                        // The list cannot go on (an item keyword or an unbalanced closer).
                        return items;
                    }
                }
            }
            // Inside braces (fields, variants, match arms, options) a line break separates
            // items as well as a comma does.
            let line_separates = close == T::RBrace && self.token().starts_line;
            if self.eat(T::Comma).is_none() && !self.at(close) && !line_separates {
                let help = format!("separate the items with `,` and end the list with {close}");
                self.error_expected(&format!("`,` or {close}"), &help);
                self.recover_list_item(close);
                if self.eat(T::Comma).is_none() && !self.at(close) {
                    return items;
                }
            }
        }
    }

    /// After `continue as`: the workflow's name and its arguments, `poll(cursor, n + 1)`.
    fn parse_continue_as(&mut self) -> StmtKind {
        const SHAPE: &str = "continue the run as a new one with `continue as this_workflow(args…)`";
        let Some(workflow) = self.parse_ident("the workflow's name after `continue as`") else {
            return StmtKind::Error;
        };
        if self.expect(T::LParen, SHAPE).is_none() {
            return StmtKind::Error;
        }
        let args = self.parse_list(T::RParen, |p| Some(p.parse_expr(Records::Allowed)));
        StmtKind::ContinueAs { workflow, args }
    }

    fn parse_ident(&mut self, what: &str) -> Option<Ident> {
        if self.at(T::Ident) {
            let span = self.bump().span;
            return Some(Ident {
                name: self.names.intern(self.text(span)),
                span,
            });
        }
        let help = if self.peek().is_keyword() {
            format!(
                "{} is a keyword and cannot be used as a name here; choose another name",
                self.peek()
            )
        } else {
            String::new()
        };
        self.error_expected(what, &help);
        None
    }

    /// Field and option names may be keywords: `timeout: 48h`, `doc.type`.
    fn parse_field_name(&mut self, what: &str) -> Option<Ident> {
        if self.peek().is_keyword() {
            let span = self.bump().span;
            return Some(Ident {
                name: self.names.intern(self.text(span)),
                span,
            });
        }
        self.parse_ident(what)
    }

    /// A string literal without `${…}`.
    fn parse_plain_string(&mut self, what: &str) -> Option<StrLit> {
        if !self.at(T::Quote) {
            self.error_expected(what, "");
            return None;
        }
        let (parts, span) = self.parse_string_parts();
        let mut value = String::new();
        for part in parts {
            match part {
                StrPart::Text(text) => value.push_str(&text),
                StrPart::Interpolation(expr) => {
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::SYNTAX_ERROR,
                            self.file,
                            expr.span,
                            "interpolation is not allowed here",
                        )
                        .with_message("This string must be a constant")
                        .with_help("write the text literally, without `${…}`"),
                    );
                }
            }
        }
        Some(StrLit {
            value: value.into_boxed_str(),
            span,
        })
    }

    /// An `llm` tool's prompt: constant text in which `${param}` and `${param.field}` stand
    /// for the tool's arguments. They are kept as written (`${doc.title}`) for the runtime to
    /// fill in at each call; anything else in `${…}` is an error here.
    fn parse_prompt(&mut self, params: &[Field]) -> Option<StrLit> {
        if !self.at(T::Quote) {
            self.error_expected("the prompt in quotes", "");
            return None;
        }
        let (parts, span) = self.parse_string_parts();
        let mut value = String::new();
        for part in parts {
            match part {
                StrPart::Text(text) => value.push_str(&text),
                StrPart::Interpolation(expr) => {
                    let Some(path) = argument_path(&expr) else {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::INVALID_TOOL_BINDING,
                                self.file,
                                expr.span,
                                "only a parameter can be placed here",
                            )
                            .with_message("A prompt can only mention the tool's parameters")
                            .with_help("write `${param}` or `${param.field}`; the runtime fills them in at each call"),
                        );
                        continue;
                    };
                    let root = path.split('.').next().unwrap_or_default();
                    if !params.iter().any(|p| &*p.name.name == root) {
                        let names = params.iter().map(|p| &*p.name.name);
                        let help = match crate::diagnostics::did_you_mean(root, names) {
                            Some(near) => format!("did you mean `{near}`?"),
                            None if params.is_empty() => "the tool has no parameters".to_string(),
                            None => format!(
                                "the tool's parameters are {}",
                                params
                                    .iter()
                                    .map(|p| format!("`{}`", p.name.name))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        };
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::INVALID_TOOL_BINDING,
                                self.file,
                                expr.span,
                                "not a parameter of this tool",
                            )
                            .with_message(format!(
                                "The prompt mentions `{root}`, which is not a parameter"
                            ))
                            .with_help(help),
                        );
                    }
                    value.push_str("${");
                    value.push_str(&path);
                    value.push('}');
                }
            }
        }
        Some(StrLit {
            value: value.into_boxed_str(),
            span,
        })
    }

    /// After a `Quote`: text pieces and interpolations up to the closing quote.
    fn parse_string_parts(&mut self) -> (Vec<StrPart>, Span) {
        let start = self.bump().span;
        let mut parts = Vec::new();
        loop {
            match self.peek() {
                T::StrText => {
                    let span = self.bump().span;
                    parts.push(StrPart::Text(unescape(self.text(span))));
                }
                T::InterpStart => {
                    self.bump();
                    let expr = self.parse_expr(Records::Allowed);
                    if self.eat(T::InterpEnd).is_none() {
                        self.error_expected("`}` closing the interpolation", "");
                        while !matches!(self.peek(), T::InterpEnd | T::StrEnd | T::Eof) {
                            self.bump();
                        }
                        self.eat(T::InterpEnd);
                    }
                    parts.push(StrPart::Interpolation(expr));
                }
                T::StrEnd => {
                    let end = self.bump().span;
                    return (exact(parts), start.to(end));
                }
                _ => return (exact(parts), start.to(self.previous_span())),
            }
        }
    }

    // ----- types --------------------------------------------------------------------

    fn parse_type(&mut self) -> TypeExpr {
        let start = self.span();
        if !self.enter() {
            return TypeExpr {
                kind: TypeExprKind::Error,
                span: start,
            };
        }
        let mut ty = match self.parse_ident("a type") {
            None => TypeExpr {
                kind: TypeExprKind::Error,
                span: start,
            },
            Some(name) => {
                let args = if self.eat(T::Lt).is_some() {
                    self.parse_list(T::Gt, |p| Some(p.parse_type()))
                } else {
                    Vec::new()
                };
                TypeExpr {
                    kind: TypeExprKind::Named {
                        name,
                        args: args.into_boxed_slice(),
                    },
                    span: start.to(self.previous_span()),
                }
            }
        };
        while let Some(q) = self.eat(T::Question) {
            ty = TypeExpr {
                span: ty.span.to(q),
                kind: TypeExprKind::Optional(Box::new(ty)),
            };
        }
        // A refinement on the type's line (`qty: Int in 1..1000`); on the next line a word
        // is the next field's name.
        while !self.token().starts_line
            && (self.at(T::In)
                || self.at_word("matching")
                || self.at_word("nonempty")
                || (self.at_word("length")
                    && matches!(self.next_token().kind, T::Number | T::Dot | T::Minus)))
        {
            let Some((rule, rule_span)) = self.parse_rule() else {
                break;
            };
            ty = TypeExpr {
                span: ty.span.to(rule_span),
                kind: TypeExprKind::Refined(Box::new(RefinedTypeExpr {
                    base: ty,
                    rule,
                    rule_span,
                })),
            };
        }
        self.leave();
        ty
    }

    /// A refinement after a type: `in a..b`, `matching "…"`, `nonempty`, `length a..b`.
    fn parse_rule(&mut self) -> Option<(RuleExpr, Span)> {
        let start = self.bump().span;
        let word = self.text(start).to_string();
        let rule = match word.as_str() {
            "in" => {
                let (min, max) = self.parse_range("`in 1..10`, `in 0.0..1.0` or `in 0..`")?;
                RuleExpr::Range { min, max }
            }
            "matching" => RuleExpr::Matching(self.parse_plain_string("a pattern in quotes")?),
            "length" => {
                let (min, max) = self.parse_range("`length 1..80` or `length ..80`")?;
                RuleExpr::Length { min, max }
            }
            _ => RuleExpr::NonEmpty,
        };
        Some((rule, start.to(self.previous_span())))
    }

    /// `a..b`, `a..` or `..b`, each bound a number.
    fn parse_range(&mut self, shape: &str) -> Option<(Option<Bound>, Option<Bound>)> {
        let help = format!("a range reads {shape}; both ends are included");
        let min = if self.at(T::Dot) {
            None
        } else {
            Some(self.parse_bound(&help)?)
        };
        if !(self.at(T::Dot) && self.next_token().kind == T::Dot) {
            self.error_expected("`..`", &help);
            return None;
        }
        self.bump();
        self.bump();
        let max = if matches!(self.peek(), T::Number | T::Float | T::Minus)
            && !self.token().starts_line
        {
            Some(self.parse_bound(&help)?)
        } else {
            None
        };
        if min.is_none() && max.is_none() {
            self.error_expected("a bound", &help);
            return None;
        }
        Some((min, max))
    }

    fn parse_bound(&mut self, help: &str) -> Option<Bound> {
        let start = self.span();
        let negative = self.eat(T::Minus).is_some();
        let token = self.token();
        let value = match token.kind {
            T::Number => {
                self.bump();
                match self.number(token.span) {
                    ExprKind::Int(v) => {
                        BoundValue::Int(if negative { v.checked_neg()? } else { v })
                    }
                    ExprKind::Duration(_) => {
                        self.number_error(token.span, "a bound is a plain number", help);
                        return None;
                    }
                    _ => return None,
                }
            }
            T::Float => {
                self.bump();
                let v = self.text(token.span).replace('_', "").parse::<f64>().ok()?;
                BoundValue::Float(if negative { -v } else { v })
            }
            _ => {
                self.error_expected("a number", help);
                return None;
            }
        };
        Some(Bound {
            value,
            span: start.to(self.previous_span()),
        })
    }

    // ----- blocks and statements ----------------------------------------------------

    fn parse_block(&mut self) -> Option<Block> {
        let (start, implicit) = match self.eat(T::LBrace) {
            Some(span) => (span, false),
            None => {
                self.error_expected(T::LBrace.describe(), "a block starts with `{`");
                // `if x > 0` with the `{` forgotten at the end of its line: the lines that
                // follow, up to the `}`, are read as the block, so the rest of the body is not
                // taken for code outside any workflow (a second, misleading error).
                let token = self.token();
                if !token.starts_line
                    || matches!(token.kind, T::RBrace | T::Eof)
                    || ITEM_KEYWORDS.contains(&token.kind)
                {
                    return None;
                }
                (self.previous_span(), true)
            }
        };
        if !self.enter() {
            return Some(Block {
                stmts: Vec::new(),
                span: start,
            });
        }
        let mut stmts = Vec::new();
        loop {
            match self.peek() {
                T::RBrace => break,
                T::Eof if implicit => break,
                T::Eof => {
                    self.report(
                        Diagnostic::error(
                            codes::SYNTAX_ERROR,
                            self.file,
                            start,
                            "this `{` is never closed",
                        )
                        .with_message("Unclosed block")
                        .with_help("add the matching `}`"),
                    );
                    break;
                }
                T::Semicolon => {
                    self.bump();
                }
                _ => {
                    if self.token().starts_line
                        && ITEM_KEYWORDS.contains(&self.peek())
                        && self.peek() != T::Type
                    {
                        // A declaration inside a block: the block's `}` is probably missing.
                        if implicit {
                            self.leave();
                            return Some(Block {
                                stmts: exact(stmts),
                                span: start.to(self.previous_span()),
                            });
                        }
                        self.report(
                            Diagnostic::error(
                                codes::SYNTAX_ERROR,
                                self.file,
                                start,
                                "this `{` is never closed",
                            )
                            .with_label(self.file, self.span(), "a new declaration starts here")
                            .with_message("Unclosed block")
                            .with_help("add the matching `}` before the next declaration"),
                        );
                        self.leave();
                        return Some(Block {
                            stmts: exact(stmts),
                            span: start.to(self.previous_span()),
                        });
                    }
                    stmts.push(self.parse_stmt());
                }
            }
        }
        let end = self.eat(T::RBrace).unwrap_or(self.previous_span());
        self.leave();
        Some(Block {
            stmts: exact(stmts),
            span: start.to(end),
        })
    }

    fn parse_stmt(&mut self) -> Stmt {
        let start_pos = self.pos;
        let start = self.span();
        let errors = self.error_count();
        let kind = if self.at_foreign_binding() {
            StmtKind::Error
        } else {
            self.parse_stmt_kind()
        };
        if self.error_count() == errors {
            self.check_foreign_else_if();
        }
        let span = start.to(self.previous_span());
        self.end_line_item(
            start_pos,
            errors,
            "the end of the statement",
            "put each statement on its own line, or separate them with `;`",
        );
        Stmt { kind, span }
    }

    /// `const x = …` (or `val`, `auto`) as other languages write it: reported as what to
    /// write in Flow, instead of "put each statement on its own line" at the name.
    fn at_foreign_binding(&mut self) -> bool {
        let token = self.token();
        let next = Some(self.next_token());
        let word = self.text(token.span);
        let foreign = token.kind == T::Ident
            && matches!(word, "const" | "val" | "auto" | "mut")
            && next.is_some_and(|n| n.kind == T::Ident && !n.starts_line);
        if foreign {
            self.report(
                Diagnostic::error(
                    codes::SYNTAX_ERROR,
                    self.file,
                    token.span,
                    format!("`{word}` is not a Flow keyword"),
                )
                .with_message(format!("Flow has no `{word}`"))
                .with_help(
                    "write `let name = value` (or `var name = value` for one that changes); no `;` is needed",
                ),
            );
        }
        foreign
    }

    /// `} elif c {` after an `if`: reported as `else if`, instead of "put each statement on
    /// its own line".
    fn check_foreign_else_if(&mut self) {
        let token = self.token();
        let word = self.text(token.span);
        if token.kind == T::Ident
            && !token.starts_line
            && matches!(word, "elif" | "elsif" | "elseif")
        {
            self.report(
                Diagnostic::error(
                    codes::SYNTAX_ERROR,
                    self.file,
                    token.span,
                    format!("`{word}` is not a Flow keyword"),
                )
                .with_message(format!("Flow has no `{word}`"))
                .with_help("write `else if`: `} else if condition { … }`"),
            );
        }
    }

    /// After a statement or a test step (which end at a line break or `;`): skips the rest
    /// of it after an error, or reports what follows on the same line; always moves on.
    fn end_line_item(&mut self, start_pos: usize, errors: usize, end: &str, help: &str) {
        if self.error_count() > errors {
            self.recover_statement(start_pos);
        } else if !matches!(self.peek(), T::RBrace | T::Eof | T::Semicolon)
            && !self.token().starts_line
        {
            self.error_expected(end, help);
            self.recover_statement(start_pos);
        }
        if self.pos == start_pos {
            self.bump();
        }
    }

    fn parse_stmt_kind(&mut self) -> StmtKind {
        // `query` followed by a name on the same line (two names in a row start no other
        // statement).
        if self.at_word("query")
            && self.next_token().kind == T::Ident
            && !self.next_token().starts_line
        {
            return self.parse_query();
        }
        if self.at_word("waive") && self.next_token().kind == T::Approval {
            return self.parse_waiver();
        }
        if self.at(T::On)
            && self.next_token().kind == T::Ident
            && self.text(self.next_token().span) == "cancel"
        {
            self.bump();
            self.bump();
            return match self.parse_block() {
                Some(block) => StmtKind::OnCancel(Box::new(block)),
                None => StmtKind::Error,
            };
        }
        match self.peek() {
            T::Let | T::Var => {
                let mutable = self.bump().kind == T::Var;
                let Some(name) = self.parse_ident("a variable name") else {
                    return StmtKind::Error;
                };
                let ty = if self.eat(T::Colon).is_some() {
                    Some(Box::new(self.parse_type()))
                } else {
                    None
                };
                if self
                    .expect(T::Assign, "give the variable a value: `let name = value`")
                    .is_none()
                {
                    return StmtKind::Error;
                }
                let value = self.parse_expr(Records::Allowed);
                if !mutable
                    && ty.is_none()
                    && self.at_word("undo")
                    && !self.token().starts_line
                    && self.next_token().kind == T::LBrace
                {
                    self.bump();
                    return match self.parse_block() {
                        Some(undo) => StmtKind::LetUndo {
                            name,
                            value,
                            undo: Box::new(undo),
                        },
                        None => StmtKind::Error,
                    };
                }
                StmtKind::Let {
                    mutable,
                    name,
                    ty,
                    value,
                }
            }
            T::Ident if self.at_word("compensate") && self.ends_statement_after_word() => {
                self.bump();
                StmtKind::Compensate
            }
            T::While => {
                self.bump();
                let cond = self.parse_expr(Records::NotHere);
                match self.parse_block() {
                    Some(body) => StmtKind::While { cond, body },
                    None => StmtKind::Error,
                }
            }
            T::For => {
                self.bump();
                let Some(var) = self.parse_ident("a loop variable") else {
                    return StmtKind::Error;
                };
                if self
                    .expect(T::In, "a loop reads `for item in list { … }`")
                    .is_none()
                {
                    return StmtKind::Error;
                }
                let iter = self.parse_expr(Records::NotHere);
                match self.parse_block() {
                    Some(body) => StmtKind::For {
                        var,
                        iter: Box::new(iter),
                        body,
                    },
                    None => StmtKind::Error,
                }
            }
            T::Break => {
                self.bump();
                StmtKind::Break
            }
            T::Continue => {
                self.bump();
                if self.at(T::Ident) && !self.token().starts_line && self.text(self.span()) == "as"
                {
                    self.bump();
                    return self.parse_continue_as();
                }
                StmtKind::Continue
            }
            T::Return => {
                self.bump();
                if self.ends_statement() {
                    StmtKind::Return(None)
                } else {
                    StmtKind::Return(Some(self.parse_expr(Records::Allowed)))
                }
            }
            T::Fail => {
                self.bump();
                StmtKind::Fail(self.parse_expr(Records::Allowed))
            }
            T::Sleep => {
                self.bump();
                StmtKind::Sleep(self.parse_expr(Records::Allowed))
            }
            T::Audit => {
                self.bump();
                let Some(event) = self.parse_plain_string("the event name in quotes") else {
                    return StmtKind::Error;
                };
                if self
                    .expect(
                        T::LBrace,
                        "an audit reads `audit \"event\" { field: value, … }`",
                    )
                    .is_none()
                {
                    return StmtKind::Error;
                }
                let fields = self.parse_field_inits();
                StmtKind::Audit { event, fields }
            }
            _ => {
                let expr = self.parse_expr(Records::Allowed);
                if self.at(T::Assign) {
                    self.bump();
                    let value = self.parse_expr(Records::Allowed);
                    if !is_assignable(&expr) {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::INVALID_ASSIGNMENT_TARGET,
                                self.file,
                                expr.span,
                                "cannot assign to this",
                            )
                            .with_help(
                                "assign to a `var` or to a field of one: `total = total + 1`",
                            ),
                        );
                    }
                    return StmtKind::Assign {
                        target: Box::new(expr),
                        value,
                    };
                }
                StmtKind::Expr(expr)
            }
        }
    }

    /// Whether the word here is alone in its statement (`compensate` then a line break,
    /// `;` or `}`), so that it is not the start of an expression.
    fn ends_statement_after_word(&self) -> bool {
        let next = self.next_token();
        matches!(next.kind, T::RBrace | T::Semicolon | T::Eof) || next.starts_line
    }

    fn ends_statement(&self) -> bool {
        matches!(self.peek(), T::RBrace | T::Semicolon | T::Eof) || self.token().starts_line
    }

    /// `name: value, …` up to and including `}`.
    fn parse_field_inits(&mut self) -> Vec<FieldInit> {
        self.parse_list(T::RBrace, |p| {
            let name = p.parse_field_name("a field name")?;
            if p.eat(T::Colon).is_none() {
                // `{ id }` is shorthand for `{ id: id }`.
                if matches!(p.peek(), T::Comma | T::RBrace) {
                    return Some(FieldInit {
                        value: Expr {
                            kind: ExprKind::Name(name.name.clone()),
                            span: name.span,
                        },
                        name,
                    });
                }
                p.error_expected("`:`", "write each field as `name: value`");
                return None;
            }
            let value = p.parse_expr(Records::Allowed);
            Some(FieldInit { name, value })
        })
    }

    // ----- expressions --------------------------------------------------------------

    fn parse_expr(&mut self, records: Records) -> Expr {
        self.parse_binary(0, records)
    }

    fn parse_binary(&mut self, min_precedence: u8, records: Records) -> Expr {
        let mut lhs = self.parse_unary(records);
        let mut chained = 0;
        while let Some((op, precedence, right_assoc)) = binary_op(self.peek()) {
            if precedence < min_precedence {
                break;
            }
            self.bump();
            if !self.enter() {
                break;
            }
            chained += 1;
            let next_min = if right_assoc {
                precedence
            } else {
                precedence + 1
            };
            let rhs = self.parse_binary(next_min, records);
            lhs = Expr {
                span: lhs.span.to(rhs.span),
                kind: ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
            };
        }
        self.depth -= chained.min(self.depth);
        lhs
    }

    fn parse_unary(&mut self, records: Records) -> Expr {
        let op = match self.peek() {
            T::Bang => UnaryOp::Not,
            T::Minus => UnaryOp::Neg,
            _ => return self.parse_postfix(records),
        };
        let start = self.bump().span;
        if !self.enter() {
            return error_expr(start);
        }
        let operand = self.parse_unary(records);
        self.leave();
        Expr {
            span: start.to(operand.span),
            kind: ExprKind::Unary {
                op,
                operand: Box::new(operand),
            },
        }
    }

    fn parse_postfix(&mut self, records: Records) -> Expr {
        let mut expr = self.parse_atom(records);
        let start = expr.span;
        let mut chained = 0;
        loop {
            let token = self.token();
            let next = match token.kind {
                T::Dot | T::QuestionDot => {
                    self.bump();
                    let Some(name) = self.parse_field_name("a field name after `.`") else {
                        break;
                    };
                    ExprKind::Field {
                        base: Box::new(take(&mut expr)),
                        optional: token.kind == T::QuestionDot,
                        name,
                    }
                }
                T::LParen if !token.starts_line => {
                    self.bump();
                    let args = self.parse_list(T::RParen, |p| Some(p.parse_expr(Records::Allowed)));
                    ExprKind::Call {
                        callee: Box::new(take(&mut expr)),
                        args,
                    }
                }
                T::LBracket if !token.starts_line => {
                    self.bump();
                    let index = self.parse_expr(Records::Allowed);
                    self.expect(T::RBracket, "close the index with `]`");
                    ExprKind::Index {
                        base: Box::new(take(&mut expr)),
                        index: Box::new(index),
                    }
                }
                _ => break,
            };
            let span = start.to(self.previous_span());
            expr = Expr { kind: next, span };
            if !self.enter() {
                break;
            }
            chained += 1;
        }
        self.depth -= chained.min(self.depth);
        expr
    }

    fn parse_atom(&mut self, records: Records) -> Expr {
        let token = self.token();
        let start = token.span;
        if !self.enter() {
            return error_expr(start);
        }
        let kind = match token.kind {
            T::Number => {
                self.bump();
                self.number(start)
            }
            T::Float => {
                self.bump();
                match self.text(start).replace('_', "").parse::<f64>() {
                    Ok(value) => ExprKind::Float(value),
                    Err(_) => ExprKind::Error,
                }
            }
            T::True => {
                self.bump();
                ExprKind::Bool(true)
            }
            T::False => {
                self.bump();
                ExprKind::Bool(false)
            }
            T::None => {
                self.bump();
                ExprKind::None
            }
            T::Quote => {
                let (parts, span) = self.parse_string_parts();
                self.leave();
                return Expr {
                    kind: ExprKind::Str(parts),
                    span,
                };
            }
            T::Ident if self.text(start) == "time" && self.next_token().kind == T::Quote => {
                self.bump();
                self.time_literal()
            }
            T::Ident if self.text(start) == "select" && self.next_token().kind == T::LBrace => {
                self.bump();
                self.parse_select(start)
            }
            T::Ident if self.text(start) == "parallel" && self.starts_parallel() => {
                self.bump();
                self.parse_parallel(start)
            }
            T::Ident => {
                self.bump();
                ExprKind::Name(self.names.intern(self.text(start)))
            }
            T::LParen => {
                self.bump();
                let inner = self.parse_expr(Records::Allowed);
                self.expect(T::RParen, "close the parenthesis with `)`");
                let span = start.to(self.previous_span());
                self.leave();
                return Expr {
                    kind: inner.kind,
                    span,
                };
            }
            T::LBracket => {
                self.bump();
                let items = self.parse_list(T::RBracket, |p| Some(p.parse_expr(Records::Allowed)));
                ExprKind::List(items)
            }
            T::LBrace if records == Records::Allowed => {
                self.bump();
                ExprKind::Record(self.parse_field_inits())
            }
            T::If => self.parse_if(),
            T::Match => self.parse_match(),
            T::Retry => self.parse_retry(),
            T::Timeout => {
                self.bump();
                let duration = self.parse_expr(Records::NotHere);
                match self.parse_block() {
                    Some(body) => ExprKind::Timeout {
                        duration: Box::new(duration),
                        body,
                    },
                    None => ExprKind::Error,
                }
            }
            T::Try => self.parse_try(),
            T::Await => self.parse_await(),
            _ => {
                self.error_expected(
                    "an expression",
                    if token.kind.is_keyword() {
                        "this keyword starts a statement; it cannot be used as a value here"
                    } else {
                        ""
                    },
                );
                ExprKind::Error
            }
        };
        self.leave();
        Expr {
            kind,
            span: start.to(self.previous_span()),
        }
    }

    /// An integer (`1_000`) or a duration (`500ms`, `30s`, `5m`, `48h`, `2d`).
    fn number(&mut self, span: Span) -> ExprKind {
        let text = self.text(span);
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '_'))
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let Ok(value) = digits.replace('_', "").parse::<u64>() else {
            self.number_error(
                span,
                "this number is too large",
                "integers must fit in 64 bits",
            );
            return ExprKind::Error;
        };
        if unit.is_empty() {
            return match i64::try_from(value) {
                Ok(v) => ExprKind::Int(v),
                Err(_) => {
                    self.number_error(
                        span,
                        "this number is too large",
                        "integers must fit in 64 bits",
                    );
                    ExprKind::Error
                }
            };
        }
        let factor: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                let help = format!(
                    "durations use the units ms, s, m, h and d, as in `{digits}h` or `{digits}d`"
                );
                self.number_error(span, &format!("`{unit}` is not a duration unit"), &help);
                return ExprKind::Error;
            }
        };
        match value.checked_mul(factor) {
            Some(ms) => ExprKind::Duration(ms),
            None => {
                self.number_error(span, "this duration is too long", "use a smaller duration");
                ExprKind::Error
            }
        }
    }

    /// `time "2026-12-01T09:00:00Z"`, after `time`: an instant written in RFC 3339, in UTC.
    /// `time` is a name everywhere else (a name before a string is no other expression).
    fn time_literal(&mut self) -> ExprKind {
        let Some(text) = self.parse_plain_string("the time in quotes") else {
            return ExprKind::Error;
        };
        match flow_stdlib::time::parse_time(&text.value) {
            Some(ms) => ExprKind::Time(ms),
            None => {
                self.number_error(
                    text.span,
                    "this is not a time in RFC 3339, in UTC",
                    "write the date and time with a `Z`, as in `time \"2026-12-01T09:00:00Z\"` (milliseconds are optional: `09:00:00.250Z`)",
                );
                ExprKind::Error
            }
        }
    }

    fn number_error(&mut self, span: Span, label: &str, help: &str) {
        self.diagnostics
            .push(Diagnostic::error(codes::INVALID_NUMBER, self.file, span, label).with_help(help));
    }

    fn parse_if(&mut self) -> ExprKind {
        self.bump();
        let cond = self.parse_expr(Records::NotHere);
        let Some(then_block) = self.parse_block() else {
            return ExprKind::Error;
        };
        let else_branch = if self.eat(T::Else).is_some() {
            let start = self.span();
            if self.at(T::If) {
                if !self.enter() {
                    return ExprKind::Error;
                }
                let kind = self.parse_if();
                self.leave();
                Some(Box::new(Expr {
                    kind,
                    span: start.to(self.previous_span()),
                }))
            } else {
                let block = self.parse_block();
                block.map(|b| {
                    Box::new(Expr {
                        span: b.span,
                        kind: ExprKind::Block(b),
                    })
                })
            }
        } else {
            None
        };
        ExprKind::If {
            cond: Box::new(cond),
            then_block: Box::new(then_block),
            else_branch,
        }
    }

    fn parse_match(&mut self) -> ExprKind {
        self.bump();
        let scrutinee = self.parse_expr(Records::NotHere);
        if self
            .expect(
                T::LBrace,
                "a match reads `match value { Pattern => result, … }`",
            )
            .is_none()
        {
            return ExprKind::Error;
        }
        let arms = self.parse_list(T::RBrace, |p| {
            let pattern = p.parse_pattern()?;
            p.expect(
                T::FatArrow,
                "separate the pattern from its result with `=>`",
            )?;
            let body = p.parse_arm_body()?;
            Some(MatchArm {
                span: pattern.span.to(body.span),
                pattern,
                body,
            })
        });
        ExprKind::Match {
            scrutinee: Box::new(scrutinee),
            arms,
        }
    }

    /// The result of a `match` or `select` arm after `=>`: a block, or an expression.
    fn parse_arm_body(&mut self) -> Option<Expr> {
        if self.at(T::LBrace) {
            let block = self.parse_block()?;
            return Some(Expr {
                span: block.span,
                kind: ExprKind::Block(block),
            });
        }
        Some(self.parse_expr(Records::Allowed))
    }

    /// `query NAME -> Type { … }`.
    fn parse_query(&mut self) -> StmtKind {
        self.bump();
        let Some(name) = self.parse_ident("the query's name") else {
            return StmtKind::Error;
        };
        if self
            .expect(T::Arrow, "a query reads `query name -> Type { value }`")
            .is_none()
        {
            return StmtKind::Error;
        }
        let ret = self.parse_type();
        match self.parse_block() {
            Some(body) => StmtKind::Query {
                name,
                ret: Box::new(ret),
                body,
            },
            None => StmtKind::Error,
        }
    }

    /// Whether the word `parallel` here begins a `parallel` expression: it is followed by
    /// `for`, `{` or `collect` (elsewhere it is an ordinary name).
    fn starts_parallel(&self) -> bool {
        let next = self.next_token();
        match next.kind {
            T::For | T::LBrace => true,
            T::Ident => self.text(next.span) == "collect",
            _ => false,
        }
    }

    /// After `parallel`: `[collect] { name: value, … }` or
    /// `for var in items [max N] [collect] { body }`.
    fn parse_parallel(&mut self, start: Span) -> ExprKind {
        const SHAPE: &str =
            "write `parallel for item in items max 4 { … }` or `parallel { name: value, … }`";
        let mut collect = self.eat_word("collect").is_some();
        let branches = if self.eat(T::For).is_some() {
            let Some(var) = self.parse_ident("a name for each item") else {
                return ExprKind::Error;
            };
            if self.expect(T::In, SHAPE).is_none() {
                return ExprKind::Error;
            }
            let items = self.parse_expr(Records::NotHere);
            let max = self
                .eat_word("max")
                .map(|_| self.parse_expr(Records::NotHere));
            collect |= self.eat_word("collect").is_some();
            let Some(body) = self.parse_block() else {
                return ExprKind::Error;
            };
            ParallelBranches::Each {
                var,
                items,
                max,
                body,
            }
        } else {
            if self
                .expect(
                    T::LBrace,
                    "a `parallel` record names its branches in braces",
                )
                .is_none()
            {
                return ExprKind::Error;
            }
            // A branch in braces is a block, as an arm's body is (not a record literal).
            let fields = self.parse_list(T::RBrace, |p| {
                let name = p.parse_field_name("a name for the branch")?;
                p.expect(T::Colon, "write each branch as `name: value`")?;
                let value = p.parse_arm_body()?;
                Some(FieldInit { name, value })
            });
            if fields.is_empty() {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::SYNTAX_ERROR,
                        self.file,
                        start.to(self.previous_span()),
                        "this `parallel` has no branches",
                    )
                    .with_message("A `parallel` needs at least one branch")
                    .with_help(SHAPE),
                );
                return ExprKind::Error;
            }
            ParallelBranches::Fields(fields)
        };
        ExprKind::Parallel(Box::new(Parallel { branches, collect }))
    }

    /// `as name` after what a `select` arm waits for, if it is there.
    fn parse_arm_binding(&mut self) -> Option<Option<Ident>> {
        if self.at_word("as") {
            self.bump();
            return Some(Some(self.parse_ident("a name for the arm's value")?));
        }
        Some(None)
    }

    /// After `select`: `{ signal NAME [as x] => …, after DURATION => …, … }`.
    fn parse_select(&mut self, start: Span) -> ExprKind {
        const SHAPE: &str = "a `select` arm reads `signal name as value => …`, `approval \"gate\" { … } as d => …`, `input<T> \"name\" { … } as v => …`, `child(args) as r => …` or `after 30d => …`";
        if self
            .expect(T::LBrace, "a `select` lists its arms in braces")
            .is_none()
        {
            return ExprKind::Error;
        }
        let arms = self.parse_list(T::RBrace, |p| {
            let arm_start = p.span();
            let kind = if p.at(T::After) {
                p.bump();
                SelectArmKind::After {
                    duration: Box::new(p.parse_expr(Records::NotHere)),
                }
            } else if p.at_word("signal") {
                p.bump();
                let name = p.parse_ident("the name of a signal the workflow accepts")?;
                let binding = if p.at_word("as") {
                    p.bump();
                    Some(p.parse_ident("a name for the signal's value")?)
                } else {
                    None
                };
                SelectArmKind::Signal { name, binding }
            } else if p.at(T::Approval) || p.at(T::Input) {
                let start = p.span();
                let kind = p.parse_gate_wait();
                let wait = Expr {
                    kind,
                    span: start.to(p.previous_span()),
                };
                SelectArmKind::Wait {
                    wait: Box::new(wait),
                    binding: p.parse_arm_binding()?,
                }
            } else if p.at(T::Ident) {
                // A child workflow's (or a tool's) call: `review(doc) as r => …`.
                let wait = p.parse_expr(Records::NotHere);
                if !matches!(wait.kind, ExprKind::Call { .. }) {
                    p.diagnostics.push(
                        Diagnostic::error(
                            codes::SYNTAX_ERROR,
                            p.file,
                            wait.span,
                            "a `select` arm cannot wait for this",
                        )
                        .with_message("Expected what a `select` arm waits for")
                        .with_help(SHAPE),
                    );
                    return None;
                }
                SelectArmKind::Wait {
                    wait: Box::new(wait),
                    binding: p.parse_arm_binding()?,
                }
            } else {
                p.error_expected("`signal`, `approval`, `input`, a call or `after`", SHAPE);
                return None;
            };
            p.expect(
                T::FatArrow,
                "separate what the arm waits for from its result with `=>`",
            )?;
            let body = p.parse_arm_body()?;
            Some(SelectArm {
                span: arm_start.to(body.span),
                kind,
                body,
            })
        });
        if arms.is_empty() {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::SYNTAX_ERROR,
                    self.file,
                    start.to(self.previous_span()),
                    "this `select` has no arms",
                )
                .with_message("A `select` needs at least one arm")
                .with_help(SHAPE),
            );
            return ExprKind::Error;
        }
        ExprKind::Select { arms }
    }

    fn parse_pattern(&mut self) -> Option<Pattern> {
        let token = self.token();
        let start = token.span;
        let kind = match token.kind {
            T::Ident if self.text(start) == "_" => {
                self.bump();
                PatternKind::Wildcard
            }
            T::Ident => {
                let first = self.parse_ident("a pattern")?;
                let (enum_name, name) = if self.eat(T::Dot).is_some() {
                    (Some(first), self.parse_ident("a variant name")?)
                } else {
                    (None, first)
                };
                if self.eat(T::LParen).is_some() {
                    let fields = self.parse_list(T::RParen, |p| p.parse_pattern());
                    PatternKind::Variant {
                        enum_name,
                        name,
                        fields,
                    }
                } else if enum_name.is_some() {
                    PatternKind::Variant {
                        enum_name,
                        name,
                        fields: Vec::new(),
                    }
                } else {
                    PatternKind::Name(name.name)
                }
            }
            T::Number | T::Minus => {
                let negative = self.eat(T::Minus).is_some();
                let span = self.expect(T::Number, "")?;
                match self.number(span) {
                    ExprKind::Int(v) => PatternKind::Int(if negative { -v } else { v }),
                    ExprKind::Duration(ms) if !negative => PatternKind::Duration(ms),
                    ExprKind::Duration(_) => {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::INVALID_NUMBER,
                                self.file,
                                start.to(span),
                                "a duration cannot be negative",
                            )
                            .with_help("match a positive duration, e.g. `5m`"),
                        );
                        PatternKind::Error
                    }
                    // `number` has reported what is wrong with it.
                    _ => PatternKind::Error,
                }
            }
            T::Quote => {
                let lit = self.parse_plain_string("a string")?;
                PatternKind::Str(lit.value.into())
            }
            T::True | T::False => {
                self.bump();
                PatternKind::Bool(token.kind == T::True)
            }
            T::None => {
                self.bump();
                PatternKind::None
            }
            _ => {
                self.error_expected(
                    "a pattern",
                    "patterns are variants (`Held(reason)`), literals, names or `_`",
                );
                return None;
            }
        };
        Some(Pattern {
            kind,
            span: start.to(self.previous_span()),
        })
    }

    fn parse_retry(&mut self) -> ExprKind {
        self.bump();
        if self.at(T::LBrace) {
            return self.parse_retry_per_kind();
        }
        let start = self.span();
        let Some(mut policy) = self.parse_retry_policy() else {
            return ExprKind::Error;
        };
        if self.eat(T::On).is_some() {
            loop {
                match self.parse_ident("an error kind such as `ToolError`") {
                    Some(kind) => policy.kinds.push(kind),
                    None => return ExprKind::Error,
                }
                if self.eat(T::Comma).is_none() {
                    break;
                }
            }
        }
        policy.span = start.to(self.previous_span());
        match self.parse_block() {
            Some(body) => ExprKind::Retry {
                policies: Box::new([policy]),
                per_kind: false,
                body: Box::new(body),
            },
            None => ExprKind::Error,
        }
    }

    /// `waive approval for release, publish because "no anomaly found" { anomalies: n }`.
    fn parse_waiver(&mut self) -> StmtKind {
        const SHAPE: &str =
            "a waiver reads `waive approval for tool because \"why\" { field: value, … }`";
        self.bump();
        self.bump();
        if self.expect(T::For, SHAPE).is_none() {
            return StmtKind::Error;
        }
        let mut tools = Vec::new();
        loop {
            match self.parse_ident("the sensitive tool whose approval is waived") {
                Some(tool) => tools.push(tool),
                None => return StmtKind::Error,
            }
            if self.eat(T::Comma).is_none() {
                break;
            }
        }
        if !self.at_word("because") {
            self.error_expected("`because`", SHAPE);
            return StmtKind::Error;
        }
        self.bump();
        let Some(because) = self.parse_plain_string("why, in quotes") else {
            return StmtKind::Error;
        };
        let fields = if self.at(T::LBrace) && !self.token().starts_line {
            self.bump();
            self.parse_field_inits()
        } else {
            Vec::new()
        };
        StmtKind::Waive(Box::new(Waiver {
            tools,
            because,
            fields,
        }))
    }

    /// `retry { on Timeout: 3 backoff 1s, on RateLimited(r): 10 after r.retry_after } { … }`.
    fn parse_retry_per_kind(&mut self) -> ExprKind {
        const SHAPE: &str = "each policy reads `on Kind: 3 backoff 1s` or `on RateLimited(r): 10 after r.retry_after`";
        self.bump();
        let errors = self.error_count();
        let policies = self.parse_list(T::RBrace, |p| {
            let start = p.span();
            p.expect(T::On, SHAPE)?;
            let mut kinds = Vec::new();
            let mut binding = None;
            loop {
                kinds.push(p.parse_ident("an error kind such as `Timeout`")?);
                if p.at(T::LParen) {
                    p.bump();
                    binding = Some(p.parse_ident("a name for the error")?);
                    p.expect(T::RParen, "close the error's name with `)`")?;
                    if kinds.len() > 1 {
                        let span = kinds[0].span.to(p.previous_span());
                        p.diagnostics.push(
                            Diagnostic::error(
                                codes::SYNTAX_ERROR,
                                p.file,
                                span,
                                "several kinds, one name",
                            )
                            .with_message("Only the error of a policy of one kind can be named")
                            .with_help("give the named kind a policy of its own: `on RateLimited(r): 10 after r.retry_after`"),
                        );
                        return None;
                    }
                    break;
                }
                if p.eat(T::Comma).is_none() {
                    break;
                }
            }
            p.expect(T::Colon, SHAPE)?;
            let mut policy = p.parse_retry_policy()?;
            if p.eat(T::After).is_some() {
                policy.after = Some(p.parse_expr(Records::NotHere));
            }
            policy.kinds = kinds;
            policy.binding = binding;
            policy.span = start.to(p.previous_span());
            Some(policy)
        });
        if policies.is_empty() && self.error_count() == errors {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::SYNTAX_ERROR,
                    self.file,
                    self.previous_span(),
                    "no policy",
                )
                .with_message("A `retry { … }` needs a policy for at least one error kind")
                .with_help(SHAPE),
            );
            return ExprKind::Error;
        }
        match self.parse_block() {
            Some(body) => ExprKind::Retry {
                policies: policies.into_boxed_slice(),
                per_kind: true,
                body: Box::new(body),
            },
            None => ExprKind::Error,
        }
    }

    /// `(N | forever) [backoff D [multiplier K] [max M]] [jitter none] [within W]`.
    fn parse_retry_policy(&mut self) -> Option<RetryPolicy> {
        let (attempts, forever) = match self.eat_word("forever") {
            Some(span) => (
                Expr {
                    kind: ExprKind::Int(0),
                    span,
                },
                true,
            ),
            None => (self.parse_expr(Records::NotHere), false),
        };
        let mut policy = RetryPolicy {
            kinds: Vec::new(),
            binding: None,
            span: attempts.span,
            attempts,
            forever,
            backoff: None,
            multiplier: None,
            max: None,
            no_jitter: false,
            within: None,
            after: None,
        };
        if self.eat(T::Backoff).is_some() {
            policy.backoff = Some(self.parse_expr(Records::NotHere));
            if self.eat_word("multiplier").is_some() {
                policy.multiplier = Some(self.parse_expr(Records::NotHere));
            }
            // `max` is matched by its text: it is not a keyword.
            if self.at(T::Ident) && self.text(self.span()) == "max" {
                self.bump();
                policy.max = Some(self.parse_expr(Records::NotHere));
            }
        }
        if self.eat_word("jitter").is_some() {
            if self.eat(T::None).is_none() {
                self.error_expected(
                    "`none`",
                    "`jitter none` makes the waits exactly the backoff's",
                );
                return None;
            }
            policy.no_jitter = true;
        }
        if self.eat_word("within").is_some() {
            policy.within = Some(self.parse_expr(Records::NotHere));
        }
        Some(policy)
    }

    fn parse_try(&mut self) -> ExprKind {
        self.bump();
        let Some(body) = self.parse_block() else {
            return ExprKind::Error;
        };
        if !self.at(T::Catch) {
            self.expect(T::Catch, "a `try` block needs `catch error { … }` after it");
            return ExprKind::Error;
        }
        let mut catches = Vec::new();
        while self.at(T::Catch) {
            let start = self.bump().span;
            let Some(name) = self.parse_ident("a name for the caught error, or an error's name")
            else {
                return ExprKind::Error;
            };
            let (error, binding) = if self.eat(T::LParen).is_some() {
                let binding = self.parse_ident("a name for the caught error");
                if self
                    .expect(T::RParen, "close `catch Name(e)` with `)`")
                    .is_none()
                {
                    return ExprKind::Error;
                }
                (Some(name), binding)
            } else if name.name.starts_with(|c: char| c.is_uppercase()) {
                (Some(name), None)
            } else {
                (None, Some(name))
            };
            let Some(handler) = self.parse_block() else {
                return ExprKind::Error;
            };
            catches.push(Catch {
                error,
                binding,
                span: start.to(handler.span),
                handler,
            });
        }
        ExprKind::Try {
            body: Box::new(body),
            catches,
        }
    }

    fn parse_await(&mut self) -> ExprKind {
        self.bump();
        const HELP: &str = "write `await approval \"gate\" { … }`, `await input<Type> \"name\" { … }` or `await signal name`";
        match self.peek() {
            T::Approval | T::Input => self.parse_gate_wait(),
            T::Ident if self.at_word("signal") => {
                self.bump();
                match self.parse_ident("the name of a signal the workflow accepts") {
                    Some(name) => ExprKind::AwaitSignal { name },
                    None => ExprKind::Error,
                }
            }
            _ => {
                self.error_expected("`approval`, `input` or `signal`", HELP);
                ExprKind::Error
            }
        }
    }

    /// `approval "gate" { … }` or `input<Type> "name" { … }`: what follows `await` (and
    /// what a `select` arm waits for).
    fn parse_gate_wait(&mut self) -> ExprKind {
        if self.eat(T::Approval).is_some() {
            let Some(gate) = self.parse_plain_string("the gate name in quotes") else {
                return ExprKind::Error;
            };
            let Some(options) = self.parse_await_options() else {
                return ExprKind::Error;
            };
            return ExprKind::AwaitApproval { gate, options };
        }
        self.bump();
        if self
            .expect(
                T::Lt,
                "name the type of the input: `await input<Type> \"name\" { … }`",
            )
            .is_none()
        {
            return ExprKind::Error;
        }
        let ty = self.parse_type();
        if self.expect(T::Gt, "close the type with `>`").is_none() {
            return ExprKind::Error;
        }
        let Some(name) = self.parse_plain_string("the input name in quotes") else {
            return ExprKind::Error;
        };
        let Some(options) = self.parse_await_options() else {
            return ExprKind::Error;
        };
        ExprKind::AwaitInput {
            ty: Box::new(ty),
            name,
            options,
        }
    }

    fn parse_await_options(&mut self) -> Option<Vec<AwaitOption>> {
        self.expect(
            T::LBrace,
            "list the options in braces: `{ approvers: role(\"…\"), … }`",
        )?;
        Some(self.parse_list(T::RBrace, |p| {
            let name = p.parse_field_name("an option name")?;
            p.expect(T::Colon, "write each option as `name: value`")?;
            let value = p.parse_expr(Records::Allowed);
            let after = if p.eat(T::After).is_some() {
                Some(Box::new(p.parse_expr(Records::Allowed)))
            } else {
                None
            };
            Some(AwaitOption {
                span: name.span.to(p.previous_span()),
                name,
                value,
                after,
            })
        }))
    }
}

/// Moves an expression out, leaving an error node that is immediately overwritten.
/// `items` in an allocation of exactly its length. Lists are short (a record's fields, a
/// call's arguments) and a growing vector keeps room for four or twice its length: in a
/// large file the spare room was about a third of the whole tree (issue 15).
fn exact<I>(mut items: Vec<I>) -> Vec<I> {
    if items.len() == items.capacity() {
        return items;
    }
    let mut out = Vec::with_capacity(items.len());
    out.append(&mut items);
    out
}

fn take(expr: &mut Expr) -> Expr {
    std::mem::replace(expr, error_expr(expr.span))
}

fn error_expr(span: Span) -> Expr {
    Expr {
        kind: ExprKind::Error,
        span,
    }
}

fn is_assignable(expr: &Expr) -> bool {
    match &expr.kind {
        ExprKind::Name(_) => true,
        ExprKind::Field {
            base,
            optional: false,
            ..
        } => is_assignable(base),
        _ => false,
    }
}

/// Operator, precedence (higher binds tighter) and right-associativity.
fn binary_op(kind: T) -> Option<(BinaryOp, u8, bool)> {
    Some(match kind {
        T::OrOr => (BinaryOp::Or, 1, false),
        T::AndAnd => (BinaryOp::And, 2, false),
        T::EqEq => (BinaryOp::Eq, 3, false),
        T::NotEq => (BinaryOp::NotEq, 3, false),
        T::Lt => (BinaryOp::Lt, 4, false),
        T::LtEq => (BinaryOp::LtEq, 4, false),
        T::Gt => (BinaryOp::Gt, 4, false),
        T::GtEq => (BinaryOp::GtEq, 4, false),
        T::QuestionQuestion => (BinaryOp::Coalesce, 5, true),
        T::Plus => (BinaryOp::Add, 6, false),
        T::Minus => (BinaryOp::Sub, 6, false),
        T::Star => (BinaryOp::Mul, 7, false),
        T::Slash => (BinaryOp::Div, 7, false),
        T::Percent => (BinaryOp::Rem, 7, false),
        _ => return None,
    })
}

/// `doc.title` for the expression `doc.title`: a name followed by field accesses.
fn argument_path(expr: &Expr) -> Option<String> {
    match &expr.kind {
        ExprKind::Name(name) => Some(name.to_string()),
        ExprKind::Field { base, name, .. } => {
            Some(format!("{}.{}", argument_path(base)?, name.name))
        }
        _ => None,
    }
}
