//! The checkpoint format: the machine's state as stored between durable points.
//!
//! A run may sleep for weeks and resume under a newer `flowrt`, so live VM structs are never
//! serialized. Each format version has its own types (`SnapshotV1`, …), converted from and to
//! the live [`Machine`]. The version is stored next to the blob (see
//! [`crate::store::Checkpoint`]); [`decode`] dispatches on it and upgrades old versions.
//! Every version has a committed fixture that must keep decoding (see the tests).
//!
//! The shape already holds several fibers, so parallel branches will not need a new
//! format's basic structure.

use super::machine::{Fiber, Handler, Machine};
use super::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const CURRENT_VERSION: i64 = 1;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct SnapshotV1 {
    workflow: u32,
    steps: u64,
    clock: i64,
    fibers: Vec<FiberV1>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct FiberV1 {
    pc: u32,
    stack: Vec<ValueV1>,
    locals: Vec<ValueV1>,
    handlers: Vec<HandlerV1>,
    deadlines: Vec<i64>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct HandlerV1 {
    catch: u32,
    kinds: u32,
    stack_depth: u32,
    timeouts: u32,
}

/// Variant numbers are persisted: append only.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum ValueV1 {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Duration(i64),
    Time(i64),
    List(Vec<ValueV1>),
    Record(Vec<(String, ValueV1)>),
    Variant(String, Vec<(String, ValueV1)>),
    /// Sealed with the database's secret key (see `crate::secrets`): never in clear on disk.
    Secret(Vec<u8>),
}

impl From<&Value> for ValueV1 {
    fn from(value: &Value) -> ValueV1 {
        match value {
            Value::None => ValueV1::None,
            Value::Bool(b) => ValueV1::Bool(*b),
            Value::Int(i) => ValueV1::Int(*i),
            Value::Float(f) => ValueV1::Float(*f),
            Value::Str(s) => ValueV1::Str(s.clone()),
            Value::Duration(d) => ValueV1::Duration(*d),
            Value::Time(t) => ValueV1::Time(*t),
            Value::List(items) => ValueV1::List(items.iter().map(ValueV1::from).collect()),
            Value::Record(fields) => ValueV1::Record(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), ValueV1::from(v)))
                    .collect(),
            ),
            Value::Variant { name, fields } => ValueV1::Variant(
                name.clone(),
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), ValueV1::from(v)))
                    .collect(),
            ),
            Value::Secret(clear) => ValueV1::Secret(crate::secrets::current().seal(clear)),
        }
    }
}

/// A value as it was checkpointed. A secret that the current key cannot open fails the
/// restore: a worker given the wrong `FLOW_SECRET_KEY` must not go on with wrong values.
fn restore(value: ValueV1) -> Result<Value, String> {
    Ok(match value {
        ValueV1::None => Value::None,
        ValueV1::Bool(b) => Value::Bool(b),
        ValueV1::Int(i) => Value::Int(i),
        ValueV1::Float(f) => Value::Float(f),
        ValueV1::Str(s) => Value::Str(s),
        ValueV1::Duration(d) => Value::Duration(d),
        ValueV1::Time(t) => Value::Time(t),
        ValueV1::List(items) => Value::List(restore_all(items)?),
        ValueV1::Record(fields) => Value::Record(
            fields
                .into_iter()
                .map(|(k, v)| Ok((k, restore(v)?)))
                .collect::<Result<BTreeMap<_, _>, String>>()?,
        ),
        ValueV1::Variant(name, fields) => Value::Variant {
            name,
            fields: fields
                .into_iter()
                .map(|(k, v)| Ok((k, restore(v)?)))
                .collect::<Result<_, String>>()?,
        },
        ValueV1::Secret(sealed) => Value::Secret(crate::secrets::current().open(&sealed)?),
    })
}

fn restore_all(items: Vec<ValueV1>) -> Result<Vec<Value>, String> {
    items.into_iter().map(restore).collect()
}

fn values(items: &[Value]) -> Vec<ValueV1> {
    items.iter().map(ValueV1::from).collect()
}

