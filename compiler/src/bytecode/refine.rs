//! Refinements (format 8): the rule a refined type (`Float in 0.0..1.0`,
//! `String matching "^[A-Z]{2}[0-9]+$"`, `List<String> nonempty`) adds to its base type, and
//! how a value is tested against it. The compiler tests constants with it, the runtime the
//! values that enter a run (its input, tool results, model output, what a person supplies)
//! and the values a workflow puts into a refined place (`Op::Conform`).

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

/// What a refined type admits of its base type's values. Bounds are inclusive; `None` is an
/// open end (`in 0..`, `in ..10`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Refinement {
    /// `Int in a..b`.
    IntRange { min: Option<i64>, max: Option<i64> },
    /// `Float in a..b`.
    FloatRange { min: Option<f64>, max: Option<f64> },
    /// `String matching "re"`: the whole text matches the regular expression.
    Matching(String),
    /// `String nonempty`, `List<T> nonempty`: at least one character or item.
    NonEmpty,
    /// `String length a..b` (characters), `List<T> length a..b` (items).
    Length { min: Option<u64>, max: Option<u64> },
}

/// The part of a value a refinement looks at.
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    Int(i64),
    Float(f64),
    Text(&'a str),
    /// A list's number of items.
    Items(usize),
}

/// The largest compiled form a pattern may take (bytes), so that no pattern — `(a{1000}){1000}`
/// — can make flowc or flowrt allocate without bound.
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;
/// The longest pattern accepted, in bytes.
pub const PATTERN_MAX_LEN: usize = 4096;

/// `pattern` compiled to match a whole text (`\A(?:pattern)\z`), within the size limits; the
/// error says why it is not a valid pattern.
pub fn compile_pattern(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > PATTERN_MAX_LEN {
        return Err(format!(
            "the pattern is {} bytes long; at most {PATTERN_MAX_LEN} are allowed",
            pattern.len()
        ));
    }
    RegexBuilder::new(&format!(r"\A(?:{pattern})\z"))
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .nest_limit(64)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => {
                "the pattern is too large once compiled (it repeats too much)".to_string()
            }
            regex::Error::Syntax(text) => {
                // The message's last line says what is wrong; the lines before draw the
                // (wrapped) pattern with a caret.
                let last = text.lines().rev().find(|l| !l.trim().is_empty());
                last.unwrap_or(&text)
                    .trim()
                    .trim_start_matches("error: ")
                    .to_string()
            }
            other => other.to_string(),
        })
}

/// Patterns compiled once per process (a run checks the same few over and over).
static PATTERNS: LazyLock<Mutex<HashMap<String, Arc<Regex>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
/// More distinct patterns than any program has: past it the cache starts again.
const CACHED_PATTERNS: usize = 1024;

fn cached_pattern(pattern: &str) -> Option<Arc<Regex>> {
    let mut cache = PATTERNS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = cache.get(pattern) {
        return Some(found.clone());
    }
    let compiled = Arc::new(compile_pattern(pattern).ok()?);
    if cache.len() >= CACHED_PATTERNS {
        cache.clear();
    }
    cache.insert(pattern.to_string(), compiled.clone());
    Some(compiled)
}

impl Refinement {
    /// Whether the value admits the rule. A subject of another kind than the rule's is not
    /// admitted (the verifier and the checker keep rules on the bases they apply to).
    pub fn admits(&self, subject: Subject<'_>) -> bool {
        fn within<T: PartialOrd>(v: T, min: &Option<T>, max: &Option<T>) -> bool {
            min.as_ref().is_none_or(|m| v >= *m) && max.as_ref().is_none_or(|m| v <= *m)
        }
        match (self, subject) {
            (Refinement::IntRange { min, max }, Subject::Int(v)) => within(v, min, max),
            (Refinement::FloatRange { min, max }, Subject::Float(v)) => {
                !v.is_nan() && within(v, min, max)
            }
            (Refinement::Matching(pattern), Subject::Text(text)) => {
                cached_pattern(pattern).is_some_and(|re| re.is_match(text))
            }
            (Refinement::NonEmpty, Subject::Text(text)) => !text.is_empty(),
            (Refinement::NonEmpty, Subject::Items(n)) => n > 0,
            (Refinement::Length { min, max }, Subject::Text(text)) => {
                within(text.chars().count() as u64, min, max)
            }
            (Refinement::Length { min, max }, Subject::Items(n)) => within(n as u64, min, max),
            _ => false,
        }
    }

    /// Whether the rule is for text (`matching`, `nonempty`, `length`), and so for a `String`
    /// base; `nonempty` and `length` are also for a list.
    pub fn applies_to_text(&self) -> bool {
        matches!(
            self,
            Refinement::Matching(_) | Refinement::NonEmpty | Refinement::Length { .. }
        )
    }

