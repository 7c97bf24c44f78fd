//! The `.flowb` artifact format:
//!
//! ```text
//! magic    8 bytes  "FLOWBC\r\n" (the line ending catches text-mode corruption)
//! version  u16 LE   FORMAT_VERSION of the writer
//! length   u32 LE   payload length in bytes
//! payload           the Module, then (format 2) its field docs, then (format 4) its gate
//!                   contexts, then (format 5) its signals, selects and queries, (format 6)
//!                   its parallels, tool errors and undo blocks and (format 7) its
//!                   functions, each postcard-encoded
//! checksum 32 bytes SHA-256 of the payload
//! ```
//!
//! A deployed version is identified by the SHA-256 of the whole file ([`artifact_hash`]).

use super::module::{
    FieldDocs, FunctionCode, GateContext, Module, ParallelInfo, QueryCode, SelectInfo,
    SelectInfoV5, SignalInfo, ToolRaise, UndoBlock,
};
use sha2::{Digest, Sha256};
use std::fmt;

pub const MAGIC: &[u8; 8] = b"FLOWBC\r\n";
/// Bump when the encoding of [`Module`] or of an instruction changes incompatibly; keep a
/// fixture of every version (see the tests).
///
/// Format 2 added the `Time` constant (appended to [`super::module::Constant`], so a format 1
/// payload decodes unchanged) and, after the module, a section with the docs of record
/// fields ([`Module::field_docs`]).
///
/// Format 3 added the `ContinueAs` instruction (appended to [`super::ops::Op`], so format 1 and
/// 2 payloads decode unchanged); the version says so, so that an older runtime refuses the
/// artifact with "upgrade flowrt" instead of failing on an unknown instruction mid-run.
///
/// Format 4 added, after the field docs, a section with the static type of each `await`'s
/// `context` ([`Module::gate_contexts`]), so that the inbox shows a context's fields in
/// declaration order. An older artifact has none: its contexts are shown as before.
///
/// Format 5 added the `AwaitSignal` and `Select` instructions and, after the gate contexts,
/// a section with the signals each workflow accepts ([`Module::signals`]) and one with the
/// arms of each `select` ([`Module::selects`]).
///
/// Format 6 added the `Parallel` instruction and, after the queries, a section with each
/// `parallel`'s branch workflows ([`Module::parallels`]); a `select` arm may wait for a gate
/// or a call (its branch workflow, [`super::module::SelectArmInfo::wait`]); after the
/// parallels, the answers of tools that are named errors ([`Module::tool_raises`]).
///
/// Format 7 added the `CallFunction` instruction and, after the undo blocks, a section with
/// the program's pure functions ([`Module::functions`]).
///
/// Format 8 added refined types: the type description `TypeDesc::Refined` (a base and its
/// rule, `Float in 0.0..1.0`), appended to the end of `TypeDesc`, so that formats 1 to 7
/// decode unchanged; no section is added. The version is bumped so that a runtime that reads
/// only 7 refuses an artifact with refinements up front, saying to upgrade, instead of failing
/// on a type it does not know or running without checking the rules.
pub const FORMAT_VERSION: u16 = 8;
/// The oldest format this reader still reads: runs stay pinned to their artifact for weeks,
/// so an upgrade must not strand them.
pub const OLDEST_READABLE: u16 = 1;
const HEADER: usize = MAGIC.len() + 2 + 4;
const CHECKSUM: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactError {
    NotAnArtifact,
    Truncated {
        expected: usize,
        found: usize,
    },
    NewerFormat {
        found: u16,
        supported: u16,
    },
    OlderFormat {
        found: u16,
        supported: u16,
    },
    ChecksumMismatch,
    Corrupt(String),
    /// Well-formed and checksummed, but the verifier rejects the code (a damaged or forged
    /// artifact): it would fail mid-run, so it is refused before it is deployed.
    Unverified(String),
}

