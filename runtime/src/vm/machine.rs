//! The interpreter: runs a workflow's bytecode until it completes, fails, or reaches a
//! durable point. At a durable point it stops *without changing its state* and describes
//! the effect it needs ([`Request`]); the engine performs the effect, records it, and calls
//! [`Machine::complete`] (or [`Machine::fail_step`]). Replaying from a checkpoint taken at a
//! durable point therefore asks for exactly the same effect again — with the same step
//! number, hence the same idempotency key.
//!
//! Pure code between durable points is deterministic: the only clock it sees is the time of
//! the last durable point ([`Machine::clock`]), restored from the checkpoint.

use super::builtins;
use super::value::Value;
use flow_compiler::bytecode::{Constant, DebugLoc, Module, Op, TypeDesc, TypeRef};
use flow_stdlib::Builtin;
use serde::{Deserialize, Serialize};

/// An error handler installed by `PushHandler`.
#[derive(Clone, Debug, PartialEq)]
pub struct Handler {
    pub catch: u32,
    pub kinds: u32,
    pub stack_depth: u32,
    pub timeouts: u32,
}

/// One thread of execution. A run has one today; parallel branches will add more without
/// changing this shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Fiber {
    pub pc: u32,
    pub stack: Vec<Value>,
    pub locals: Vec<Value>,
    pub handlers: Vec<Handler>,
    /// Absolute deadlines (ms) of the enclosing `timeout` blocks, innermost last.
    pub deadlines: Vec<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub workflow: u32,
    pub fiber: Fiber,
    /// Durable steps taken so far: the next step's number.
    pub steps: u64,
    /// The time of the last durable point, in ms since the epoch.
    pub clock: i64,
    /// The error last raised and where it was first raised: raised again unchanged (by
    /// `fail e`, or after a workflow's undo blocks ran), a failure still points at the line
    /// that raised it. Kept in memory only (a checkpoint does not hold it: after a crash the
    /// failure points at where it was raised again).
    pub raised: Option<(Value, (u32, u32, u32))>,
}

/// The effect a durable instruction needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Tool {
        tool: u32,
        args: Vec<Value>,
    },
    Workflow {
        workflow: u32,
        args: Vec<Value>,
    },
    /// `continue as`: end this run, start a new one of `workflow` with `args`.
    ContinueAs {
        workflow: u32,
        args: Vec<Value>,
    },
    Approval {
        gate: u32,
        options: Value,
    },
    Input {
        request: u32,
        options: Value,
    },
    Sleep {
        duration_ms: i64,
    },
    Audit {
        event: u32,
        fields: Value,
    },
    Now,
    /// `run_id()`: answered with the run's id, without recording anything (it is the same on
    /// every resume).
    RunId,
    /// `await signal`: the next signal of this name (an index into the module's signals).
    Signal {
        signal: u32,
    },
    /// `select`: the first of its arms to happen (an index into the module's selects), with
    /// the deadlines of its `after` arms (milliseconds since the epoch), in arm order, and
    /// the values its wait arms' branches take (each arm's in turn).
    Select {
        select: u32,
        deadlines: Vec<i64>,
        captures: Vec<Value>,
    },
    /// `parallel`: run its branches (an index into the module's parallels) with the values
    /// the instruction takes (the items and the limit of a `parallel for`, then the
    /// captured values).
    Parallel {
        parallel: u32,
        args: Vec<Value>,
    },
    /// `compensate`: run the undo blocks on the stack (a `List` of `{workflow, args}`).
    Compensate {
        stack: Value,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Stopped at a durable instruction; the state is unchanged.
    Durable {
        request: Request,
        /// The innermost enclosing `timeout` deadline, if any.
        deadline: Option<i64>,
    },
    Completed(Value),
    Failed(RuntimeError),
}

/// A failure that ends the run: an error no handler caught, or broken bytecode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuntimeError {
    pub kind: String,
    pub message: String,
    pub location: Option<(u32, u32, u32)>,
    /// The `Error` record that ended the run (a named error's with its fields), as JSON:
    /// a parent that waited on the run raises it unchanged.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

impl RuntimeError {
    pub fn at(&self, module: &Module) -> String {
        match self.location {
            Some((file, line, column)) => format!(
                "{}:{line}:{column}",
                module
                    .files
                    .get(file as usize)
                    .map(String::as_str)
                    .unwrap_or("?")
            ),
            None => "?".to_string(),
        }
    }
}