    pub fn applies_to_list(&self) -> bool {
        matches!(self, Refinement::NonEmpty | Refinement::Length { .. })
    }
}

/// A float bound as Flow writes it: always with a decimal point (`1.0`, not `1`).
fn float(f: f64) -> String {
    let text = format!("{f:?}");
    if text.contains(['.', 'e', 'i', 'N']) {
        text
    } else {
        format!("{text}.0")
    }
}

fn range<T>(
    f: &mut fmt::Formatter<'_>,
    min: &Option<T>,
    max: &Option<T>,
    show: impl Fn(&T) -> String,
) -> fmt::Result {
    if let Some(min) = min {
        f.write_str(&show(min))?;
    }
    f.write_str("..")?;
    if let Some(max) = max {
        f.write_str(&show(max))?;
    }
    Ok(())
}

/// The rule as the source writes it after the base type: `in 1..1000`, `matching "^[A-Z]+$"`.
impl fmt::Display for Refinement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refinement::IntRange { min, max } => {
                f.write_str("in ")?;
                range(f, min, max, |v| v.to_string())
            }
            Refinement::FloatRange { min, max } => {
                f.write_str("in ")?;
                range(f, min, max, |v| float(*v))
            }
            Refinement::Matching(pattern) => {
                f.write_str("matching \"")?;
                let mut chars = pattern.chars().peekable();
                while let Some(c) = chars.next() {
                    match c {
                        '$' if chars.peek() == Some(&'{') => f.write_str("\\$")?,
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\t' => f.write_str("\\t")?,
                        '\r' => f.write_str("\\r")?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
            Refinement::NonEmpty => f.write_str("nonempty"),
            Refinement::Length { min, max } => {
                f.write_str("length ")?;
                range(f, min, max, |v| v.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_and_may_be_open() {
        let r = Refinement::IntRange {
            min: Some(1),
            max: Some(1000),
        };
        assert!(r.admits(Subject::Int(1)) && r.admits(Subject::Int(1000)));
        assert!(!r.admits(Subject::Int(0)) && !r.admits(Subject::Int(1001)));
        let open = Refinement::FloatRange {
            min: Some(0.0),
            max: None,
        };
        assert!(open.admits(Subject::Float(1e300)) && !open.admits(Subject::Float(-0.1)));
        assert!(!open.admits(Subject::Float(f64::NAN)));
        assert!(
            !r.admits(Subject::Float(5.0)),
            "a rule on another kind admits nothing"
        );
    }

    #[test]
    fn a_pattern_matches_the_whole_text() {
        let r = Refinement::Matching("[A-Z]{2}[0-9]+".into());
        assert!(r.admits(Subject::Text("AB12")));
        assert!(!r.admits(Subject::Text("xAB12")) && !r.admits(Subject::Text("AB12\n")));
        let alt = Refinement::Matching("a|b".into());
        assert!(
            !alt.admits(Subject::Text("ab")),
            "the alternation is anchored as a whole"
        );
    }

    #[test]
    fn lengths_count_characters_and_items() {
        let r = Refinement::Length {
            min: Some(1),
            max: Some(2),
        };
        assert!(r.admits(Subject::Text("éé")) && !r.admits(Subject::Text("ééé")));
        assert!(r.admits(Subject::Items(2)) && !r.admits(Subject::Items(0)));
        assert!(!Refinement::NonEmpty.admits(Subject::Text("")));
        assert!(Refinement::NonEmpty.admits(Subject::Items(1)));
    }

    #[test]
    fn bad_and_hostile_patterns_are_refused_with_a_reason() {
        let bad = compile_pattern("[A-Z").expect_err("unclosed class");
        assert!(bad.contains("unclosed"), "{bad}");
        let huge = compile_pattern("(((a{100}){100}){100})").expect_err("too big");
        assert!(huge.contains("too large"), "{huge}");
        let long = compile_pattern(&"a".repeat(PATTERN_MAX_LEN + 1)).expect_err("too long");
        assert!(long.contains("at most"), "{long}");
    }

    #[test]
    fn rules_show_as_the_source_writes_them() {
        let shown = |r: Refinement| r.to_string();
        assert_eq!(
            shown(Refinement::FloatRange {
                min: Some(0.0),
                max: Some(1.0)
            }),
            "in 0.0..1.0"
        );
        assert_eq!(
            shown(Refinement::IntRange {
                min: None,
                max: Some(-3)
            }),
            "in ..-3"
        );
        assert_eq!(
            shown(Refinement::Matching("^\\d\"$".into())),
            "matching \"^\\\\d\\\"$\""
        );
        assert_eq!(
            shown(Refinement::Matching("a${1}".into())),
            "matching \"a\\${1}\""
        );
        assert_eq!(
            shown(Refinement::Length {
                min: Some(1),
                max: Some(80)
            }),
            "length 1..80"
        );
    }
}