impl fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactError::NotAnArtifact => f.write_str(
                "not a Flow bytecode file (it does not start with the .flowb magic bytes)",
            ),
            ArtifactError::Truncated { expected, found } => write!(
                f,
                "the file is truncated: {found} bytes, the header announces {expected}"
            ),
            ArtifactError::NewerFormat { found, supported } => write!(
                f,
                "the file was written in bytecode format {found}; this runtime reads format {supported}: upgrade flowrt, or rebuild with this flowc"
            ),
            ArtifactError::OlderFormat { found, supported } => write!(
                f,
                "the file was written in bytecode format {found}, which this version no longer reads (it reads {OLDEST_READABLE} to {supported}): rebuild it with `flowc build`"
            ),
            ArtifactError::ChecksumMismatch => {
                f.write_str("the file is corrupt: its checksum does not match its contents")
            }
            ArtifactError::Corrupt(why) => write!(f, "the file is corrupt: {why}"),
            ArtifactError::Unverified(why) => write!(
                f,
                "the bytecode does not pass the verifier ({why}): it is damaged or was not written by flowc; rebuild it with `flowc build`"
            ),
        }
    }
}

impl std::error::Error for ArtifactError {}

pub fn encode(module: &Module) -> Vec<u8> {
    let mut payload = postcard::to_stdvec(module).unwrap_or_default();
    payload.extend(postcard::to_stdvec(&module.field_docs).unwrap_or_default());
    payload.extend(postcard::to_stdvec(&module.gate_contexts).unwrap_or_default());
    payload.extend(postcard::to_stdvec(&module.signals).unwrap_or_default());
    payload.extend(postcard::to_stdvec(&module.selects).unwrap_or_default());
    payload.extend(postcard::to_stdvec(&module.queries).unwrap_or_default());
    payload.extend(postcard::to_stdvec(&module.parallels).unwrap_or_default());
    payload.extend(postcard::to_stdvec(&module.tool_raises).unwrap_or_default());
    payload.extend(postcard::to_stdvec(&module.undos).unwrap_or_default());
    payload.extend(postcard::to_stdvec(&module.functions).unwrap_or_default());
    let mut out = Vec::with_capacity(HEADER + payload.len() + CHECKSUM);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&Sha256::digest(&payload));
    out
}