/// Why executing an instruction did not simply continue.
enum Trap {
    /// A catchable error: an `Error` record (`kind`, `message`, `step`).
    Raise(Value),
    /// Broken bytecode or a broken invariant: the run fails, no handler runs.
    Fatal(String),
}

/// An `Error` record. Whether it is retryable follows from its kind: failures of the
/// outside world (`ToolError`, `InvalidOutput`, `Timeout`) may pass; `fail`, a person's
/// time-out and internal errors will not. A tool binding may say otherwise (a 4xx).
pub fn error_value(kind: &str, message: impl Into<String>, step: &str) -> Value {
    let retryable = matches!(kind, "ToolError" | "InvalidOutput" | "Timeout");
    tool_error_value(kind, message, step, "", 1, retryable)
}

pub fn tool_error_value(
    kind: &str,
    message: impl Into<String>,
    step: &str,
    tool: &str,
    attempt: i64,
    retryable: bool,
) -> Value {
    Value::record([
        ("kind", Value::Str(kind.to_string())),
        ("message", Value::Str(message.into())),
        ("step", Value::Str(step.to_string())),
        ("tool", Value::Str(tool.to_string())),
        ("attempt", Value::Int(attempt)),
        ("retryable", Value::Bool(retryable)),
    ])
}

/// The most instructions a query may run (a loop in a query must not hang a server).
pub const QUERY_STEPS: usize = 1_000_000;

/// The most instructions one call of a function (`fn`) from a workflow's code may run,
/// with the calls it makes: a function has no durable point, so an endless loop in one
/// would otherwise never give the run back. Reaching it raises a `Failed` error at the call
/// (the same on every replay: the count depends only on the code and its arguments).
pub const FUNCTION_STEPS: u64 = 10_000_000;

/// How deep calls of functions may nest (recursion included); a call deeper than this
/// raises a `Failed` error naming the function, which the run may `catch`.
pub const FUNCTION_DEPTH: usize = 1_000;

/// A factor in [0.5, 1] from the run's position: the same on every replay.
fn jitter_factor(steps: u64, workflow: u32, pc: u32) -> f64 {
    let mut x = steps
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(u64::from(workflow) << 32 | u64::from(pc))
        | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    0.5 + 0.5 * ((x >> 11) as f64 / (1u64 << 53) as f64)
}

fn raise(message: impl Into<String>) -> Trap {
    Trap::Raise(error_value("Failed", message, ""))
}

impl Machine {
    /// A machine at the start of `workflow`, with its parameters in the first locals.
    pub fn start(module: &Module, workflow: u32, args: Vec<Value>, clock: i64) -> Option<Machine> {
        let code = module.workflows.get(workflow as usize)?;
        let mut locals = args;
        locals.resize(code.locals.max(locals.len() as u32) as usize, Value::None);
        Some(Machine {
            workflow,
            fiber: Fiber {
                pc: 0,
                stack: Vec::new(),
                locals,
                handlers: Vec::new(),
                deadlines: Vec::new(),
            },
            steps: 0,
            clock,
            raised: None,
        })
    }

    /// The next instruction: the workflow's index and the instruction's (at a durable point,
    /// the instruction the machine stopped at).
    pub fn position(&self) -> (u32, u32) {
        (self.workflow, self.fiber.pc)
    }

    /// Where the next instruction came from.
    pub fn location(&self, module: &Module) -> Option<DebugLoc> {
        module
            .workflows
            .get(self.workflow as usize)?
            .debug
            .get(self.fiber.pc as usize)
            .copied()
    }

    /// Runs until the workflow completes, fails, or reaches a durable instruction.
    pub fn run(&mut self, module: &Module) -> Outcome {
        loop {
            let Some(op) = self.current_op(module) else {
                return self.fatal(module, "the program counter left the workflow's code");
            };
            if op.is_durable() {
                return match self.request(module, op) {
                    Ok(request) => Outcome::Durable {
                        request,
                        deadline: self.fiber.deadlines.iter().copied().min(),
                    },
                    Err(why) => self.fatal(module, &why),
                };
            }
            match self.execute(module, op) {
                Ok(Some(result)) => return Outcome::Completed(result),
                Ok(None) => {}
                Err(Trap::Raise(error)) => {
                    if let Some(failed) = self.handle(module, error) {
                        return failed;
                    }
                }
                Err(Trap::Fatal(why)) => return self.fatal(module, &why),
            }
        }
    }

