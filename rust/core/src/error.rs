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

/// `n` followed by `noun`, with an `s` unless `n` is 1 (every count in a message goes
/// through here, so one thing is never "1 things").
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::NonFinite { arg, count, first } => write!(
                f,
                "{arg} has {}; first at flat index {first}",
                counted(*count, "non-finite value")
            ),
            CoreError::OutOfBounds { count, first } => write!(
                f,
                "x has {} outside bounds; first at flat index {first}",
                counted(*count, "value")
            ),
            CoreError::BadEps { what, count, first } => write!(
                f,
                "eps has {}; first at index {first}",
                counted(*count, &format!("{what} value"))
            ),
            CoreError::Length { arg, expected, got } => {
                write!(
                    f,
                    "{arg} must hold {}; got {got}",
                    counted(*expected, "value")
                )
            }
        }
    }
}

impl std::error::Error for CoreError {}

impl CoreError {
    /// The error of a batch's diagnosis, from `(count, first index)` of non-finite `x`, of
    /// non-finite values of the second array (`delta` or `z`), and of `x` outside its
    /// bounds: the first kind found wins, in that order.
    pub(crate) fn from_found(found: [(usize, usize); 3], second: &'static str) -> CoreError {
        match found {
            [(count, first), _, _] if count > 0 => CoreError::NonFinite {
                arg: "x",
                count,
                first,
            },
            [_, (count, first), _] if count > 0 => CoreError::NonFinite {
                arg: second,
                count,
                first,
            },
            [_, _, (count, first)] => CoreError::OutOfBounds { count, first },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CoreError;

    #[test]
    fn messages_say_one_value_and_n_values() {
        let one = CoreError::NonFinite {
            arg: "delta",
            count: 1,
            first: 7,
        };
        assert_eq!(
            one.to_string(),
            "delta has 1 non-finite value; first at flat index 7"
        );
        let many = CoreError::OutOfBounds { count: 3, first: 0 };
        assert_eq!(
            many.to_string(),
            "x has 3 values outside bounds; first at flat index 0"
        );
        let eps = CoreError::BadEps {
            what: "negative or NaN",
            count: 1,
            first: 2,
        };
        assert_eq!(
            eps.to_string(),
            "eps has 1 negative or NaN value; first at index 2"
        );
        let len = CoreError::Length {
            arg: "eps",
            expected: 1,
            got: 4,
        };
        assert_eq!(len.to_string(), "eps must hold 1 value; got 4");
    }
}
