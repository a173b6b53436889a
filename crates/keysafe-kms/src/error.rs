//! Errors as Hadoop's client expects them: a `RemoteException` JSON body whose `javaClassName`
//! the client re-creates by reflection, and the status code that drives its failover
//! (403 and 400 are final, 500 makes `LoadBalancingKMSClientProvider` try the next gateway).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The Java exception class a failure is reported as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JavaClass {
    /// `java.io.IOException` (500): missing key, existing key, storage failures.
    Io,
    /// `java.lang.IllegalArgumentException` (400): bad parameters.
    IllegalArgument,
    /// `java.lang.UnsupportedOperationException` (400).
    Unsupported,
    /// `org.apache.hadoop.security.authorize.AuthorizationException` (403): ACL denials, doAs.
    Authorization,
    /// `org.apache.hadoop.security.authentication.client.AuthenticationException` (403): bad token.
    Authentication,
}

impl JavaClass {
    pub fn java_class_name(self) -> &'static str {
        match self {
            JavaClass::Io => "java.io.IOException",
            JavaClass::IllegalArgument => "java.lang.IllegalArgumentException",
            JavaClass::Unsupported => "java.lang.UnsupportedOperationException",
            JavaClass::Authorization => {
                "org.apache.hadoop.security.authorize.AuthorizationException"
            }
            JavaClass::Authentication => {
                "org.apache.hadoop.security.authentication.client.AuthenticationException"
            }
        }
    }

    pub fn simple_name(self) -> &'static str {
        let n = self.java_class_name();
        n.rsplit('.').next().unwrap_or(n)
    }

    pub fn status(self) -> StatusCode {
        match self {
            JavaClass::Io => StatusCode::INTERNAL_SERVER_ERROR,
            JavaClass::IllegalArgument | JavaClass::Unsupported => StatusCode::BAD_REQUEST,
            JavaClass::Authorization | JavaClass::Authentication => StatusCode::FORBIDDEN,
        }
    }
}

/// A failure of a KMS operation. The message is shown to the Hadoop user: it never holds key
/// material or secrets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class:?}: {message}")]
pub struct KmsError {
    pub class: JavaClass,
    pub message: String,
    /// A status other than the class's own (404 for an unknown token on cancel).
    pub status_override: Option<StatusCode>,
}

impl KmsError {
    pub fn new(class: JavaClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            status_override: None,
        }
    }
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(JavaClass::Io, message)
    }
    pub fn illegal(message: impl Into<String>) -> Self {
        Self::new(JavaClass::IllegalArgument, message)
    }
    pub fn authz(message: impl Into<String>) -> Self {
        Self::new(JavaClass::Authorization, message)
    }
    pub fn authn(message: impl Into<String>) -> Self {
        Self::new(JavaClass::Authentication, message)
    }
    pub fn with_status(mut self, s: StatusCode) -> Self {
        self.status_override = Some(s);
        self
    }
    pub fn status(&self) -> StatusCode {
        self.status_override.unwrap_or(self.class.status())
    }
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self.class,
            JavaClass::Authorization | JavaClass::Authentication
        )
    }

    /// The JSON body Hadoop's `HttpExceptionUtils.validateResponse` parses.
    pub fn body(&self) -> serde_json::Value {
        // Only the first line of the message, as Hadoop does.
        let first = self.message.lines().next().unwrap_or("");
        serde_json::json!({
            "RemoteException": {
                "message": first,
                "exception": self.class.simple_name(),
                "javaClassName": self.class.java_class_name(),
            }
        })
    }
}

impl IntoResponse for KmsError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut resp = (self.status(), body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

pub type KmsResult<T> = Result<T, KmsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_exception_shape() {
        let e = KmsError::authz("User:bob not allowed to do 'GET_KEYS'\nsecond line");
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let b = e.body();
        assert_eq!(
            b["RemoteException"]["javaClassName"],
            "org.apache.hadoop.security.authorize.AuthorizationException"
        );
        assert_eq!(b["RemoteException"]["exception"], "AuthorizationException");
        assert_eq!(
            b["RemoteException"]["message"],
            "User:bob not allowed to do 'GET_KEYS'"
        );
        assert_eq!(
            KmsError::io("x").status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(KmsError::illegal("x").status(), StatusCode::BAD_REQUEST);
    }
}