    fn current_op(&self, module: &Module) -> Option<Op> {
        module
            .workflows
            .get(self.workflow as usize)?
            .code
            .get(self.fiber.pc as usize)
            .copied()
    }

    fn fatal(&self, module: &Module, why: &str) -> Outcome {
        Outcome::Failed(RuntimeError {
            kind: "Internal".to_string(),
            message: format!("corrupt bytecode or runtime bug: {why}"),
            location: self.location(module).map(|l| (l.file, l.line, l.column)),
            error: None,
        })
    }

    /// How many values a durable instruction takes from the stack.
    fn arity(module: &Module, op: Op) -> Result<usize, String> {
        Ok(match op {
            Op::CallTool { tool } => module
                .tools
                .get(tool as usize)
                .ok_or("unknown tool")?
                .params
                .len(),
            Op::CallWorkflow { workflow } | Op::ContinueAs { workflow } => module
                .workflows
                .get(workflow as usize)
                .ok_or("unknown workflow")?
                .params
                .len(),
            Op::AwaitApproval { .. } | Op::AwaitInput { .. } | Op::Sleep | Op::Audit { .. } => 1,
            Op::AwaitSignal { .. } => 0,
            Op::Select(n) => module
                .selects
                .get(n as usize)
                .and_then(|s| s.arity(module))
                .ok_or("unknown select")?,
            Op::Parallel(n) => module
                .parallels
                .get(n as usize)
                .ok_or("unknown parallel")?
                .arity(),
            Op::Compensate => 1,
            Op::CallBuiltin { args, .. } => args as usize,
            _ => return Err(format!("{op:?} is not durable")),
        })
    }

    fn peek_args(&self, count: usize) -> Result<Vec<Value>, String> {
        let stack = &self.fiber.stack;
        if stack.len() < count {
            return Err("stack underflow".to_string());
        }
        Ok(stack[stack.len() - count..].to_vec())
    }

    fn request(&self, module: &Module, op: Op) -> Result<Request, String> {
        let mut args = self.peek_args(Self::arity(module, op)?)?;
        let mut one = || args.pop().ok_or_else(|| "stack underflow".to_string());
        Ok(match op {
            Op::CallTool { tool } => Request::Tool { tool, args },
            Op::CallWorkflow { workflow } => Request::Workflow { workflow, args },
            Op::ContinueAs { workflow } => Request::ContinueAs { workflow, args },
            Op::AwaitApproval { gate } => Request::Approval {
                gate,
                options: one()?,
            },
            Op::AwaitInput { request } => Request::Input {
                request,
                options: one()?,
            },
            Op::Sleep => match one()? {
                Value::Duration(ms) => Request::Sleep { duration_ms: ms },
                other => return Err(format!("sleep got {}", other.type_name())),
            },
            Op::Audit { event } => Request::Audit {
                event,
                fields: one()?,
            },
            Op::AwaitSignal { signal } => Request::Signal { signal },
            Op::Select(select) => {
                let afters = module
                    .selects
                    .get(select as usize)
                    .ok_or("unknown select")?
                    .afters();
                let captures = args.split_off(afters.min(args.len()));
                Request::Select {
                    select,
                    deadlines: args
                        .iter()
                        .map(|d| match d {
                            Value::Time(ms) => Ok(*ms),
                            other => {
                                Err(format!("select got {} for an `after`", other.type_name()))
                            }
                        })
                        .collect::<Result<_, _>>()?,
                    captures,
                }
            }
            Op::Parallel(parallel) => Request::Parallel { parallel, args },
            Op::Compensate => Request::Compensate { stack: one()? },
            Op::CallBuiltin { id, .. } if Builtin::from_id(id) == Some(Builtin::Now) => {
                Request::Now
            }
            Op::CallBuiltin { id, .. } if Builtin::from_id(id) == Some(Builtin::RunId) => {
                Request::RunId
            }
            other => return Err(format!("{other:?} is not durable")),
        })
    }