/// The machine's state in the current format.
pub fn encode(machine: &Machine) -> Vec<u8> {
    let fiber = &machine.fiber;
    let snapshot = SnapshotV1 {
        workflow: machine.workflow,
        steps: machine.steps,
        clock: machine.clock,
        fibers: vec![FiberV1 {
            pc: fiber.pc,
            stack: values(&fiber.stack),
            locals: values(&fiber.locals),
            handlers: fiber
                .handlers
                .iter()
                .map(|h| HandlerV1 {
                    catch: h.catch,
                    kinds: h.kinds,
                    stack_depth: h.stack_depth,
                    timeouts: h.timeouts,
                })
                .collect(),
            deadlines: fiber.deadlines.clone(),
        }],
    };
    postcard::to_stdvec(&snapshot).unwrap_or_default()
}

/// Restores a machine from a checkpoint of format `version`.
pub fn decode(version: i64, bytes: &[u8]) -> Result<Machine, String> {
    match version {
        1 => decode_v1(bytes),
        v if v > CURRENT_VERSION => Err(format!(
            "the checkpoint was written in format {v}, newer than this flowrt knows ({CURRENT_VERSION}); upgrade flowrt"
        )),
        v => Err(format!("unknown checkpoint format {v}")),
    }
}

fn decode_v1(bytes: &[u8]) -> Result<Machine, String> {
    let (snapshot, rest) = postcard::take_from_bytes::<SnapshotV1>(bytes)
        .map_err(|e| format!("corrupt checkpoint: {e}"))?;
    if !rest.is_empty() {
        return Err("corrupt checkpoint: trailing bytes".to_string());
    }
    let mut fibers = snapshot.fibers.into_iter();
    let fiber = fibers
        .next()
        .ok_or_else(|| "corrupt checkpoint: no fiber".to_string())?;
    if fibers.next().is_some() {
        return Err("this flowrt runs one fiber per run; the checkpoint has more".to_string());
    }
    Ok(Machine {
        workflow: snapshot.workflow,
        steps: snapshot.steps,
        clock: snapshot.clock,
        fiber: Fiber {
            pc: fiber.pc,
            stack: restore_all(fiber.stack)?,
            locals: restore_all(fiber.locals)?,
            handlers: fiber
                .handlers
                .into_iter()
                .map(|h| Handler {
                    catch: h.catch,
                    kinds: h.kinds,
                    stack_depth: h.stack_depth,
                    timeouts: h.timeouts,
                })
                .collect(),
            deadlines: fiber.deadlines,
        },
        raised: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Machine {
        Machine {
            workflow: 2,
            steps: 7,
            clock: 1_795_000_000_000,
            raised: None,
            fiber: Fiber {
                pc: 12,
                stack: vec![
                    Value::Str("ç".into()),
                    Value::List(vec![Value::Int(-1), Value::Float(2.5), Value::None]),
                    Value::Variant {
                        name: "Held".into(),
                        fields: vec![("reason".into(), Value::Str("docs".into()))],
                    },
                ],
                locals: vec![
                    Value::record([("approved", Value::Bool(true)), ("at", Value::Time(5))]),
                    Value::Duration(30_000),
                ],
                handlers: vec![Handler {
                    catch: 40,
                    kinds: u32::MAX,
                    stack_depth: 1,
                    timeouts: 0,
                }],
                deadlines: vec![1_795_000_060_000],
            },
        }
    }

    #[test]
    fn round_trips() {
        let machine = sample();
        assert_eq!(decode(CURRENT_VERSION, &encode(&machine)), Ok(machine));
    }

    /// A checkpoint written by format 1 must decode forever. If this fails, the V1 types
    /// changed: restore them and add a `SnapshotV2` instead.
    #[test]
    fn the_v1_fixture_still_decodes() {
        let fixture = include_bytes!("../../tests/fixtures/snapshot_v1.bin");
        assert_eq!(decode(1, fixture), Ok(sample()));
    }

    #[test]
    fn newer_and_corrupt_checkpoints_are_refused() {
        assert!(decode(CURRENT_VERSION + 1, &[]).is_err_and(|e| e.contains("newer")));
        let mut bytes = encode(&sample());
        bytes.truncate(bytes.len() / 2);
        assert!(decode(1, &bytes).is_err());
    }
}
