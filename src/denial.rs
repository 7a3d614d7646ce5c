//! The user-facing error: why a review is denied, in words that name the
//! annotation, generator or store at fault. Never carries a secret value.

use std::fmt;

/// A fixed, low-cardinality label for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An annotation could not be parsed or is inconsistent.
    Annotation,
    /// A generator's type or config is wrong, or it failed.
    Generator,
    /// The template failed to render or its output is not a key/value mapping.
    Template,
    /// A Secret data key is invalid, or the Secret would be too large.
    SecretKey,
    /// A typed Secret (tls, basic-auth, ...) would come out invalid.
    TypedSecret,
    /// Mirroring to an external store failed or is not allowed.
    Store,
    /// The review itself is malformed (not a Secret, no object, ...).
    Request,
    /// The review did not finish within its deadline.
    Deadline,
    /// A bug or an unexpected condition inside the webhook.
    Internal,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::Annotation,
        Reason::Generator,
        Reason::Template,
        Reason::SecretKey,
        Reason::TypedSecret,
        Reason::Store,
        Reason::Request,
        Reason::Deadline,
        Reason::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Annotation => "annotation",
            Reason::Generator => "generator",
            Reason::Template => "template",
            Reason::SecretKey => "secret_key",
            Reason::TypedSecret => "typed_secret",
            Reason::Store => "store",
            Reason::Request => "request",
            Reason::Deadline => "deadline",
            Reason::Internal => "internal",
        }
    }
}

/// Why a review was denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub message: String,
}

impl Denial {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// A problem in a named annotation.
    pub fn annotation(annotation: &str, problem: impl fmt::Display) -> Self {
        Self::new(
            Reason::Annotation,
            format!("annotation {annotation}: {problem}"),
        )
    }

    /// A problem with a named generator.
    pub fn generator(name: &str, type_name: &str, problem: impl fmt::Display) -> Self {
        Self::new(
            Reason::Generator,
            format!(
                "annotation {}: generator {name:?} ({type_name}): {problem}",
                crate::spec::ANN_GENERATORS
            ),
        )
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Denial {}