    /// Finishes the durable instruction the machine stopped at, with its result, at `now`.
    pub fn complete(&mut self, module: &Module, result: Value, now: i64) -> Result<(), String> {
        let op = self.current_op(module).ok_or("no current instruction")?;
        let count = Self::arity(module, op)?;
        let keep = self
            .fiber
            .stack
            .len()
            .checked_sub(count)
            .ok_or("stack underflow")?;
        self.fiber.stack.truncate(keep);
        if !matches!(op, Op::Sleep | Op::Audit { .. }) {
            self.fiber.stack.push(result);
        }
        self.fiber.pc += 1;
        self.steps += 1;
        self.clock = now;
        Ok(())
    }

    /// Evaluates a query's `code` on a copy of this state (its locals), changing nothing:
    /// the value it returns, or why it could not (an error it raised, or more than
    /// [`QUERY_STEPS`] instructions).
    pub fn evaluate(&self, module: &Module, code: &[Op]) -> Result<Value, String> {
        let mut scratch = self.clone();
        scratch.fiber.pc = 0;
        scratch.fiber.stack.clear();
        scratch.fiber.handlers.clear();
        // The query's own instructions and those of the functions it calls share the budget.
        let mut budget = QUERY_STEPS as u64;
        while budget > 0 {
            budget -= 1;
            let Some(op) = code.get(scratch.fiber.pc as usize).copied() else {
                return Err("the query's code ended without a value".into());
            };
            if op.is_durable() {
                return Err(format!("the query reached a durable instruction ({op:?})"));
            }
            match scratch.step(module, op, &mut budget) {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                Err(Trap::Raise(error)) => {
                    if let Some(Outcome::Failed(failed)) = scratch.handle(module, error) {
                        return Err(failed.message);
                    }
                }
                Err(Trap::Fatal(why)) => return Err(why),
            }
        }
        Err(format!(
            "the query ran more than {QUERY_STEPS} instructions"
        ))
    }

    /// Finishes a `select` with its arm `arm`: its durations popped, `result` pushed, and
    /// the machine at the arm's code.
    pub fn complete_arm(
        &mut self,
        module: &Module,
        arm: usize,
        result: Value,
        now: i64,
    ) -> Result<(), String> {
        let Some(Op::Select(n)) = self.current_op(module) else {
            return Err("not at a `select`".to_string());
        };
        let target = module
            .selects
            .get(n as usize)
            .and_then(|s| s.arms.get(arm))
            .map(|a| a.target)
            .ok_or("no such arm of the `select`")?;
        self.complete(module, result, now)?;
        self.fiber.pc = target;
        Ok(())
    }

    /// Finishes the durable instruction by raising `error` (an `Error` record) at it.
    /// Returns the failure when no handler catches it.
    pub fn fail_step(&mut self, module: &Module, error: Value, now: i64) -> Option<Outcome> {
        let op = self.current_op(module)?;
        let count = Self::arity(module, op).ok()?;
        let keep = self.fiber.stack.len().saturating_sub(count);
        self.fiber.stack.truncate(keep);
        self.steps += 1;
        self.clock = now;
        self.handle(module, error)
    }

    /// Unwinds to the innermost handler for the error's kind; `Some(failure)` if none.
    fn handle(&mut self, module: &Module, error: Value) -> Option<Outcome> {
        let kind = match error.field("kind") {
            Some(Value::Str(kind)) => kind.clone(),
            _ => "Failed".to_string(),
        };
        let here = self.location(module).map(|l| (l.file, l.line, l.column));
        let first = match &self.raised {
            Some((raised, at)) if *raised == error => Some(*at),
            _ => here,
        };
        if let Some(at) = first {
            self.raised = Some((error.clone(), at));
        }
        let Err(error) = self.catch(module, &kind, error) else {
            return None;
        };
        let message = match error.field("message") {
            Some(Value::Str(m)) => m.clone(),
            _ => "failed".to_string(),
        };
        Some(Outcome::Failed(RuntimeError {
            kind,
            message,
            location: first,
            error: Some(error.to_json()),
        }))
    }

