//! keysafe's own header names as `HeaderName`s, made at compile time. A header map given a
//! `&str` name parses and checks it on every insert and lookup; given a `HeaderName` it only
//! hashes it. The hot routes set or read these on every request.

use http::HeaderName;

pub(crate) static DEPOSIT_VERSION: HeaderName =
    HeaderName::from_static(keysafe_proto::HEADER_DEPOSIT_VERSION);
pub(crate) static ENCODING: HeaderName = HeaderName::from_static(keysafe_proto::HEADER_ENCODING);
pub(crate) static ACL_SERIAL: HeaderName =
    HeaderName::from_static(keysafe_proto::HEADER_ACL_SERIAL);
pub(crate) static REQUEST_ID: HeaderName =
    HeaderName::from_static(keysafe_proto::HEADER_REQUEST_ID);
pub(crate) static TOKEN: HeaderName = HeaderName::from_static(keysafe_proto::HEADER_TOKEN);

#[cfg(test)]
mod tests {
    #[test]
    fn the_names_are_the_protocols() {
        for (name, text) in [
            (
                &super::DEPOSIT_VERSION,
                keysafe_proto::HEADER_DEPOSIT_VERSION,
            ),
            (&super::ENCODING, keysafe_proto::HEADER_ENCODING),
            (&super::ACL_SERIAL, keysafe_proto::HEADER_ACL_SERIAL),
            (&super::REQUEST_ID, keysafe_proto::HEADER_REQUEST_ID),
            (&super::TOKEN, keysafe_proto::HEADER_TOKEN),
        ] {
            assert_eq!(name.as_str(), text);
        }
    }
}
