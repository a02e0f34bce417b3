//! The one error type of the crate.
//!
//! Every fallible function returns [`Result<T>`]. An [`Error`] renders as a single line that names
//! what was wrong (the file, the argument) and why, so the command-line tool can print it as is.
//! The library never prints, never exits and never panics on bad input: it returns one of these.

#[allow(unused_imports)]
use crate::prelude::*;
use core::fmt;
#[cfg(feature = "std")]
use std::path::Path;

/// Shorthand for `core::result::Result<T, llama2::Error>`.
pub type Result<T> = core::result::Result<T, Error>;

/// Everything that can go wrong when loading or running a model.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened, read or written.
    #[cfg(feature = "std")]
    Io {
        /// The file's path as given.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A model checkpoint is malformed: bad magic, inconsistent header, wrong size.
    Checkpoint {
        /// The file's path, or `<memory>` for a checkpoint given as bytes.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A tokenizer file is malformed, or does not fit the model.
    Tokenizer {
        /// The file's path, or `<memory>` for a tokenizer given as bytes.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Memory for the run state (mostly the KV cache) could not be reserved.
    OutOfMemory {
        /// What the memory was for.
        what: String,
        /// How many bytes were asked for.
        bytes: u128,
    },
    /// An argument to an API call is out of range (a token id, a position, a sampling parameter).
    InvalidInput(String),
}

impl Error {
    #[cfg(feature = "std")]
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    pub(crate) fn checkpoint(name: &str, problem: impl Into<String>) -> Error {
        Error::Checkpoint {
            name: name.to_string(),
            problem: problem.into(),
        }
    }

    pub(crate) fn tokenizer(name: &str, problem: impl Into<String>) -> Error {
        Error::Tokenizer {
            name: name.to_string(),
            problem: problem.into(),
        }
    }

    pub(crate) fn input(problem: impl Into<String>) -> Error {
        Error::InvalidInput(problem.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "std")]
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Checkpoint { name, problem } => write!(f, "checkpoint {name}: {problem}"),
            Error::Tokenizer { name, problem } => write!(f, "tokenizer {name}: {problem}"),
            Error::OutOfMemory { what, bytes } => {
                write!(f, "cannot allocate {bytes} bytes for {what}")
            }
            Error::InvalidInput(problem) => f.write_str(problem),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            #[cfg(feature = "std")]
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
