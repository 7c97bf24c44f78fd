//! Pure operations: the binary operators and the builtin functions of `flow-stdlib`.
//!
//! `call` matches every builtin without a catch-all arm, so adding one to the stdlib does
//! not compile until it is implemented here. Errors are messages; the machine raises them
//! as catchable `Failed` errors.

use super::value::Value;
use flow_compiler::bytecode::Op;
use flow_stdlib::Builtin;

pub fn binary(op: Op, lhs: Value, rhs: Value) -> Result<Value, String> {
    use Value::*;
    let overflow = || "integer overflow".to_string();
    Ok(match (op, lhs, rhs) {
        (Op::Eq, a, b) => Bool(a == b),
        (Op::NotEq, a, b) => Bool(a != b),
        (Op::Lt | Op::LtEq | Op::Gt | Op::GtEq, a, b) => {
            let ordering = compare(&a, &b).ok_or_else(|| {
                format!("cannot compare {} with {}", a.type_name(), b.type_name())
            })?;
            Bool(match op {
                Op::Lt => ordering.is_lt(),
                Op::LtEq => ordering.is_le(),
                Op::Gt => ordering.is_gt(),
                _ => ordering.is_ge(),
            })
        }
        (Op::Add, Int(a), Int(b)) => Int(a.checked_add(b).ok_or_else(overflow)?),
        (Op::Add, Float(a), Float(b)) => Float(a + b),
        (Op::Add, Str(a), Str(b)) => Str(a + &b),
        (Op::Add, Duration(a), Duration(b)) => Duration(a.checked_add(b).ok_or_else(overflow)?),
        (Op::Add, Time(a), Duration(b)) => Time(a.checked_add(b).ok_or_else(overflow)?),
        (Op::Add, List(mut a), List(b)) => {
            a.extend(b);
            List(a)
        }
        (Op::Sub, Int(a), Int(b)) => Int(a.checked_sub(b).ok_or_else(overflow)?),
        (Op::Sub, Float(a), Float(b)) => Float(a - b),
        (Op::Sub, Duration(a), Duration(b)) => Duration(a.checked_sub(b).ok_or_else(overflow)?),
        (Op::Sub, Time(a), Duration(b)) => Time(a.checked_sub(b).ok_or_else(overflow)?),
        (Op::Sub, Time(a), Time(b)) => Duration(a.checked_sub(b).ok_or_else(overflow)?),
        (Op::Mul, Int(a), Int(b)) => Int(a.checked_mul(b).ok_or_else(overflow)?),
        (Op::Mul, Float(a), Float(b)) => Float(a * b),
        (Op::Mul, Duration(a), Int(b)) | (Op::Mul, Int(b), Duration(a)) => {
            Duration(a.checked_mul(b).ok_or_else(overflow)?)
        }
        // Whole milliseconds, rounded down (`1s * 1.5` is 1500ms).
        (Op::Mul, Duration(a), Float(b)) | (Op::Mul, Float(b), Duration(a)) => {
            let ms = a as f64 * b;
            if !ms.is_finite() || ms.abs() >= i64::MAX as f64 {
                return Err(overflow());
            }
            Duration(ms as i64)
        }
        (Op::Div | Op::Rem, Int(_), Int(0)) => return Err("division by zero".to_string()),
        (Op::Div, Int(a), Int(b)) => Int(a.checked_div(b).ok_or_else(overflow)?),
        (Op::Rem, Int(a), Int(b)) => Int(a.checked_rem(b).ok_or_else(overflow)?),
        (Op::Div, Float(a), Float(b)) => Float(a / b),
        (Op::Div, Duration(_), Int(0)) => return Err("division by zero".to_string()),
        (Op::Div, Duration(a), Int(b)) => Duration(a / b),
        (Op::Div, Duration(a), Float(b)) if b != 0.0 => {
            let ms = a as f64 / b;
            if !ms.is_finite() || ms.abs() >= i64::MAX as f64 {
                return Err(overflow());
            }
            Duration(ms as i64)
        }
        (op, a, b) => {
            return Err(format!(
                "cannot apply {op:?} to {} and {}",
                a.type_name(),
                b.type_name()
            ));
        }
    })
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Int(a), Value::Int(b))
        | (Value::Duration(a), Value::Duration(b))
        | (Value::Time(a), Value::Time(b)) => Some(a.cmp(b)),
        (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
        (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn text(value: &Value) -> Result<&str, String> {
    match value {
        Value::Str(s) => Ok(s),
        other => Err(format!("expected String, found {}", other.type_name())),
    }
}

fn list(value: &Value) -> Result<&[Value], String> {
    match value {
        Value::List(items) => Ok(items),
        other => Err(format!("expected List, found {}", other.type_name())),
    }
}

fn arg(args: &[Value], index: usize) -> Result<&Value, String> {
    args.get(index)
        .ok_or_else(|| format!("missing argument {}", index + 1))
}

pub fn call(builtin: Builtin, args: Vec<Value>) -> Result<Value, String> {
    Ok(match builtin {
        Builtin::Now | Builtin::RunId => {
            return Err(format!(
                "{}() is a durable point, not a pure call",
                builtin.name()
            ));
        }
        Builtin::Role | Builtin::User => Value::record([
            (
                "kind",
                Value::Str(
                    if builtin == Builtin::Role {
                        "role"
                    } else {
                        "user"
                    }
                    .to_string(),
                ),
            ),
            ("name", Value::Str(text(arg(&args, 0)?)?.to_string())),
        ]),
        Builtin::Len => Value::Int(list(arg(&args, 0)?)?.len() as i64),
        Builtin::Contains => match (arg(&args, 0)?, arg(&args, 1)?) {
            (Value::Str(text), Value::Str(part)) => Value::Bool(text.contains(part.as_str())),
            (items, item) => Value::Bool(list(items)?.contains(item)),
        },
        Builtin::Keys => match arg(&args, 0)? {
            Value::Record(fields) => {
                Value::List(fields.keys().map(|k| Value::Str(k.clone())).collect())
            }
            other => return Err(format!("expected Map, found {}", other.type_name())),
        },
        Builtin::ToString => Value::Str(arg(&args, 0)?.to_text()),
        Builtin::ParseInt => match text(arg(&args, 0)?)?.trim().parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::None,
        },
        Builtin::Lower => Value::Str(text(arg(&args, 0)?)?.to_lowercase()),
        Builtin::Upper => Value::Str(text(arg(&args, 0)?)?.to_uppercase()),
        Builtin::Trim => Value::Str(text(arg(&args, 0)?)?.trim().to_string()),
        Builtin::StartsWith => {
            Value::Bool(text(arg(&args, 0)?)?.starts_with(text(arg(&args, 1)?)?))
        }
        Builtin::EndsWith => Value::Bool(text(arg(&args, 0)?)?.ends_with(text(arg(&args, 1)?)?)),
        Builtin::Join => {
            let parts: Result<Vec<&str>, String> = list(arg(&args, 0)?)?.iter().map(text).collect();
            Value::Str(parts?.join(text(arg(&args, 1)?)?))
        }
        Builtin::ToJson => arg(&args, 0)?.clone(),
        Builtin::Length => Value::Int(text(arg(&args, 0)?)?.chars().count() as i64),
        Builtin::Any => {
            let mut of = Vec::new();
            for approvers in args {
                flatten_approvers(approvers, &mut of);
            }
            if of.is_empty() {
                return Err("any(…) was given no approvers: nobody could decide".to_string());
            }
            Value::record([
                ("kind", Value::Str("any".to_string())),
                ("of", Value::List(of)),
            ])
        }
    })
}

/// The approvers `any(…)` combines, as `role`/`user` records: list arguments and nested
/// `any` values are spliced in, so `of` never holds a list or another `any`.
fn flatten_approvers(value: Value, of: &mut Vec<Value>) {
    match value {
        Value::List(items) => items.into_iter().for_each(|v| flatten_approvers(v, of)),
        Value::Record(mut fields) if matches!(fields.get("kind"), Some(Value::Str(kind)) if kind == "any") => {
            if let Some(inner) = fields.remove("of") {
                flatten_approvers(inner, of);
            }
        }
        other => {
            if !of.contains(&other) {
                of.push(other);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_overflow_and_division_by_zero_are_errors_not_panics() {
        assert!(binary(Op::Add, Value::Int(i64::MAX), Value::Int(1)).is_err());
        assert!(binary(Op::Div, Value::Int(1), Value::Int(0)).is_err());
        assert!(binary(Op::Rem, Value::Int(i64::MIN), Value::Int(-1)).is_err());
        assert_eq!(
            binary(Op::Mul, Value::Int(2), Value::Duration(1000)),
            Ok(Value::Duration(2000))
        );
    }

    #[test]
    fn builtins_compute() {
        let list = Value::List(vec![Value::Int(1), Value::Int(2)]);
        assert_eq!(call(Builtin::Len, vec![list.clone()]), Ok(Value::Int(2)));
        assert_eq!(
            call(Builtin::Contains, vec![list, Value::Int(2)]),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            call(Builtin::ParseInt, vec![Value::Str("x".into())]),
            Ok(Value::None)
        );
        assert_eq!(
            call(Builtin::Length, vec![Value::Str("çé".into())]),
            Ok(Value::Int(2))
        );
    }

    #[test]
    fn any_flattens_lists_and_nested_any_into_one_list_of_approvers() {
        let role = call(Builtin::Role, vec![Value::Str("customs".into())]).expect("role");
        let user = call(Builtin::User, vec![Value::Str("ana".into())]).expect("user");
        let omar = call(Builtin::User, vec![Value::Str("omar".into())]).expect("user");
        let expected = |of: Vec<Value>| {
            Ok(Value::record([
                ("kind", Value::Str("any".into())),
                ("of", Value::List(of)),
            ]))
        };
        assert_eq!(
            call(Builtin::Any, vec![role.clone(), user.clone()]),
            expected(vec![role.clone(), user.clone()])
        );
        assert_eq!(
            call(
                Builtin::Any,
                vec![Value::List(vec![role.clone(), user.clone()])]
            ),
            expected(vec![role.clone(), user.clone()])
        );
        let inner = call(Builtin::Any, vec![user.clone(), omar.clone()]).expect("any");
        assert_eq!(
            call(Builtin::Any, vec![role.clone(), inner, user.clone()]),
            expected(vec![role, user, omar])
        );
        assert!(call(Builtin::Any, vec![Value::List(vec![])]).is_err());
    }
}
