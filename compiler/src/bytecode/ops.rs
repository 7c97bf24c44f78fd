//! The instruction set: a stack machine with numbered local slots.
//!
//! **Persisted and append-only.** Programs are stored in `.flowb` artifacts and runs resume on
//! the exact bytecode they started with, for weeks. An instruction's number is its position
//! in this enum (that is how the encoding numbers variants), so: never reorder, remove or
//! change an instruction — add new ones at the end. `encoding::tests` pins the numbers.
//!
//! Operands that name constants, types, tools, gates or events are indices into the tables
//! of [`super::Module`]. Jump targets are instruction indices within the same workflow.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Push constant `n`.
    Const(u32),
    /// Drop the top value.
    Pop,
    /// Push a copy of the top value.
    Dup,
    LoadLocal(u16),
    StoreLocal(u16),

    /// Pop `n` values (first pushed first) into a list.
    MakeList(u32),
    /// Pop one value per field of field list `n` (in order) into a record.
    MakeRecord(u32),
    /// Pop one value per field of variant `variant` of enum type `ty`.
    MakeVariant {
        ty: u32,
        variant: u32,
    },
    /// Pop a record; push its field named by string constant `n`.
    GetField(u32),
    /// Like `GetField`, but `none` stays `none` (`?.`).
    GetFieldOptional(u32),
    /// Pop index, then list or map; push the item (`none` for a missing map key; an index out
    /// of range is a runtime error).
    Index,
    /// Pop a value; push whether it is variant `variant` (of any enum; the checker ensured
    /// the type).
    IsVariant(u32),
    /// Pop a variant value; push its field number `n`.
    VariantField(u32),
    /// Pop a value; push whether it is `none`.
    IsNone,

    Not,
    Neg,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    /// Pop a value; push its text form (for interpolation).
    ToText,
    /// Pop `n` strings; push their concatenation.
    Concat(u32),

    Jump(u32),
    /// Pop a Bool; jump when it is false.
    JumpIfFalse(u32),
    /// Pop a Bool; jump when it is true.
    JumpIfTrue(u32),
    /// Jump when the top value is not `none` (leaving it); otherwise pop it.
    JumpIfNotNone(u32),

    /// Pop `args` arguments; call builtin `id` (a `flow_stdlib::Builtin` id). Durable when the
    /// builtin's effect is durable (`now()`).
    CallBuiltin {
        id: u16,
        args: u8,
    },
    /// Durable point. Pop the tool's arguments; call tool `tool`; push its result.
    CallTool {
        tool: u32,
    },
    /// Durable point. Pop the arguments; run workflow `workflow` as a child run; push its result.
    CallWorkflow {
        workflow: u32,
    },
    /// Durable point. Pop the options record; wait for a decision at gate `gate`; push it.
    AwaitApproval {
        gate: u32,
    },
    /// Durable point. Pop the options record; wait for input request `request`; push the value.
    AwaitInput {
        request: u32,
    },
    /// Durable point. Pop a Duration; wait that long (a durable timer).
    Sleep,
    /// Durable point. Pop the fields record; append audit event `event`.
    Audit {
        event: u32,
    },

    /// Pop a message; raise a `Failed` error.
    Fail,
    /// Pop an `Error` record; raise it again (after a handler decided not to handle it).
    Raise,
    /// Errors raised until the matching `PopHandler` jump to `catch` with the error record
    /// pushed — if their kind is in kind list `kinds` (`u32::MAX`: any kind).
    PushHandler {
        catch: u32,
        kinds: u32,
    },
    PopHandler,
    /// Pop a Duration: steps started before the matching `ExitTimeout` must finish within it.
    EnterTimeout,
    ExitTimeout,
    /// Pop the result; end the run.
    Return,
    /// Pop a value, then a record; push the record with field `n` (a string constant) set
    /// to the value. `x.a.b = v` sets the fields from the inside out.
    SetField(u32),
    /// Pop a Duration; push it scaled by a factor between 0.5 and 1 that depends only on
    /// the run's step count and this instruction's position — random-looking, yet the same
    /// when the run is replayed (retry backoff).
    Jitter,
    /// Pop a value; push it conformed to type `n`: the text that the type declares `Secret` turned into
    /// secrets (`let s: Secret = "…"`, text passed where a `Secret` is expected), and the
    /// optional fields its records leave out set to `none`.
    Conform(u32),
    /// Durable point. Pop the arguments of workflow `workflow` (the one running): end this run
    /// and start a new run of it with them and a fresh history (`continue as`). Format 3.
    ContinueAs {
        workflow: u32,
    },
    /// Durable point. Wait for the next signal `signal` (an index into the module's signals)
    /// the run received, in the order received; push its value. Format 5.
    AwaitSignal {
        signal: u32,
    },
    /// Durable point. Pop the deadlines (`Time`) of select `n`'s `after` arms (in arm
    /// order); wait for the first of its arms to happen — the oldest queued signal among its
    /// signal arms, else the earliest deadline once it passed — push that arm's value (the
    /// signal's, or `none`) and jump to the arm's code. Format 5.
    Select(u32),
    /// Durable point. Pop what parallel `n` takes ([`super::module::ParallelInfo::arity`]):
    /// for a `parallel for`, the items (a `List`) and the most branches in flight (`Int`, 0
    /// for no limit), then the values the branches capture; for a record of branches, the
    /// captured values alone. Run the branches, each as a child run of one of the
    /// parallel's branch workflows, and push their results: a `List` in the items' order, or
    /// a record with a field per branch (with `collect`, each a `{value, error}` record).
    /// Format 6.
    Parallel(u32),
    /// Durable point. Pop the run's undo stack (a `List` of `{workflow, args}` records, the
    /// latest last, each workflow one of the module's undo workflows); run each, the latest
    /// first, as a child run, one after the other; push the `List` of the names of those
    /// that ran. Format 6.
    Compensate,
    /// Not durable. Pop the arguments of function `function` (an index into the module's
    /// functions); run it to completion and push its result. A function's code has no
    /// durable point, so the call happens between two durable points of the run and is
    /// never part of a checkpoint. Format 7.
    CallFunction {
        function: u32,
    },
}

impl Op {
    /// Whether executing this instruction is a durable point (it is recorded in the history
    /// and the VM state is checkpointed around it).
    pub fn is_durable(self) -> bool {
        match self {
            Op::CallTool { .. }
            | Op::CallWorkflow { .. }
            | Op::AwaitApproval { .. }
            | Op::AwaitInput { .. }
            | Op::Sleep
            | Op::Audit { .. }
            | Op::ContinueAs { .. }
            | Op::AwaitSignal { .. }
            | Op::Select(_)
            | Op::Parallel(_)
            | Op::Compensate => true,
            Op::CallBuiltin { id, .. } => flow_stdlib::Builtin::from_id(id)
                .is_some_and(|b| b.effect() == flow_stdlib::Effect::Durable),
            _ => false,
        }
    }

    /// The jump target, for instructions that have one.
    pub fn target(self) -> Option<u32> {
        match self {
            Op::Jump(t)
            | Op::JumpIfFalse(t)
            | Op::JumpIfTrue(t)
            | Op::JumpIfNotNone(t)
            | Op::PushHandler { catch: t, .. } => Some(t),
            _ => None,
        }
    }
}
