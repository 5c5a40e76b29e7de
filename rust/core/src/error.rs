//! Errors the core reports; the binding turns each into one Python exception.

use std::fmt;

/// Invalid input found by the core. Indices are flat, row-major over the `(rows, n)` batch.
#[derive(Clone, Debug, PartialEq)]
pub enum CoreError {
    /// NaN or infinity in `x` or `delta` (`arg` names which).
    NonFinite {
        arg: &'static str,
        count: usize,
        first: usize,
    },
    /// `x` outside `[lower, upper]`.
    OutOfBounds { count: usize, first: usize },
    /// `eps` negative, NaN or infinite.
    BadEps {
        what: &'static str,
        count: usize,
        first: usize,
    },
    /// A buffer of the wrong length.
    Length {
        arg: &'static str,
        expected: usize,
        got: usize,
    },
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::NonFinite { arg, count, first } => write!(
                f,
                "{arg} has {count} non-finite values; first at flat index {first}"
            ),
            CoreError::OutOfBounds { count, first } => write!(
                f,
                "x has {count} values outside bounds; first at flat index {first}"
            ),
            CoreError::BadEps { what, count, first } => {
                write!(f, "eps has {count} {what} values; first at index {first}")
            }
            CoreError::Length { arg, expected, got } => {
                write!(f, "{arg} must hold {expected} values; got {got}")
            }
        }
    }
}

impl std::error::Error for CoreError {}
