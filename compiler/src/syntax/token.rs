//! Token kinds, recognised by logos.
//!
//! Tokens carry no data: their text is the source slice under their span, so the lexer
//! allocates nothing. String literals are lexed by hand in [`super::lexer`] (they nest
//! `${…}` interpolations), starting from the [`TokenKind::Quote`] logos finds.

use logos::Logos;
use std::fmt;

#[derive(Logos, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[logos(skip r"[ \t\r\n\f]+")]
pub enum TokenKind {
    #[regex(r"///[^\n]*", allow_greedy = true)]
    DocComment,
    #[regex(r"//[^\n]*", allow_greedy = true)]
    Comment,

    #[regex(r"[\p{L}_][\p{L}\p{N}_]*")]
    Ident,
    /// Digits, possibly followed by letters: `42`, `1_000`, `500ms`, `48h`. The parser
    /// decides whether a suffix is a valid duration unit, so `2days` gets a precise error.
    #[regex(r"[0-9][0-9_]*[\p{L}_]*")]
    Number,
    #[regex(r"[0-9][0-9_]*\.[0-9][0-9_]*")]
    Float,
    #[token("\"")]
    Quote,

    // Produced by the string lexer, never by logos directly.
    StrText,
    StrEnd,
    InterpStart,
    InterpEnd,

    // Keywords.
    #[token("import")]
    Import,
    #[token("type")]
    Type,
    #[token("enum")]
    Enum,
    #[token("tool")]
    Tool,
    #[token("via")]
    Via,
    #[token("sensitive")]
    Sensitive,
    #[token("workflow")]
    Workflow,
    #[token("let")]
    Let,
    #[token("var")]
    Var,
    #[token("if")]
    If,
    #[token("else")]
    Else,
    #[token("match")]
    Match,
    #[token("for")]
    For,
    #[token("in")]
    In,
    #[token("while")]
    While,
    #[token("break")]
    Break,
    #[token("continue")]
    Continue,
    #[token("return")]
    Return,
    #[token("fail")]
    Fail,
    #[token("try")]
    Try,
    #[token("catch")]
    Catch,
    #[token("retry")]
    Retry,
    #[token("backoff")]
    Backoff,
    #[token("on")]
    On,
    #[token("timeout")]
    Timeout,
    #[token("sleep")]
    Sleep,
    #[token("audit")]
    Audit,
    #[token("await")]
    Await,
    #[token("approval")]
    Approval,
    #[token("input")]
    Input,
    #[token("after")]
    After,
    #[token("true")]
    True,
    #[token("false")]
    False,
    #[token("none")]
    None,

    // Punctuation and operators.
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token(",")]
    Comma,
    #[token(":")]
    Colon,
    #[token(";")]
    Semicolon,
    #[token(".")]
    Dot,
    #[token("?.")]
    QuestionDot,
    #[token("??")]
    QuestionQuestion,
    #[token("?")]
    Question,
    #[token("->")]
    Arrow,
    #[token("=>")]
    FatArrow,
    #[token("=")]
    Assign,
    #[token("==")]
    EqEq,
    #[token("!=")]
    NotEq,
    #[token("<")]
    Lt,
    #[token("<=")]
    LtEq,
    #[token(">")]
    Gt,
    #[token(">=")]
    GtEq,
    #[token("+")]
    Plus,
    #[token("-")]
    Minus,
    #[token("*")]
    Star,
    #[token("/")]
    Slash,
    #[token("%")]
    Percent,
    #[token("!")]
    Bang,
    #[token("&&")]
    AndAnd,
    #[token("||")]
    OrOr,

    /// End of input; the parser sees exactly one, at the end.
    Eof,
}

impl TokenKind {
    /// How the token reads in "expected …, found …" messages.
    pub fn describe(self) -> &'static str {
        use TokenKind::*;
        match self {
            DocComment => "a doc comment",
            Comment => "a comment",
            Ident => "a name",
            Number => "a number",
            Float => "a number",
            Quote | StrText | StrEnd => "a string",
            InterpStart => "`${`",
            InterpEnd => "`}`",
            Eof => "the end of the file",
            other => other.keyword_or_symbol().unwrap_or("a token"),
        }
    }

    /// The literal text of a keyword or symbol token.
    pub fn keyword_or_symbol(self) -> Option<&'static str> {
        use TokenKind::*;
        Some(match self {
            Import => "`import`",
            Type => "`type`",
            Enum => "`enum`",
            Tool => "`tool`",
            Via => "`via`",
            Sensitive => "`sensitive`",
            Workflow => "`workflow`",
            Let => "`let`",
            Var => "`var`",
            If => "`if`",
            Else => "`else`",
            Match => "`match`",
            For => "`for`",
            In => "`in`",
            While => "`while`",
            Break => "`break`",
            Continue => "`continue`",
            Return => "`return`",
            Fail => "`fail`",
            Try => "`try`",
            Catch => "`catch`",
            Retry => "`retry`",
            Backoff => "`backoff`",
            On => "`on`",
            Timeout => "`timeout`",
            Sleep => "`sleep`",
            Audit => "`audit`",
            Await => "`await`",
            Approval => "`approval`",
            Input => "`input`",
            After => "`after`",
            True => "`true`",
            False => "`false`",
            None => "`none`",
            LParen => "`(`",
            RParen => "`)`",
            LBrace => "`{`",
            RBrace => "`}`",
            LBracket => "`[`",
            RBracket => "`]`",
            Comma => "`,`",
            Colon => "`:`",
            Semicolon => "`;`",
            Dot => "`.`",
            QuestionDot => "`?.`",
            QuestionQuestion => "`??`",
            Question => "`?`",
            Arrow => "`->`",
            FatArrow => "`=>`",
            Assign => "`=`",
            EqEq => "`==`",
            NotEq => "`!=`",
            Lt => "`<`",
            LtEq => "`<=`",
            Gt => "`>`",
            GtEq => "`>=`",
            Plus => "`+`",
            Minus => "`-`",
            Star => "`*`",
            Slash => "`/`",
            Percent => "`%`",
            Bang => "`!`",
            AndAnd => "`&&`",
            OrOr => "`||`",
            _ => return Option::None,
        })
    }

    /// Keywords that may also be used as field and option names (`timeout: 48h`, `input.x`).
    pub fn is_keyword(self) -> bool {
        use TokenKind::*;
        matches!(
            self,
            Import
                | Type
                | Enum
                | Tool
                | Via
                | Sensitive
                | Workflow
                | Let
                | Var
                | If
                | Else
                | Match
                | For
                | In
                | While
                | Break
                | Continue
                | Return
                | Fail
                | Try
                | Catch
                | Retry
                | Backoff
                | On
                | Timeout
                | Sleep
                | Audit
                | Await
                | Approval
                | Input
                | After
                | True
                | False
                | None
        )
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}
