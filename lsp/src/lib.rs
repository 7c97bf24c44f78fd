//! The Flow language server. A later issue builds it over the compiler analysis API.
