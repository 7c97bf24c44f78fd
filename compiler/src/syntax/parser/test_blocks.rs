//! Parsing `test "name" { … }` blocks: the steps of a scripted run (see `spec/testing.md`).
//!
//! The step words (`mock`, `start`, `expect`, `approve`, …) are not reserved: they are
//! plain names everywhere else, and recognised here only as the first word of a step, so
//! adding tests to the language took no name away from workflows.

use super::{Parser, Records};
use crate::diagnostics::{Diagnostic, codes};
use crate::span::Span;
use crate::syntax::ast::*;
use crate::syntax::token::TokenKind as T;

const STEP_HELP: &str = "a test step is `mock`, `start`, `let r = start …`, `expect`, `approve`, `reject`, `provide`, `advance` or `cancel`";

impl Parser<'_> {
    /// Whether the current token starts a test block: the name `test` before a string.
    pub(super) fn at_test_item(&self) -> bool {
        self.at(T::Ident) && self.text(self.span()) == "test" && self.next_token().kind == T::Quote
    }

    pub(super) fn parse_test_decl(&mut self) -> Option<TestDecl> {
        let start = self.bump().span;
        let name = self.parse_plain_string("the test's name in quotes")?;
        let open = self.expect(T::LBrace, "a test reads `test \"name\" { steps… }`")?;
        if !self.enter() {
            return None;
        }
        let mut steps = Vec::new();
        let end = loop {
            match self.peek() {
                T::RBrace => break self.bump().span,
                T::Eof => {
                    self.report(
                        Diagnostic::error(
                            codes::SYNTAX_ERROR,
                            self.file,
                            open,
                            "this `{` is never closed",
                        )
                        .with_message("Unclosed test")
                        .with_help("add the matching `}`"),
                    );
                    break self.previous_span();
                }
                T::Semicolon => {
                    self.bump();
                }
                _ => steps.push(self.parse_test_step()),
            }
        };
        self.leave();
        Some(TestDecl {
            name,
            steps,
            span: start.to(end),
        })
    }

    fn parse_test_step(&mut self) -> TestStep {
        let start_pos = self.pos;
        let start = self.span();
        let errors = self.error_count();
        let mut kind = self.parse_test_step_kind().unwrap_or(TestStepKind::Error);
        let run = if self.at(T::In) && self.error_count() == errors {
            self.bump();
            let run = self.parse_ident("the name of a run (`let r1 = start …`)");
            if run.is_none() {
                kind = TestStepKind::Error;
            }
            run
        } else {
            None
        };
        let span = start.to(self.previous_span());
        self.end_line_item(
            start_pos,
            errors,
            "the end of the step",
            "put each step on its own line, or separate them with `;`",
        );
        let kind = if self.error_count() > errors {
            TestStepKind::Error
        } else {
            kind
        };
        TestStep { kind, run, span }
    }

    /// The current token when it is the name `word`; consumes it.
    pub(super) fn eat_word(&mut self, word: &str) -> Option<Span> {
        if self.at(T::Ident) && self.text(self.span()) == word {
            Some(self.bump().span)
        } else {
            None
        }
    }

    fn expect_word(&mut self, word: &str, help: &str) -> Option<Span> {
        let found = self.eat_word(word);
        if found.is_none() {
            self.error_expected(&format!("`{word}`"), help);
        }
        found
    }

    fn parse_test_step_kind(&mut self) -> Option<TestStepKind> {
        let word = if self.at(T::Ident) {
            self.text(self.span())
        } else {
            ""
        };
        if self.eat(T::Let).is_some() {
            let name = self.parse_ident("a name for the run")?;
            self.expect(T::Assign, "name a run with `let r1 = start workflow(…)`")?;
            if self.eat_word("start").is_none() {
                self.error_expected("`start`", "name a run with `let r1 = start workflow(…)`");
                return None;
            }
            return self.parse_start(Some(name));
        }
        match word {
            "mock" => {
                self.bump();
                self.parse_mock()
            }
            "start" => {
                self.bump();
                self.parse_start(None)
            }
            "expect" => {
                self.bump();
                self.parse_expectation()
            }
            "approve" | "reject" => self.parse_decision(false),
            "provide" => self.parse_provide(false),
            "signal" => self.parse_signal(false),
            "advance" => {
                self.bump();
                let by = self.parse_expr(Records::NotHere);
                Some(TestStepKind::Advance { by })
            }
            "cancel" => {
                self.bump();
                let plain = self.at_word("without") && !self.token().starts_line;
                if plain {
                    self.bump();
                    if !self.at_word("undo") {
                        self.error_unexpected(
                            "`undo`",
                            "write `cancel without undo` to skip the undo blocks and `on cancel`",
                        );
                        return None;
                    }
                    self.bump();
                }
                Some(TestStepKind::Cancel { compensate: !plain })
            }
            _ => {
                self.error_unexpected("a test step", STEP_HELP);
                None
            }
        }
    }

    /// After `start`: the workflow, its input (arguments or JSON) and who starts it.
    fn parse_start(&mut self, name: Option<Ident>) -> Option<TestStepKind> {
        let workflow = self.parse_ident("the workflow to start")?;
        let input = if self.eat_word("json").is_some() {
            if self.eat_word("file").is_some() {
                StartInput::JsonFile(self.parse_plain_string("the JSON file's path in quotes")?)
            } else {
                StartInput::Json(self.parse_plain_string(
                    "the input as JSON text in quotes, or `file \"input.json\"`",
                )?)
            }
        } else {
            self.expect(
                T::LParen,
                "start a workflow with its arguments: `start review(order)`, or with JSON: `start review json \"{…}\"`",
            )?;
            StartInput::Args(self.parse_list(T::RParen, |p| Some(p.parse_expr(Records::Allowed))))
        };
        let by = if self.eat_word("as").is_some() {
            Some(self.parse_plain_string("the user who starts the run, in quotes")?)
        } else {
            None
        };
        Some(TestStepKind::Start {
            name,
            workflow,
            input,
            by,
        })
    }

    fn parse_mock(&mut self) -> Option<TestStepKind> {
        let tool = self.parse_ident("the tool to mock")?;
        let params = if self.eat(T::LParen).is_some() {
            Some(self.parse_list(T::RParen, |p| p.parse_ident("a name for the argument")))
        } else {
            None
        };
        let help = "a mock reads `mock tool returns value`, `mock tool replies \"raw\"` or `mock tool fails Kind \"message\"`";
        let behavior = if self.eat_word("returns").is_some() {
            MockBehavior::Returns(self.parse_expr(Records::Allowed))
        } else if params.is_none() && self.eat_word("replies").is_some() {
            MockBehavior::Replies(self.parse_plain_string("the raw reply in quotes")?)
        } else if params.is_none() && self.eat_word("fails").is_some() {
            let kind = self.parse_ident("an error kind, such as `ToolError`")?;
            let message = if self.at(T::Quote) {
                Some(self.parse_plain_string("the error message")?)
            } else {
                None
            };
            let permanent = self.eat_word("permanent").is_some();
            MockBehavior::Fails {
                kind,
                message,
                permanent,
            }
        } else {
            self.error_expected("`returns`, `replies` or `fails`", help);
            return None;
        };
        let times = if self.eat_word("times").is_some() {
            Some(self.parse_count()?)
        } else {
            None
        };
        Some(TestStepKind::Mock {
            tool,
            params,
            behavior,
            times,
        })
    }

    /// A positive whole number (how many times).
    fn parse_count(&mut self) -> Option<(u32, Span)> {
        let span = self.span();
        if self.at(T::Number)
            && let Ok(n) = self.text(span).parse::<u32>()
            && n > 0
        {
            self.bump();
            return Some((n, span));
        }
        self.error_expected("a number of times (1 or more)", "");
        None
    }

    fn parse_provide(&mut self, refused: bool) -> Option<TestStepKind> {
        self.bump();
        self.expect(
            T::Input,
            "a step reads `provide input \"gate\" as \"user\" value …`",
        )?;
        let gate = self.parse_plain_string("the input's name in quotes")?;
        self.expect_word("as", "say who provides it: `as \"user\"`")?;
        let user = self.parse_plain_string("the user's name in quotes")?;
        self.expect_word("value", "give the value: `value { … }`")?;
        let value = self.parse_expr(Records::Allowed);
        Some(TestStepKind::Provide {
            gate,
            user,
            value,
            refused,
        })
    }

    /// `signal name as "user" [value <expr>]` (a system sends `as "system:NAME"`).
    fn parse_signal(&mut self, refused: bool) -> Option<TestStepKind> {
        self.bump();
        let name = self.parse_ident("the signal's name")?;
        self.expect_word(
            "as",
            "say who sends it: `signal name as \"user\"` (or `as \"system:NAME\"`)",
        )?;
        let user = self.parse_plain_string("the sender's name in quotes")?;
        let value = if self.eat_word("value").is_some() {
            Some(self.parse_expr(Records::Allowed))
        } else {
            None
        };
        Some(TestStepKind::Signal {
            name,
            user,
            value,
            refused,
        })
    }

    fn parse_decision(&mut self, refused: bool) -> Option<TestStepKind> {
        let approve = self.text(self.span()) == "approve";
        self.bump();
        let gate = if self.at(T::Quote) {
            Some(self.parse_plain_string("the gate's name")?)
        } else {
            None
        };
        self.expect_word("as", "say who decides: `approve as \"user\"`")?;
        let user = self.parse_plain_string("the user's name in quotes")?;
        let comment = if self.eat_word("comment").is_some() {
            Some(self.parse_plain_string("the comment in quotes")?)
        } else {
            None
        };
        Some(TestStepKind::Decide {
            approve,
            gate,
            user,
            comment,
            refused,
        })
    }

    /// `with { field: value, … }` after an expectation, if present: `Some(None)` without it,
    /// `None` after an error.
    fn parse_with_fields(&mut self) -> Option<Option<Expr>> {
        if self.eat_word("with").is_none() {
            return Some(None);
        }
        if !self.at(T::LBrace) {
            self.error_expected("`{`", "list the fields: `with { field: value }`");
            return None;
        }
        Some(Some(self.parse_expr(Records::Allowed)))
    }

    fn parse_expectation(&mut self) -> Option<TestStepKind> {
        if self.eat(T::Approval).is_some() {
            let gate = self.parse_plain_string("the approval's name in quotes")?;
            let fields = self.parse_with_fields()?;
            return Some(TestStepKind::ExpectGate {
                input: false,
                gate,
                fields,
            });
        }
        if self.eat(T::Input).is_some() {
            let gate = self.parse_plain_string("the input's name in quotes")?;
            let fields = self.parse_with_fields()?;
            return Some(TestStepKind::ExpectGate {
                input: true,
                gate,
                fields,
            });
        }
        let word = if self.at(T::Ident) {
            self.text(self.span())
        } else {
            ""
        };
        match word {
            "result" => {
                self.bump();
                if self.eat(T::EqEq).is_some() {
                    return Some(TestStepKind::ExpectResult(ResultCheck::Equals(
                        self.parse_expr(Records::Allowed),
                    )));
                }
                let pattern = self.parse_pattern()?;
                Some(TestStepKind::ExpectResult(ResultCheck::Matches(pattern)))
            }
            "query" => {
                self.bump();
                let name = self.parse_ident("the query's name")?;
                let check = if self.eat(T::EqEq).is_some() {
                    ResultCheck::Equals(self.parse_expr(Records::Allowed))
                } else {
                    ResultCheck::Matches(self.parse_pattern()?)
                };
                Some(TestStepKind::ExpectQuery { name, check })
            }
            "error" => {
                self.bump();
                let kind = self.parse_ident("an error kind, such as `ToolError`")?;
                let message = if self.at(T::Quote) {
                    Some(self.parse_plain_string("the error message")?)
                } else {
                    None
                };
                Some(TestStepKind::ExpectError { kind, message })
            }
            "called" if self.next_token().kind == T::In => {
                self.bump();
                self.bump();
                self.expect_word(
                    "order",
                    "write `expect called in order first_tool, second_tool`",
                )?;
                let mut calls = Vec::new();
                loop {
                    let tool = self.parse_ident("the tool's name")?;
                    let args = if self.eat(T::LParen).is_some() {
                        Some(self.parse_list(T::RParen, |p| Some(p.parse_expr(Records::Allowed))))
                    } else {
                        None
                    };
                    calls.push(ExpectedCall { tool, args });
                    if self.eat(T::Comma).is_none() {
                        break;
                    }
                }
                Some(TestStepKind::ExpectCallOrder { calls })
            }
            "called" | "not" => {
                let negated = self.eat_word("not").is_some();
                self.expect_word("called", "write `expect not called tool`")?;
                let tool = self.parse_ident("the tool's name")?;
                let times = if !negated && self.at(T::Number) {
                    let count = self.parse_count()?;
                    self.expect_word("times", "write `expect called tool 2 times`")?;
                    Some(count)
                } else {
                    None
                };
                let args = if self.eat_word("with").is_some() {
                    self.expect(T::LParen, "list the arguments: `with (\"a\", 2)`")?;
                    Some(self.parse_list(T::RParen, |p| Some(p.parse_expr(Records::Allowed))))
                } else {
                    None
                };
                Some(TestStepKind::ExpectCalled {
                    tool,
                    negated,
                    times,
                    args,
                })
            }
            "escalated" => {
                self.bump();
                let gate = self.parse_plain_string("the gate's name in quotes")?;
                Some(TestStepKind::ExpectEscalated { gate })
            }
            "status" => {
                self.bump();
                let status = self.parse_ident("`completed`, `failed`, `waiting` or `cancelled`")?;
                Some(TestStepKind::ExpectStatus(status))
            }
            "refused" => {
                self.bump();
                if self.at(T::Ident) && self.text(self.span()) == "provide" {
                    return self.parse_provide(true);
                }
                if self.at(T::Ident) && self.text(self.span()) == "signal" {
                    return self.parse_signal(true);
                }
                if !matches!(self.text(self.span()), "approve" | "reject") || !self.at(T::Ident) {
                    self.error_expected(
                        "`approve` or `reject`",
                        "write `expect refused approve as \"user\"`",
                    );
                    return None;
                }
                self.parse_decision(true)
            }
            "notified" => {
                self.bump();
                let gate = self.parse_plain_string("the gate's name in quotes")?;
                let fields = self.parse_with_fields()?;
                Some(TestStepKind::ExpectNotified { gate, fields })
            }
            _ if self.at(T::Audit) => {
                self.bump();
                let event = self.parse_plain_string("the audit event's name in quotes")?;
                let fields = self.parse_with_fields()?;
                Some(TestStepKind::ExpectAudit { event, fields })
            }
            _ => {
                self.error_unexpected(
                    "what to expect",
                    "expect `approval \"gate\"`, `input \"gate\"`, `result Pattern`, `result == value`, `error Kind`, `called tool`, `called in order a, b`, `not called tool`, `audit \"event\"`, `notified \"gate\"`, `escalated \"gate\"`, `refused approve …` or `status completed`",
                );
                None
            }
        }
    }
}
