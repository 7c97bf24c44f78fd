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
    /// Some path here has no approved decision, but every path without one waived the
    /// approval (`waive approval for t because …`) for these tools: they may be called.
    Waived {
        tools: Vec<String>,
        witness: Witness,
    },
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

    /// The facts where two paths meet: reachable if either is, approved only if both are; a
    /// tool's approval waived only if it is approved or waived on both.
    pub fn join(self, other: Flow) -> Flow {
        match (self, other) {
            (Flow::Unreachable, other) | (other, Flow::Unreachable) => other,
            (Flow::Approved, Flow::Approved) => Flow::Approved,
            (Flow::NotApproved(w), _) | (_, Flow::NotApproved(w)) => Flow::NotApproved(w),
            (waived @ Flow::Waived { .. }, Flow::Approved)
            | (Flow::Approved, waived @ Flow::Waived { .. }) => waived,
            (
                Flow::Waived { tools, witness },
                Flow::Waived {
                    tools: others,
                    witness: theirs,
                },
            ) => {
                let both: Vec<String> = tools.into_iter().filter(|t| others.contains(t)).collect();
                if both.is_empty() {
                    Flow::NotApproved(theirs)
                } else {
                    Flow::Waived {
                        tools: both,
                        witness,
                    }
                }
            }
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
    /// approvals (and waivers) remain, otherwise this branch becomes the witness.
    pub fn reject(self, span: Span, message: impl Into<String>) -> Flow {
        match self {
            Flow::Approved => Flow::Approved,
            Flow::Unreachable => Flow::Unreachable,
            waived @ Flow::Waived { .. } => waived,
            Flow::NotApproved(_) => Flow::not_approved(span, message),
        }
    }

    /// After `waive approval for tools because …`: those tools may be called on this path.
    pub fn waive(self, waived: &[String]) -> Flow {
        match self {
            Flow::Approved | Flow::Unreachable => self,
            Flow::NotApproved(witness) => Flow::Waived {
                tools: waived.to_vec(),
                witness,
            },
            Flow::Waived { mut tools, witness } => {
                for tool in waived {
                    if !tools.contains(tool) {
                        tools.push(tool.clone());
                    }
                }
                Flow::Waived { tools, witness }
            }
        }
    }

    /// Whether a sensitive call to `tool` is allowed here; else the path that skipped the
    /// approval.
    pub fn allows(&self, tool: &str) -> Result<(), &Witness> {
        match self {
            Flow::Approved | Flow::Unreachable => Ok(()),
            Flow::Waived { tools, .. } if tools.iter().any(|t| t == tool) => Ok(()),
            Flow::Waived { witness, .. } | Flow::NotApproved(witness) => Err(witness),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn witness() -> Flow {
        Flow::not_approved(Span::new(1, 2), "here")
    }

    fn waived(tools: &[&str]) -> Flow {
        witness().waive(&tools.iter().map(|t| t.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_waiver_allows_its_tools_only_and_joins_to_what_both_paths_allow() {
        let release = waived(&["release"]);
        assert!(release.allows("release").is_ok());
        assert!(release.allows("publish").is_err());
        assert!(
            Flow::Approved
                .join(release.clone())
                .allows("release")
                .is_ok()
        );
        assert!(release.clone().join(witness()).allows("release").is_err());
        let both = release.clone().join(waived(&["release", "publish"]));
        assert!(both.allows("release").is_ok() && both.allows("publish").is_err());
        assert!(
            release
                .clone()
                .join(waived(&["publish"]))
                .allows("release")
                .is_err()
        );
        assert_eq!(release.clone().approve(), Flow::Approved);
        assert_eq!(Flow::Approved.waive(&["x".into()]), Flow::Approved);
        assert_eq!(release.clone().reject(Span::new(5, 6), "no"), release);
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
