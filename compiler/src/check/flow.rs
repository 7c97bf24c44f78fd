//! The flow facts tracked along every path of a workflow body: whether the path is still
//! reachable, and whether an approved decision is guaranteed on it.
//!
//! This is the lattice behind the sensitive-tool rule (E0400) and unreachable-code
//! warnings (W0002). It works like type narrowing: `if d.approved { … }` makes the then
//! branch approved; `if !d.approved { return … }` makes the code after it approved.

use crate::span::Span;

/// Why a path is not known to be approved: the place where the path skipped the approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witness {
    pub span: Span,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flow {
    /// No path reaches this point (after `return`, `fail`, `break`, `continue`).
    Unreachable,
    /// Every path here passed an approved decision.
    Approved,
    /// Some path here has no approved decision; the witness shows one such path.
    NotApproved(Witness),
}

impl Flow {
    pub fn not_approved(span: Span, message: impl Into<String>) -> Flow {
        Flow::NotApproved(Witness {
            span,
            message: message.into(),
        })
    }

    pub fn is_reachable(&self) -> bool {
        !matches!(self, Flow::Unreachable)
    }

    /// The facts where two paths meet: reachable if either is, approved only if both are.
    pub fn join(self, other: Flow) -> Flow {
        match (self, other) {
            (Flow::Unreachable, other) | (other, Flow::Unreachable) => other,
            (Flow::Approved, Flow::Approved) => Flow::Approved,
            (Flow::NotApproved(w), _) | (_, Flow::NotApproved(w)) => Flow::NotApproved(w),
        }
    }

    /// Entering a branch taken when a decision is approved.
    pub fn approve(self) -> Flow {
        match self {
            Flow::Unreachable => Flow::Unreachable,
            _ => Flow::Approved,
        }
    }

    /// Entering a branch taken when a decision is *not* approved: facts from earlier
    /// approvals remain, otherwise this branch becomes the witness.
    pub fn reject(self, span: Span, message: impl Into<String>) -> Flow {
        match self {
            Flow::Approved => Flow::Approved,
            Flow::Unreachable => Flow::Unreachable,
            Flow::NotApproved(_) => Flow::not_approved(span, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn witness() -> Flow {
        Flow::not_approved(Span::new(1, 2), "here")
    }

    #[test]
    fn unreachable_is_the_identity_of_join() {
        assert_eq!(Flow::Unreachable.join(Flow::Approved), Flow::Approved);
        assert_eq!(witness().join(Flow::Unreachable), witness());
    }

    #[test]
    fn a_path_without_approval_wins_the_join() {
        assert_eq!(Flow::Approved.join(witness()), witness());
        assert_eq!(Flow::Approved.join(Flow::Approved), Flow::Approved);
    }

    #[test]
    fn earlier_approvals_survive_a_rejected_branch() {
        assert_eq!(Flow::Approved.reject(Span::new(5, 6), "x"), Flow::Approved);
        assert_eq!(
            witness().reject(Span::new(5, 6), "x"),
            Flow::not_approved(Span::new(5, 6), "x")
        );
    }
}
