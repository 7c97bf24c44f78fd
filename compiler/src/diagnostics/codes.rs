//! Every diagnostic code the compiler can emit, in one table.
//!
//! Codes are stable: never renumber or reuse one. `E01xx` syntax, `E02xx` names and files,
//! `E03xx` types, `E04xx` workflow rules, `W0xxx` warnings. `spec/diagnostics.md` documents
//! each with an example, and a test keeps that list and the corpus complete.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Code {
    pub id: &'static str,
    pub title: &'static str,
}

macro_rules! codes {
    ($($name:ident = $id:literal, $title:literal;)*) => {
        $(pub const $name: Code = Code { id: $id, title: $title };)*
        /// All codes, in numeric order.
        pub const ALL: &[Code] = &[$($name),*];
    };
}

codes! {
    SYNTAX_ERROR = "E0100", "Syntax error";
    UNTERMINATED_STRING = "E0101", "Unterminated string";
    INVALID_CHARACTER = "E0102", "Unexpected character";
    NESTING_TOO_DEEP = "E0103", "Nesting too deep";
    INVALID_ESCAPE = "E0104", "Invalid escape in string";
    INVALID_NUMBER = "E0105", "Invalid number, duration or time";
    NOT_UTF8 = "E0106", "File is not valid UTF-8";
    INVALID_ASSIGNMENT_TARGET = "E0107", "Invalid assignment target";

    UNKNOWN_NAME = "E0200", "Unknown name";
    UNKNOWN_TYPE = "E0201", "Unknown type";
    DUPLICATE_DEFINITION = "E0202", "Duplicate definition";
    UNKNOWN_FIELD = "E0203", "Unknown field";
    UNKNOWN_VARIANT = "E0204", "Unknown variant";
    IMPORT_NOT_FOUND = "E0205", "Imported file not found";
    IMPORT_CYCLE = "E0206", "Import cycle";
    UNKNOWN_OPTION = "E0207", "Unknown option";
    UNKNOWN_ERROR_KIND = "E0208", "Unknown error kind";
    AMBIGUOUS_VARIANT = "E0209", "Ambiguous variant";
    UNKNOWN_SIGNAL = "E0210", "Unknown signal";
    UNKNOWN_SENDER = "E0211", "Unknown kind of sender";

    TYPE_MISMATCH = "E0300", "Type mismatch";
    WRONG_ARGUMENT_COUNT = "E0301", "Wrong number of arguments";
    NOT_CALLABLE = "E0302", "Not callable";
    MISSING_FIELD = "E0303", "Missing field";
    NON_EXHAUSTIVE_MATCH = "E0304", "Non-exhaustive match";
    MISSING_RETURN = "E0305", "Missing return value";
    ASSIGN_TO_IMMUTABLE = "E0306", "Assignment to an immutable binding";
    NO_FIELDS = "E0307", "Value has no fields";
    INVALID_OPERANDS = "E0308", "Invalid operands";
    WRONG_TYPE_ARGUMENTS = "E0309", "Wrong number of type arguments";
    MISSING_OPTION = "E0310", "Missing required option";
    DUPLICATE_FIELD = "E0311", "Duplicate field";
    INVALID_TOOL_BINDING = "E0312", "Invalid tool binding";
    LOOP_CONTROL_OUTSIDE_LOOP = "E0313", "`break` or `continue` outside a loop";
    NOT_ITERABLE = "E0314", "Value cannot be iterated or indexed";
    CANNOT_INFER = "E0315", "Type cannot be inferred";
    INVALID_PATTERN = "E0316", "Invalid pattern";
    NOT_A_VALUE = "E0317", "Not a value";
    OUT_OF_RANGE = "E0318", "Value out of range";
    EMPTY_NAME = "E0319", "Empty name";
    NOT_INPUT_TYPE = "E0320", "Type cannot be supplied as input";
    SECRET_LEAK = "E0321", "Secret would be revealed";
    INVALID_REFINEMENT = "E0322", "Refinement does not apply";
    EMPTY_REFINEMENT = "E0323", "Empty range";
    INVALID_REGEX = "E0324", "Invalid regular expression";

    UNAPPROVED_SENSITIVE_CALL = "E0400", "Sensitive tool called without approval";
    INVALID_TEST_STEP = "E0401", "Invalid test step";
    TEST_EXPRESSION_HAS_EFFECTS = "E0402", "Test expression performs a step";
    CONTINUE_AS_OTHER_WORKFLOW = "E0403", "`continue as` names another workflow";
    QUERY_NOT_READ_ONLY = "E0404", "Query would change the run";
    QUERY_NOT_AT_TOP_LEVEL = "E0405", "Query inside a block";
    SHARED_VARIABLE = "E0406", "Variable shared between parallel branches";
    NOT_IN_BRANCH = "E0407", "Not allowed in a parallel branch";
    SELECT_ARM_DOES_NOT_WAIT = "E0408", "Select arm does not wait";
    UNDECLARED_ERROR = "E0409", "Error not declared";
    UNREACHABLE_CATCH = "E0410", "Catch of an error the try cannot raise";
    DURABLE_STEP_IN_FUNCTION = "E0411", "Durable step in a function";
    CONFLICTING_RETRY_POLICY = "E0412", "Conflicting retry policies";
    ON_CANCEL_NOT_AT_TOP_LEVEL = "E0413", "`on cancel` inside a block";
    WAIVER_OF_NO_SENSITIVE_TOOL = "E0414", "Waiver of a tool that is not sensitive";

    APPROVAL_WAIVED = "N0001", "Approval waived";

    UNUSED_VARIABLE = "W0001", "Unused variable";
    UNREACHABLE_CODE = "W0002", "Unreachable code";
    UNUSED_IMPORT = "W0003", "Unused import";
}

pub fn by_id(id: &str) -> Option<Code> {
    ALL.iter().copied().find(|c| c.id == id)
}