    /// Unwinds the current fiber to its innermost handler for `kind`, which then runs with
    /// the error pushed; the error back when no handler of the fiber takes it.
    fn catch(&mut self, module: &Module, kind: &str, error: Value) -> Result<(), Value> {
        while let Some(handler) = self.fiber.handlers.pop() {
            let matches = handler.kinds == u32::MAX
                || module
                    .kind_lists
                    .get(handler.kinds as usize)
                    .is_some_and(|kinds| kinds.iter().any(|k| k == kind));
            if matches {
                self.fiber.stack.truncate(handler.stack_depth as usize);
                self.fiber.deadlines.truncate(handler.timeouts as usize);
                self.fiber.stack.push(error);
                self.fiber.pc = handler.catch;
                return Ok(());
            }
        }
        Err(error)
    }

    /// Runs function `function` to completion on the arguments at the top of the stack
    /// (popped), in frames of its own, and gives its result. Its code has no durable point
    /// (the verifier proved it), so nothing of this is ever in a checkpoint. An error the
    /// function does not catch unwinds its frames and comes out as the call's, pointing at
    /// the line in the function that raised it. Each instruction takes one from `budget`.
    fn call_function(
        &mut self,
        module: &Module,
        function: u32,
        budget: &mut u64,
    ) -> Result<Value, Trap> {
        let frame = |module: &Module, function: u32, args: Vec<Value>| {
            let code = module
                .functions
                .get(function as usize)
                .ok_or_else(|| Trap::Fatal(format!("no function {function}")))?;
            let mut locals = args;
            locals.resize(code.locals.max(locals.len() as u32) as usize, Value::None);
            Ok::<_, Trap>(Fiber {
                pc: 0,
                stack: Vec::new(),
                locals,
                handlers: Vec::new(),
                deadlines: Vec::new(),
            })
        };
        let name = |function: u32| {
            module
                .functions
                .get(function as usize)
                .map_or("?", |f| f.name.as_str())
        };
        let arity = module
            .functions
            .get(function as usize)
            .ok_or_else(|| Trap::Fatal(format!("no function {function}")))?
            .params
            .len();
        let allowed = *budget;
        let args = self.pop_n(arity)?;
        let first = frame(module, function, args)?;
        let outer = std::mem::replace(&mut self.fiber, first);
        // The callers' frames, innermost last; `current` is the running function.
        let mut callers: Vec<(u32, Fiber)> = Vec::new();
        let mut current = function;
        let result = loop {
            let Some(code) = module.functions.get(current as usize) else {
                break Err(Trap::Fatal(format!("no function {current}")));
            };
            let Some(op) = code.code.get(self.fiber.pc as usize).copied() else {
                break Err(Trap::Fatal(format!(
                    "the program counter left the code of function `{}`",
                    code.name
                )));
            };
            let outcome = if *budget == 0 {
                Err(raise(format!(
                    "function `{}` ran more than {} instructions without returning (an endless loop?)",
                    name(function),
                    allowed
                )))
            } else {
                *budget -= 1;
                match op {
                    Op::CallFunction { function: callee } => {
                        if callers.len() + 1 >= FUNCTION_DEPTH {
                            Err(raise(format!(
                                "function `{}` was called more than {FUNCTION_DEPTH} calls deep (an endless recursion?)",
                                name(callee)
                            )))
                        } else {
                            let arity = module
                                .functions
                                .get(callee as usize)
                                .map_or(0, |f| f.params.len());
                            match self
                                .pop_n(arity)
                                .and_then(|args| frame(module, callee, args))
                            {
                                Ok(fiber) => {
                                    let caller = std::mem::replace(&mut self.fiber, fiber);
                                    callers.push((current, caller));
                                    current = callee;
                                    continue;
                                }
                                Err(trap) => Err(trap),
                            }
                        }
                    }
                    op if op.is_durable() => Err(Trap::Fatal(format!(
                        "{op:?} in the code of function `{}`",
                        code.name
                    ))),
                    op => self.step(module, op, budget),
                }
            };
            match outcome {
                Ok(None) => {}
                Ok(Some(value)) => match callers.pop() {
                    None => break Ok(value),
                    Some((caller, fiber)) => {
                        self.fiber = fiber;
                        current = caller;
                        self.fiber.stack.push(value);
                        self.fiber.pc += 1;
                    }
                },
                Err(Trap::Raise(error)) => {
                    // Where it was raised, unless it was raised before (`fail e` again).
                    let here = code
                        .debug
                        .get(self.fiber.pc as usize)
                        .map(|l| (l.file, l.line, l.column));
                    if let Some(at) = here
                        && !matches!(&self.raised, Some((raised, _)) if *raised == error)
                    {
                        self.raised = Some((error.clone(), at));
                    }
                    let kind = match error.field("kind") {
                        Some(Value::Str(kind)) => kind.clone(),
                        _ => "Failed".to_string(),
                    };
                    let mut error = error;
                    let caught = loop {
                        match self.catch(module, &kind, error) {
                            Ok(()) => break None,
                            Err(uncaught) => match callers.pop() {
                                Some((caller, fiber)) => {
                                    self.fiber = fiber;
                                    current = caller;
                                    error = uncaught;
                                }
                                None => break Some(uncaught),
                            },
                        }
                    };
                    if let Some(error) = caught {
                        break Err(Trap::Raise(error));
                    }
                }
                Err(Trap::Fatal(why)) => {
                    break Err(Trap::Fatal(format!("in function `{}`: {why}", code.name)));
                }
            }
        };
        self.fiber = outer;
        result
    }