pub fn decode(bytes: &[u8]) -> Result<Module, ArtifactError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(ArtifactError::NotAnArtifact);
    }
    if bytes.len() < HEADER {
        return Err(ArtifactError::Truncated {
            expected: HEADER,
            found: bytes.len(),
        });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version > FORMAT_VERSION {
        return Err(ArtifactError::NewerFormat {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version < OLDEST_READABLE {
        return Err(ArtifactError::OlderFormat {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let length = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    let expected = HEADER + length + CHECKSUM;
    if bytes.len() < expected {
        return Err(ArtifactError::Truncated {
            expected,
            found: bytes.len(),
        });
    }
    if bytes.len() > expected {
        return Err(ArtifactError::Corrupt(format!(
            "{} unexpected bytes after the end",
            bytes.len() - expected
        )));
    }
    let payload = &bytes[HEADER..HEADER + length];
    if Sha256::digest(payload).as_slice() != &bytes[HEADER + length..] {
        return Err(ArtifactError::ChecksumMismatch);
    }
    let (mut module, mut rest) = postcard::take_from_bytes::<Module>(payload)
        .map_err(|e| ArtifactError::Corrupt(e.to_string()))?;
    if version >= 2 {
        let (docs, after) = postcard::take_from_bytes::<Vec<FieldDocs>>(rest)
            .map_err(|e| ArtifactError::Corrupt(format!("the field docs: {e}")))?;
        module.field_docs = docs;
        rest = after;
    }
    if version >= 4 {
        let (contexts, after) = postcard::take_from_bytes::<Vec<GateContext>>(rest)
            .map_err(|e| ArtifactError::Corrupt(format!("the gate contexts: {e}")))?;
        module.gate_contexts = contexts;
        rest = after;
    }
    if version >= 5 {
        let (signals, after) = postcard::take_from_bytes::<Vec<SignalInfo>>(rest)
            .map_err(|e| ArtifactError::Corrupt(format!("the signals: {e}")))?;
        module.signals = signals;
        rest = after;
        let corrupt = |e: postcard::Error| ArtifactError::Corrupt(format!("the selects: {e}"));
        let (selects, after) = if version >= 6 {
            postcard::take_from_bytes::<Vec<SelectInfo>>(rest).map_err(corrupt)?
        } else {
            let (old, after) =
                postcard::take_from_bytes::<Vec<SelectInfoV5>>(rest).map_err(corrupt)?;
            (old.into_iter().map(SelectInfo::from).collect(), after)
        };
        module.selects = selects;
        rest = after;
        let (queries, after) = postcard::take_from_bytes::<Vec<QueryCode>>(rest)
            .map_err(|e| ArtifactError::Corrupt(format!("the queries: {e}")))?;
        module.queries = queries;
        rest = after;
    }
    if version >= 6 {
        let (parallels, after) = postcard::take_from_bytes::<Vec<ParallelInfo>>(rest)
            .map_err(|e| ArtifactError::Corrupt(format!("the parallels: {e}")))?;
        module.parallels = parallels;
        rest = after;
        let (raises, after) = postcard::take_from_bytes::<Vec<ToolRaise>>(rest)
            .map_err(|e| ArtifactError::Corrupt(format!("the tool errors: {e}")))?;
        module.tool_raises = raises;
        rest = after;
        let (undos, after) = postcard::take_from_bytes::<Vec<UndoBlock>>(rest)
            .map_err(|e| ArtifactError::Corrupt(format!("the undo blocks: {e}")))?;
        module.undos = undos;
        rest = after;
    }
    if version >= 7 {
        let (functions, after) = postcard::take_from_bytes::<Vec<FunctionCode>>(rest)
            .map_err(|e| ArtifactError::Corrupt(format!("the functions: {e}")))?;
        module.functions = functions;
        rest = after;
    }
    if !rest.is_empty() {
        return Err(ArtifactError::Corrupt(
            "trailing bytes in the payload".into(),
        ));
    }
    // Every reader (deploy, resume, disasm) gets verified code: a checksum only proves the
    // bytes are the ones written, not that flowc wrote them.
    super::verify::verify(&module).map_err(ArtifactError::Unverified)?;
    Ok(module)
}

/// The identity of a deployed version: SHA-256 of the artifact bytes, in hex.
pub fn artifact_hash(bytes: &[u8]) -> String {
    flow_stdlib::hex::encode(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytecode::module::*;
    use crate::bytecode::ops::Op;

    fn tiny() -> Module {
        Module {
            field_docs: Vec::new(),
            gate_contexts: Vec::new(),
            signals: Vec::new(),
            selects: Vec::new(),
            queries: Vec::new(),
            parallels: Vec::new(),
            tool_raises: Vec::new(),
            undos: Vec::new(),
            functions: Vec::new(),
            source_hash: "00".into(),
            files: vec!["a.flow".into()],
            constants: vec![Constant::Int(1)],
            field_lists: vec![],
            kind_lists: vec![],
            types: vec![TypeDesc::Int],
            tools: vec![],
            gates: vec![],
            input_requests: vec![],
            events: vec![],
            workflows: vec![WorkflowCode {
                name: "w".into(),
                params: vec![],
                ret: TypeRef(0),
                locals: 0,
                code: vec![Op::Const(0), Op::Return],
                debug: vec![
                    DebugLoc {
                        file: 0,
                        line: 1,
                        column: 1
                    };
                    2
                ],
            }],
        }
    }

    #[test]
    fn round_trips() {
        let module = tiny();
        assert_eq!(decode(&encode(&module)), Ok(module));
    }

    #[test]
    fn bad_artifacts_are_refused_with_a_reason() {
        let bytes = encode(&tiny());
        assert_eq!(
            decode(b"workflow w() {}"),
            Err(ArtifactError::NotAnArtifact)
        );
        assert!(matches!(
            decode(&bytes[..bytes.len() - 5]),
            Err(ArtifactError::Truncated { .. })
        ));
        let mut newer = bytes.clone();
        newer[8] = 9;
        assert!(matches!(
            decode(&newer),
            Err(ArtifactError::NewerFormat { found: 9, .. })
        ));
        let mut flipped = bytes.clone();
        flipped[HEADER + 3] ^= 0xff;
        assert_eq!(decode(&flipped), Err(ArtifactError::ChecksumMismatch));
    }

    /// `tests/fixtures/format1.flowb` was written by `flowc build tests/fixtures/format1.flow`
    /// in format 1, before format 2 existed: a run pinned to it must still resume.
    #[test]
    fn a_format_1_artifact_still_reads() {
        let bytes = include_bytes!("../../tests/fixtures/format1.flowb");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 1);
        let module = decode(bytes).expect("format 1 reads");
        assert_eq!(module.workflows[0].name, "triage");
        assert_eq!(module.tools[0].name, "notify");
        let mut older = bytes.to_vec();
        older[8] = 0;
        assert_eq!(
            decode(&older),
            Err(ArtifactError::OlderFormat {
                found: 0,
                supported: FORMAT_VERSION
            })
        );
    }

    /// `tests/fixtures/format2.flowb` was written by `flowc build tests/fixtures/format2.flow`
    /// in format 2 (a `Time` constant and field docs), before format 3 existed.
    #[test]
    fn a_format_2_artifact_still_reads() {
        let bytes = include_bytes!("../../tests/fixtures/format2.flowb");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 2);
        let module = decode(bytes).expect("format 2 reads");
        assert_eq!(module.workflows[0].name, "settle");
        assert!(
            module
                .constants
                .contains(&Constant::Time(1_798_675_200_000))
        );
        assert_eq!(module.field_docs[0].fields[0].0, "claimant");
        assert_eq!(super::super::verify::verify(&module), Ok(()));
    }

    /// `tests/fixtures/format3.flowb` was written by `flowc build tests/fixtures/format3.flow`
    /// in format 3 (a gate with a context, `continue as`), before format 4 existed: it reads,
    /// with no gate contexts (the inbox shows its contexts as it did).
    #[test]
    fn a_format_3_artifact_still_reads() {
        let bytes = include_bytes!("../../tests/fixtures/format3.flowb");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 3);
        let module = decode(bytes).expect("format 3 reads");
        assert_eq!(module.workflows[0].name, "settle");
        assert_eq!(module.gates, ["payout"]);
        assert!(
            module.workflows[0]
                .code
                .contains(&Op::ContinueAs { workflow: 0 })
        );
        assert_eq!(module.field_docs[0].fields[0].0, "claimant");
        assert!(module.gate_contexts.is_empty());
        // The same module written today carries the (empty) section and reads back equal.
        assert_eq!(decode(&encode(&module)), Ok(module));
    }

    /// `tests/fixtures/format4.flowb` was written by `flowc build tests/fixtures/format4.flow`
    /// in format 4, before signals existed: it reads, with its gate contexts and no signals.
    #[test]
    fn a_format_4_artifact_still_reads() {
        let bytes = include_bytes!("../../tests/fixtures/format4.flowb");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 4);
        let module = decode(bytes).expect("format 4 reads");
        assert_eq!(module.workflows[0].name, "settle");
        assert_eq!(module.gate_contexts.len(), 1);
        assert!(module.signals.is_empty());
        assert_eq!(decode(&encode(&module)), Ok(module));
    }

    /// `tests/fixtures/format5.flowb` was written by `flowc build tests/fixtures/format5.flow`
    /// in format 5, before `parallel` existed: it reads, with its signal, select and query
    /// and no parallels.
    #[test]
    fn a_format_5_artifact_still_reads() {
        let bytes = include_bytes!("../../tests/fixtures/format5.flowb");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 5);
        let module = decode(bytes).expect("format 5 reads");
        assert_eq!(module.workflows[0].name, "renew");
        assert_eq!(module.signals[0].name, "cancel");
        assert_eq!(module.selects.len(), 1);
        assert_eq!(module.queries[0].name, "months_paid");
        assert!(module.parallels.is_empty());
        assert_eq!(decode(&encode(&module)), Ok(module));
    }

    /// `tests/fixtures/format6.flowb` was written by `flowc build tests/fixtures/format6.flow`
    /// in format 6, before functions existed: it reads, with its parallel, its select arm
    /// that waits for a call, its tool's named error and its undo block.
    #[test]
    fn a_format_6_artifact_still_reads() {
        let bytes = include_bytes!("../../tests/fixtures/format6.flowb");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 6);
        let module = decode(bytes).expect("format 6 reads");
        assert_eq!(module.workflows[0].name, "order");
        assert_eq!(module.parallels.len(), 1);
        assert_eq!(module.selects.len(), 1);
        assert!(module.selects[0].arms.iter().any(|a| a.wait.is_some()));
        assert_eq!(module.tool_raises.len(), 1);
        assert_eq!(module.undos.len(), 1);
        assert_eq!(module.signals[0].name, "cancel");
        assert_eq!(decode(&encode(&module)), Ok(module));
    }

    /// `tests/fixtures/format7.flowb` was written by `flowc build tests/fixtures/format7.flow`
    /// in format 7, before refined types existed: it reads, with its function.
    #[test]
    fn a_format_7_artifact_still_reads() {
        let bytes = include_bytes!("../../tests/fixtures/format7.flowb");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 7);
        let module = decode(bytes).expect("format 7 reads");
        assert_eq!(module.workflows[0].name, "quote");
        assert_eq!(module.functions[0].name, "price");
        assert!(
            !module
                .types
                .iter()
                .any(|t| matches!(t, TypeDesc::Refined { .. }))
        );
        assert_eq!(decode(&encode(&module)), Ok(module));
    }

    /// A refined type's description survives the encoding, and one that a forged artifact
    /// puts on a base it does not apply to, or with a pattern that does not compile, is
    /// refused by the verifier.
    #[test]
    fn refined_types_round_trip_and_bad_ones_are_refused() {
        let mut module = tiny();
        module.types = vec![
            TypeDesc::Int,
            TypeDesc::Refined {
                base: TypeRef(0),
                rule: crate::bytecode::Refinement::IntRange {
                    min: Some(1),
                    max: None,
                },
                name: Some("Qty".into()),
            },
        ];
        assert_eq!(decode(&encode(&module)), Ok(module.clone()));
        let mut wrong = module.clone();
        wrong.types[1] = TypeDesc::Refined {
            base: TypeRef(0),
            rule: crate::bytecode::Refinement::Matching("[a-z]+".into()),
            name: None,
        };
        let refused = super::super::verify::verify(&wrong).expect_err("matching on an Int");
        assert!(refused.contains("does not apply"), "{refused}");
        let mut circle = module.clone();
        circle.types[1] = TypeDesc::Refined {
            base: TypeRef(1),
            rule: crate::bytecode::Refinement::NonEmpty,
            name: None,
        };
        let refused = super::super::verify::verify(&circle).expect_err("refined from itself");
        assert!(refused.contains("circle"), "{refused}");
        let mut pattern = module;
        pattern.types[0] = TypeDesc::String;
        pattern.types[1] = TypeDesc::Refined {
            base: TypeRef(0),
            rule: crate::bytecode::Refinement::Matching("(".into()),
            name: None,
        };
        let refused = super::super::verify::verify(&pattern).expect_err("bad pattern");
        assert!(refused.contains("invalid pattern"), "{refused}");
    }

    /// A payload that stops where the functions should begin, under a format 7 header, is
    /// corrupt; the same bytes under a format 6 header are a complete artifact.
    #[test]
    fn a_format_7_artifact_without_its_functions_is_corrupt() {
        let module = tiny();
        let mut payload = postcard::to_stdvec(&module).expect("encodes");
        payload.extend(postcard::to_stdvec(&module.field_docs).expect("encodes"));
        payload.extend(postcard::to_stdvec(&module.gate_contexts).expect("encodes"));
        payload.extend(postcard::to_stdvec(&module.signals).expect("encodes"));
        payload.extend(postcard::to_stdvec(&module.selects).expect("encodes"));
        payload.extend(postcard::to_stdvec(&module.queries).expect("encodes"));
        payload.extend(postcard::to_stdvec(&module.parallels).expect("encodes"));
        payload.extend(postcard::to_stdvec(&module.tool_raises).expect("encodes"));
        payload.extend(postcard::to_stdvec(&module.undos).expect("encodes"));
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&7u16.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(&Sha256::digest(&payload));
        match decode(&bytes) {
            Err(ArtifactError::Corrupt(why)) => assert!(why.starts_with("the functions"), "{why}"),
            other => panic!("expected a corrupt artifact, got {other:?}"),
        }
        bytes[8] = 6;
        assert_eq!(decode(&bytes), Ok(module));
    }

    #[test]
    fn functions_round_trip() {
        let mut module = tiny();
        module.functions = vec![WorkflowCode {
            name: "double".into(),
            params: vec![("n".into(), TypeRef(0))],
            ret: TypeRef(0),
            locals: 1,
            code: vec![Op::LoadLocal(0), Op::LoadLocal(0), Op::Add, Op::Return],
            debug: vec![module.workflows[0].debug[0]; 4],
        }];
        module.workflows[0].code = vec![Op::Const(0), Op::CallFunction { function: 0 }, Op::Return];
        module.workflows[0].debug = vec![module.workflows[0].debug[0]; 3];
        let bytes = encode(&module);
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), FORMAT_VERSION);
        let read = decode(&bytes).expect("reads");
        assert_eq!(read.function("double").map(|(i, _)| i), Some(0));
        assert_eq!(read, module);
    }

    /// A payload that stops where the parallels should begin, under a format 6 header.
    #[test]
    fn a_format_6_artifact_without_its_parallels_is_corrupt() {
        let module = tiny();
        let mut payload = postcard::to_stdvec(&module).expect("encodes");
        payload.extend(postcard::to_stdvec(&module.field_docs).expect("encodes"));
        payload.extend(postcard::to_stdvec(&module.gate_contexts).expect("encodes"));
        payload.extend(postcard::to_stdvec(&module.signals).expect("encodes"));
        payload.extend(postcard::to_stdvec(&module.selects).expect("encodes"));
        payload.extend(postcard::to_stdvec(&module.queries).expect("encodes"));
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&6u16.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(&Sha256::digest(&payload));
        match decode(&bytes) {
            Err(ArtifactError::Corrupt(why)) => assert!(why.starts_with("the parallels"), "{why}"),
            other => panic!("expected a corrupt artifact, got {other:?}"),
        }
        bytes[8] = 5;
        assert_eq!(decode(&bytes), Ok(module));
    }

    /// A payload that stops where the signals should begin, under a format 5 header.
    #[test]
    fn a_format_5_artifact_without_its_signals_is_corrupt() {
        let module = tiny();
        let mut payload = postcard::to_stdvec(&module).expect("encodes");
        payload.extend(postcard::to_stdvec(&module.field_docs).expect("encodes"));
        payload.extend(postcard::to_stdvec(&module.gate_contexts).expect("encodes"));
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&5u16.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(&Sha256::digest(&payload));
        match decode(&bytes) {
            Err(ArtifactError::Corrupt(why)) => assert!(why.starts_with("the signals"), "{why}"),
            other => panic!("expected a corrupt artifact, got {other:?}"),
        }
        bytes[8] = 4;
        assert_eq!(decode(&bytes), Ok(module));
    }

    /// A payload that stops where the gate contexts should begin, under a format 4 header.
    #[test]
    fn a_format_4_artifact_without_its_gate_contexts_is_corrupt() {
        let module = tiny();
        let mut payload = postcard::to_stdvec(&module).expect("encodes");
        payload.extend(postcard::to_stdvec(&module.field_docs).expect("encodes"));
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&4u16.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(&Sha256::digest(&payload));
        match decode(&bytes) {
            Err(ArtifactError::Corrupt(why)) => {
                assert!(why.starts_with("the gate contexts"), "{why}")
            }
            other => panic!("expected a corrupt artifact, got {other:?}"),
        }
        // Under a format 3 header the same bytes are a complete artifact.
        bytes[8] = 3;
        assert_eq!(decode(&bytes), Ok(module));
    }

    #[test]
    fn gate_contexts_round_trip() {
        let mut module = tiny();
        module.gates = vec!["g".into()];
        module.workflows[0].code = vec![Op::Const(0), Op::AwaitApproval { gate: 0 }, Op::Return];
        module.workflows[0].debug = vec![module.workflows[0].debug[0]; 3];
        module.gate_contexts = vec![GateContext {
            workflow: 0,
            pc: 1,
            ty: TypeRef(0),
        }];
        let bytes = encode(&module);
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), FORMAT_VERSION);
        let read = decode(&bytes).expect("reads");
        assert_eq!(read.gate_context(0, 1), Some(TypeRef(0)));
        assert_eq!(read.gate_context(0, 0), None);
        assert_eq!(read, module);
    }

    #[test]
    fn a_time_constant_and_field_docs_round_trip() {
        let mut module = tiny();
        module.constants = vec![Constant::Time(1_796_115_600_000)];
        module.field_docs = vec![FieldDocs {
            ty: TypeRef(0),
            fields: vec![("reporter".into(), "Who reported it.".into())],
        }];
        let bytes = encode(&module);
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), FORMAT_VERSION);
        assert_eq!(decode(&bytes), Ok(module));
    }

    /// Instruction numbers are persisted: this pins them. If this fails, an instruction was
    /// reordered or removed — add new ones at the end of `Op` instead.
    #[test]
    fn instruction_numbers_are_stable() {
        let numbered = [
            (Op::Const(0), 0u8),
            (Op::Pop, 1),
            (Op::LoadLocal(0), 3),
            (Op::MakeList(0), 5),
            (Op::GetField(0), 8),
            (Op::IsNone, 13),
            (Op::Add, 16),
            (Op::GtEq, 26),
            (Op::Concat(0), 28),
            (Op::JumpIfNotNone(0), 32),
            (Op::CallBuiltin { id: 0, args: 0 }, 33),
            (Op::CallTool { tool: 0 }, 34),
            (Op::Sleep, 38),
            (Op::Audit { event: 0 }, 39),
            (Op::Fail, 40),
            (Op::Return, 46),
            (Op::SetField(0), 47),
            (Op::Jitter, 48),
            (Op::Conform(0), 49),
            (Op::ContinueAs { workflow: 0 }, 50),
            (Op::AwaitSignal { signal: 0 }, 51),
            (Op::Select(0), 52),
            (Op::Parallel(0), 53),
            (Op::Compensate, 54),
            (Op::CallFunction { function: 0 }, 55),
        ];
        for (op, number) in numbered {
            let bytes = postcard::to_stdvec(&op).expect("encodes");
            assert_eq!(bytes[0], number, "{op:?}");
        }
    }
}
