//! Flow's builtin types and functions, defined once.
//!
//! The type checker seeds its environment from these tables and the runtime implements
//! [`Builtin`] with an exhaustive `match`, so a new builtin does not compile until both
//! sides handle it. Builtin ids are persisted in bytecode: they are explicit, stable and
//! append-only — never renumber or reuse one.

pub mod hex;
pub mod time;

/// A type as written in a builtin signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Int,
    Float,
    Bool,
    String,
    Duration,
    Time,
    Json,
    /// Who may decide an approval or supply an input: `role("customs")`, `user("ana")`.
    Approvers,
    /// Any type at all (e.g. what `to_string` accepts).
    Any,
    /// The one type variable of a generic builtin, written `T` in docs.
    Var,
    List(&'static Ty),
    Map(&'static Ty),
    Optional(&'static Ty),
    /// A builtin record from [`BUILTIN_RECORDS`], by name.
    Record(&'static str),
}

/// Whether a builtin is a pure function or a durable point whose result is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Pure,
    /// Recorded in the run's history and replayed on resume (e.g. the clock).
    Durable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: &'static str,
    pub ty: Ty,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum Builtin {
    Now = 1,
    Role = 2,
    User = 3,
    Len = 4,
    Contains = 5,
    Keys = 6,
    ToString = 7,
    ParseInt = 8,
    Lower = 9,
    Upper = 10,
    Trim = 11,
    StartsWith = 12,
    Join = 13,
    ToJson = 14,
    Length = 15,
    Any = 16,
    EndsWith = 17,
    RunId = 18,
}

const fn p(name: &'static str, ty: Ty) -> Param {
    Param { name, ty }
}

impl Builtin {
    pub const ALL: &'static [Builtin] = &[
        Builtin::Now,
        Builtin::Role,
        Builtin::User,
        Builtin::Len,
        Builtin::Contains,
        Builtin::Keys,
        Builtin::ToString,
        Builtin::ParseInt,
        Builtin::Lower,
        Builtin::Upper,
        Builtin::Trim,
        Builtin::StartsWith,
        Builtin::Join,
        Builtin::ToJson,
        Builtin::Length,
        Builtin::Any,
        Builtin::EndsWith,
        Builtin::RunId,
    ];

    /// The stable id stored in bytecode.
    pub fn id(self) -> u16 {
        self as u16
    }

    pub fn from_id(id: u16) -> Option<Builtin> {
        Builtin::ALL.iter().copied().find(|b| b.id() == id)
    }

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.iter().copied().find(|b| b.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Now => "now",
            Builtin::Role => "role",
            Builtin::User => "user",
            Builtin::Len => "len",
            Builtin::Contains => "contains",
            Builtin::Keys => "keys",
            Builtin::ToString => "to_string",
            Builtin::ParseInt => "parse_int",
            Builtin::Lower => "lower",
            Builtin::Upper => "upper",
            Builtin::Trim => "trim",
            Builtin::StartsWith => "starts_with",
            Builtin::EndsWith => "ends_with",
            Builtin::Join => "join",
            Builtin::ToJson => "to_json",
            Builtin::Length => "length",
            Builtin::Any => "any",
            Builtin::RunId => "run_id",
        }
    }

    pub fn params(self) -> &'static [Param] {
        use Ty::*;
        match self {
            Builtin::Now | Builtin::RunId => &[],
            Builtin::Role => const { &[p("name", String)] },
            Builtin::User => const { &[p("id", String)] },
            Builtin::Len => const { &[p("list", List(&Var))] },
            Builtin::Contains => const { &[p("list", List(&Var)), p("item", Var)] },
            Builtin::Keys => const { &[p("map", Map(&Var))] },
            Builtin::ToString => const { &[p("value", Any)] },
            Builtin::ParseInt => const { &[p("text", String)] },
            Builtin::Lower | Builtin::Upper | Builtin::Trim => const { &[p("text", String)] },
            Builtin::StartsWith => const { &[p("text", String), p("prefix", String)] },
            Builtin::EndsWith => const { &[p("text", String), p("suffix", String)] },
            Builtin::Join => const { &[p("parts", List(&String)), p("separator", String)] },
            Builtin::ToJson => const { &[p("value", Any)] },
            Builtin::Length => const { &[p("text", String)] },
            // Also called with the approvers as separate arguments: `any(role("a"), user("b"))`;
            // the checker accepts both forms and the runtime flattens them.
            Builtin::Any => const { &[p("approvers", List(&Approvers))] },
        }
    }

    pub fn returns(self) -> Ty {
        use Ty::*;
        match self {
            Builtin::Now => Time,
            Builtin::Role | Builtin::User | Builtin::Any => Approvers,
            Builtin::Len => Int,
            Builtin::Contains | Builtin::StartsWith | Builtin::EndsWith => Bool,
            Builtin::Keys => List(&String),
            Builtin::ToString | Builtin::RunId => String,
            Builtin::ParseInt => Optional(&Int),
            Builtin::Lower | Builtin::Upper | Builtin::Trim | Builtin::Join => String,
            Builtin::ToJson => Json,
            Builtin::Length => Int,
        }
    }

    pub fn effect(self) -> Effect {
        match self {
            Builtin::Now | Builtin::RunId => Effect::Durable,
            Builtin::Role
            | Builtin::User
            | Builtin::Len
            | Builtin::Contains
            | Builtin::Keys
            | Builtin::ToString
            | Builtin::ParseInt
            | Builtin::Lower
            | Builtin::Upper
            | Builtin::Trim
            | Builtin::StartsWith
            | Builtin::EndsWith
            | Builtin::Join
            | Builtin::ToJson
            | Builtin::Length
            | Builtin::Any => Effect::Pure,
        }
    }

    pub fn doc(self) -> &'static str {
        match self {
            Builtin::Now => "The current time, recorded on first execution and replayed on resume.",
            Builtin::Role => "Everyone holding the named role may decide.",
            Builtin::User => "Only the named user may decide.",
            Builtin::Len => "The number of items in a list.",
            Builtin::Contains => {
                "Whether the list holds an item equal to `item` — or, given two texts, whether the first contains the second (`contains(subject, \"urgent\")`)."
            }
            Builtin::Keys => "The keys of a map, in sorted order.",
            Builtin::ToString => "A readable text form of any value.",
            Builtin::ParseInt => "The integer written in `text`, or `none`.",
            Builtin::Lower => "The text in lower case.",
            Builtin::Upper => "The text in upper case.",
            Builtin::Trim => "The text without leading and trailing white space.",
            Builtin::StartsWith => "Whether `text` starts with `prefix`.",
            Builtin::EndsWith => "Whether `text` ends with `suffix`.",
            Builtin::Join => "The parts joined by the separator.",
            Builtin::ToJson => "The value as `Json`.",
            Builtin::Length => "The number of characters in the text.",
            Builtin::Any => {
                "Anyone matching one of the approvers may decide: `any(role(\"customs\"), user(\"ana\"))` (or a list of them)."
            }
            Builtin::RunId => {
                "The id of this run, the same on every resume: to name the run in a message, a link or a ticket."
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct RecordField {
    pub name: &'static str,
    pub ty: Ty,
    pub doc: &'static str,
}

#[derive(Clone, Copy, Debug)]
pub struct BuiltinRecord {
    pub name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [RecordField],
}

const fn f(name: &'static str, ty: Ty, doc: &'static str) -> RecordField {
    RecordField { name, ty, doc }
}

/// What `await approval` returns.
pub const DECISION: BuiltinRecord = BuiltinRecord {
    name: "Decision",
    doc: "The outcome of an approval gate: who decided, when, and with what comment.",
    fields: &[
        f("approved", Ty::Bool, "True when the gate was approved."),
        f(
            "by",
            Ty::String,
            "The user who decided; with a `quorum` above 1, every approver, comma-separated.",
        ),
        f("at", Ty::Time, "When the decision was made."),
        f(
            "comment",
            Ty::String,
            "The reviewer's comment (may be empty).",
        ),
    ],
};

/// What `catch e { … }` binds.
pub const ERROR: BuiltinRecord = BuiltinRecord {
    name: "Error",
    doc: "A caught failure: its kind, a message, the step that failed, and whether trying again may help.",
    fields: &[
        f(
            "kind",
            Ty::String,
            "One of the error kinds, e.g. `ToolError`.",
        ),
        f("message", Ty::String, "What went wrong."),
        f("step", Ty::String, "The tool or construct that failed."),
        f(
            "tool",
            Ty::String,
            "The tool that failed (empty when no tool did).",
        ),
        f(
            "attempt",
            Ty::Int,
            "Which attempt of the step failed, from 1.",
        ),
        f(
            "retryable",
            Ty::Bool,
            "Whether trying again may succeed: connection errors, 429 and 5xx, invalid output and time-outs are; a 4xx, `fail` and a person's time-out are not.",
        ),
        f(
            "status",
            Ty::Optional(&Ty::Int),
            "The HTTP status of the answer that failed (`none` when there was no answer, or the tool is not `http`).",
        ),
    ],
};

pub const BUILTIN_RECORDS: &[BuiltinRecord] = &[DECISION, ERROR];

/// Kinds of failure that `retry … on Kind` and `catch` distinguish.
pub const ERROR_KINDS: &[(&str, &str)] = &[
    (
        "ToolError",
        "A tool call failed (non-zero exit, HTTP error status, connection refused).",
    ),
    (
        "InvalidOutput",
        "A tool or model answered with data that does not match its declared type.",
    ),
    (
        "Timeout",
        "A `timeout` block or a tool call ran out of time.",
    ),
    (
        "ApprovalTimeout",
        "An approval or input gate reached its final timeout.",
    ),
    ("Failed", "A `fail \"…\"` statement."),
];

/// The names of the options of `await approval` and `await input`: the one definition the
/// checker, the lowering (the fields of the options record) and the runtime (reading that
/// record when a gate opens) all use.
pub mod gate_option {
    pub const APPROVERS: &str = "approvers";
    /// `await input`'s `approvers`.
    pub const FROM: &str = "from";
    pub const PROMPT: &str = "prompt";
    pub const CONTEXT: &str = "context";
    pub const TIMEOUT: &str = "timeout";
    pub const ESCALATE: &str = "escalate";
    /// The duration of `escalate: X after D`: the field [`after_field`] gives `escalate`.
    pub const ESCALATE_AFTER: &str = "escalate_after";
    pub const QUORUM: &str = "quorum";
    pub const ALLOW_SELF: &str = "allow_self";
    pub const REMIND: &str = "remind";

    /// The field that holds the `after D` of an option that takes one (`escalate_after`).
    pub fn after_field(option: &str) -> String {
        format!("{option}_after")
    }
}

/// An option of `await approval` or `await input`.
#[derive(Clone, Copy, Debug)]
pub struct GateOption {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    /// Takes `after <Duration>` (escalation, the first reminder).
    pub takes_after: bool,
    /// The `after` must be given (an escalation needs its delay; a reminder does not).
    pub after_required: bool,
    pub doc: &'static str,
}

const fn o(name: &'static str, ty: Ty, required: bool, doc: &'static str) -> GateOption {
    GateOption {
        name,
        ty,
        required,
        takes_after: false,
        after_required: false,
        doc,
    }
}

pub const APPROVAL_OPTIONS: &[GateOption] = &[
    o(
        gate_option::APPROVERS,
        Ty::Approvers,
        true,
        "Who may decide: `role(\"customs\")`, `user(\"ana\")` or `any(…)` of them.",
    ),
    o(
        gate_option::PROMPT,
        Ty::String,
        false,
        "What the reviewer is asked.",
    ),
    o(
        gate_option::CONTEXT,
        Ty::Any,
        false,
        "Data shown to the reviewer with the request.",
    ),
    o(
        gate_option::TIMEOUT,
        Ty::Duration,
        false,
        "How long to wait before the gate times out.",
    ),
    GateOption {
        name: gate_option::ESCALATE,
        ty: Ty::Approvers,
        required: false,
        takes_after: true,
        after_required: true,
        doc: "Who else may decide once the wait passes a duration: `role(\"ops\") after 24h`.",
    },
    o(
        gate_option::QUORUM,
        Ty::Int,
        false,
        "How many distinct approvers must approve (default 1).",
    ),
    o(
        gate_option::ALLOW_SELF,
        Ty::Bool,
        false,
        "Let the run's initiator approve (four-eyes is the default).",
    ),
    GateOption {
        name: gate_option::REMIND,
        ty: Ty::Duration,
        required: false,
        takes_after: true,
        after_required: false,
        doc: "Notify who may decide again every this long while the gate is open (`remind: 1d`, or `remind: 1d after 4h` for a first reminder sooner); recorded as `gate_reminded`.",
    },
];

pub const INPUT_OPTIONS: &[GateOption] = &[
    o(
        gate_option::FROM,
        Ty::Approvers,
        true,
        "Who may supply the value.",
    ),
    o(
        gate_option::PROMPT,
        Ty::String,
        false,
        "What the person is asked.",
    ),
    o(
        gate_option::CONTEXT,
        Ty::Any,
        false,
        "Data shown with the request.",
    ),
    o(
        gate_option::TIMEOUT,
        Ty::Duration,
        false,
        "How long to wait before the input times out.",
    ),
    GateOption {
        name: gate_option::ESCALATE,
        ty: Ty::Approvers,
        required: false,
        takes_after: true,
        after_required: true,
        doc: "Who else may answer once the wait passes a duration: `role(\"ops\") after 24h`.",
    },
    GateOption {
        name: gate_option::REMIND,
        ty: Ty::Duration,
        required: false,
        takes_after: true,
        after_required: false,
        doc: "Notify who may answer again every this long while the gate is open (`remind: 1d`, or `remind: 1d after 4h` for a first reminder sooner); recorded as `gate_reminded`.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_ids_are_unique_and_round_trip() {
        for b in Builtin::ALL {
            assert_eq!(Builtin::from_id(b.id()), Some(*b));
            assert_eq!(Builtin::from_name(b.name()), Some(*b));
        }
        let mut ids: Vec<u16> = Builtin::ALL.iter().map(|b| b.id()).collect();
        ids.dedup();
        assert_eq!(ids.len(), Builtin::ALL.len());
    }

    #[test]
    fn the_escalation_delay_is_the_after_field_of_escalate() {
        assert_eq!(
            gate_option::after_field(gate_option::ESCALATE),
            gate_option::ESCALATE_AFTER
        );
        let takes_after: Vec<&str> = APPROVAL_OPTIONS
            .iter()
            .chain(INPUT_OPTIONS)
            .filter(|o| o.takes_after)
            .map(|o| o.name)
            .collect();
        assert_eq!(
            takes_after,
            [
                gate_option::ESCALATE,
                gate_option::REMIND,
                gate_option::ESCALATE,
                gate_option::REMIND
            ]
        );
    }

    #[test]
    fn every_builtin_is_listed() {
        // `RunId` is the highest id; a new builtin must be added to ALL as well.
        assert_eq!(Builtin::ALL.len(), Builtin::RunId.id() as usize);
    }
}