    fn pop(&mut self) -> Result<Value, Trap> {
        self.fiber
            .stack
            .pop()
            .ok_or_else(|| Trap::Fatal("stack underflow".to_string()))
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>, Trap> {
        let len = self.fiber.stack.len();
        if len < n {
            return Err(Trap::Fatal("stack underflow".to_string()));
        }
        Ok(self.fiber.stack.split_off(len - n))
    }

    fn pop_bool(&mut self) -> Result<bool, Trap> {
        match self.pop()? {
            Value::Bool(b) => Ok(b),
            other => Err(Trap::Fatal(format!(
                "expected Bool, found {}",
                other.type_name()
            ))),
        }
    }

    fn string_constant(module: &Module, index: u32) -> Result<&str, Trap> {
        module
            .string(index)
            .ok_or_else(|| Trap::Fatal(format!("constant {index} is not a string")))
    }

    fn slot(&mut self, slot: u16) -> Result<&mut Value, Trap> {
        self.fiber
            .locals
            .get_mut(slot as usize)
            .ok_or_else(|| Trap::Fatal(format!("no local slot {slot}")))
    }

    /// Executes one pure instruction. `Ok(Some(v))` when the workflow returned `v`. A call
    /// of a function runs it to completion, within [`FUNCTION_STEPS`] instructions.
    fn execute(&mut self, module: &Module, op: Op) -> Result<Option<Value>, Trap> {
        let mut budget = FUNCTION_STEPS;
        self.step(module, op, &mut budget)
    }

    /// [`Machine::execute`], the functions it calls taking their instructions from `budget`.
    fn step(&mut self, module: &Module, op: Op, budget: &mut u64) -> Result<Option<Value>, Trap> {
        let mut next = self.fiber.pc + 1;
        match op {
            Op::Const(index) => {
                let value = match module.constants.get(index as usize) {
                    Some(Constant::None) => Value::None,
                    Some(Constant::Bool(b)) => Value::Bool(*b),
                    Some(Constant::Int(i)) => Value::Int(*i),
                    Some(Constant::Float(f)) => Value::Float(*f),
                    Some(Constant::Str(s)) => Value::Str(s.clone()),
                    Some(Constant::Duration(ms)) => Value::Duration(*ms),
                    Some(Constant::Time(ms)) => Value::Time(*ms),
                    None => return Err(Trap::Fatal(format!("no constant {index}"))),
                };
                self.fiber.stack.push(value);
            }
            Op::Pop => {
                self.pop()?;
            }
            Op::Dup => {
                let top = self.pop()?;
                self.fiber.stack.push(top.clone());
                self.fiber.stack.push(top);
            }
            Op::LoadLocal(slot) => {
                let value = self.slot(slot)?.clone();
                self.fiber.stack.push(value);
            }
            Op::StoreLocal(slot) => {
                let value = self.pop()?;
                *self.slot(slot)? = value;
            }
            Op::MakeList(n) => {
                let items = self.pop_n(n as usize)?;
                self.fiber.stack.push(Value::List(items));
            }
            Op::MakeRecord(list) => {
                let names = module
                    .field_lists
                    .get(list as usize)
                    .ok_or_else(|| Trap::Fatal(format!("no field list {list}")))?;
                let values = self.pop_n(names.len())?;
                let mut fields = std::collections::BTreeMap::new();
                for (name, value) in names.iter().zip(values) {
                    fields.insert(Self::string_constant(module, *name)?.to_string(), value);
                }
                self.fiber.stack.push(Value::Record(fields));
            }
            Op::MakeVariant { ty, variant } => {
                let Some(TypeDesc::Enum { variants, .. }) = module.type_desc(TypeRef(ty)) else {
                    return Err(Trap::Fatal(format!("type {ty} is not an enum")));
                };
                let (name, field_types) = variants
                    .get(variant as usize)
                    .ok_or_else(|| Trap::Fatal(format!("no variant {variant}")))?;
                let values = self.pop_n(field_types.len())?;
                let fields = field_types
                    .iter()
                    .map(|(n, _)| n.clone())
                    .zip(values)
                    .collect();
                self.fiber.stack.push(Value::Variant {
                    name: name.clone(),
                    fields,
                });
            }
            Op::GetField(name) | Op::GetFieldOptional(name) => {
                let field = Self::string_constant(module, name)?;
                let value = match self.pop()? {
                    Value::Record(mut fields) => fields.remove(field).unwrap_or(Value::None),
                    Value::None if matches!(op, Op::GetFieldOptional(_)) => Value::None,
                    Value::None => return Err(raise(format!("cannot read `.{field}` of none"))),
                    other => {
                        return Err(raise(format!(
                            "cannot read `.{field}` of {}",
                            other.type_name()
                        )));
                    }
                };
                self.fiber.stack.push(value);
            }
            Op::SetField(name) => {
                let field = Self::string_constant(module, name)?.to_string();
                let value = self.pop()?;
                match self.pop()? {
                    Value::Record(mut fields) => {
                        fields.insert(field, value);
                        self.fiber.stack.push(Value::Record(fields));
                    }
                    other => {
                        return Err(raise(format!(
                            "cannot set `.{field}` of {}",
                            other.type_name()
                        )));
                    }
                }
            }
            Op::Conform(ty) => {
                let value = self.pop()?;
                match crate::vm::value::conform(module, TypeRef(ty), value) {
                    Ok(value) => self.fiber.stack.push(value),
                    // A value put into a refined type that breaks its rule.
                    Err(mismatch) => {
                        let at = match mismatch.path.as_str() {
                            "$" => String::new(),
                            path => format!(" at `{path}`"),
                        };
                        return Err(raise(format!(
                            "the value{at} does not fit its type: expected {}, found {}",
                            mismatch.expected, mismatch.found
                        )));
                    }
                }
            }
            Op::Jitter => match self.pop()? {
                Value::Duration(ms) => {
                    let factor = jitter_factor(self.steps, self.workflow, self.fiber.pc);
                    self.fiber
                        .stack
                        .push(Value::Duration((ms as f64 * factor) as i64));
                }
                other => {
                    return Err(Trap::Fatal(format!("jitter of {}", other.type_name())));
                }
            },
            Op::Index => {
                let index = self.pop()?;
                let base = self.pop()?;
                let value = match (base, index) {
                    (Value::List(items), Value::Int(i)) => {
                        let len = items.len();
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| items.into_iter().nth(i))
                            .ok_or_else(|| {
                                raise(format!(
                                    "index {i} is out of range for a list of {len} item(s)"
                                ))
                            })?
                    }
                    (Value::Record(mut fields), Value::Str(key)) => {
                        fields.remove(&key).unwrap_or(Value::None)
                    }
                    (base, index) => {
                        return Err(raise(format!(
                            "cannot index {} with {}",
                            base.type_name(),
                            index.type_name()
                        )));
                    }
                };
                self.fiber.stack.push(value);
            }
            Op::IsVariant(name) => {
                let wanted = Self::string_constant(module, name)?;
                let is = matches!(self.pop()?, Value::Variant { name, .. } if name == wanted);
                self.fiber.stack.push(Value::Bool(is));
            }
            Op::VariantField(index) => match self.pop()? {
                Value::Variant { fields, .. } => {
                    let value = fields
                        .into_iter()
                        .nth(index as usize)
                        .map(|(_, v)| v)
                        .ok_or_else(|| Trap::Fatal(format!("no variant field {index}")))?;
                    self.fiber.stack.push(value);
                }
                other => {
                    return Err(Trap::Fatal(format!(
                        "variant field of {}",
                        other.type_name()
                    )));
                }
            },
            Op::IsNone => {
                let is = self.pop()? == Value::None;
                self.fiber.stack.push(Value::Bool(is));
            }
            Op::Not => {
                let b = self.pop_bool()?;
                self.fiber.stack.push(Value::Bool(!b));
            }
            Op::Neg => {
                let value = match self.pop()? {
                    Value::Int(i) => {
                        Value::Int(i.checked_neg().ok_or_else(|| raise("integer overflow"))?)
                    }
                    Value::Float(f) => Value::Float(-f),
                    Value::Duration(d) => Value::Duration(-d),
                    other => return Err(raise(format!("cannot negate {}", other.type_name()))),
                };
                self.fiber.stack.push(value);
            }
            Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Rem
            | Op::Eq
            | Op::NotEq
            | Op::Lt
            | Op::LtEq
            | Op::Gt
            | Op::GtEq => {
                let rhs = self.pop()?;
                let lhs = self.pop()?;
                let value = builtins::binary(op, lhs, rhs).map_err(raise)?;
                self.fiber.stack.push(value);
            }
            Op::ToText => {
                let text = self.pop()?.to_text();
                self.fiber.stack.push(Value::Str(text));
            }
            Op::Concat(n) => {
                let parts = self.pop_n(n as usize)?;
                let mut text = String::new();
                for part in parts {
                    match part {
                        Value::Str(s) => text.push_str(&s),
                        other => text.push_str(&other.to_text()),
                    }
                }
                self.fiber.stack.push(Value::Str(text));
            }
            Op::Jump(target) => next = target,
            Op::JumpIfFalse(target) => {
                if !self.pop_bool()? {
                    next = target;
                }
            }
            Op::JumpIfTrue(target) => {
                if self.pop_bool()? {
                    next = target;
                }
            }
            Op::JumpIfNotNone(target) => {
                if self.fiber.stack.last() == Some(&Value::None) {
                    self.pop()?;
                } else {
                    next = target;
                }
            }
            Op::CallBuiltin { id, args } => {
                let builtin = Builtin::from_id(id)
                    .ok_or_else(|| Trap::Fatal(format!("unknown builtin {id}")))?;
                let args = self.pop_n(args as usize)?;
                let value = builtins::call(builtin, args).map_err(raise)?;
                self.fiber.stack.push(value);
            }
            Op::Fail => {
                let message = self.pop()?.to_text();
                return Err(raise(message));
            }
            Op::Raise => {
                let error = self.pop()?;
                return Err(Trap::Raise(error));
            }
            Op::PushHandler { catch, kinds } => {
                self.fiber.handlers.push(Handler {
                    catch,
                    kinds,
                    stack_depth: self.fiber.stack.len() as u32,
                    timeouts: self.fiber.deadlines.len() as u32,
                });
            }
            Op::PopHandler => {
                self.fiber.handlers.pop();
            }
            Op::EnterTimeout => match self.pop()? {
                Value::Duration(ms) => {
                    let deadline = self.clock.saturating_add(ms);
                    self.fiber.deadlines.push(deadline);
                }
                other => {
                    return Err(Trap::Fatal(format!("timeout of {}", other.type_name())));
                }
            },
            Op::ExitTimeout => {
                self.fiber.deadlines.pop();
            }
            Op::Return => return Ok(Some(self.pop()?)),
            Op::CallFunction { function } => {
                let value = self.call_function(module, function, budget)?;
                self.fiber.stack.push(value);
            }
            Op::CallTool { .. }
            | Op::CallWorkflow { .. }
            | Op::ContinueAs { .. }
            | Op::AwaitApproval { .. }
            | Op::AwaitInput { .. }
            | Op::Sleep
            | Op::Audit { .. }
            | Op::AwaitSignal { .. }
            | Op::Select(_)
            | Op::Parallel(_)
            | Op::Compensate => {
                return Err(Trap::Fatal(format!("{op:?} reached the pure interpreter")));
            }
        }
        self.fiber.pc = next;
        Ok(None)
    }
}
